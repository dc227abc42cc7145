"""The Cloud API providers end to end: the daemon on a real socket, the fake
Graph API (or 360dialog) on another, webhooks and sends over real HTTP.

Every test runs for ``meta_cloud`` and for ``dialog360``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.helpers import AUTH, TOKEN
from wahub.core.clock import Clock
from wahub.testing import RunningDaemon, build_config, plugin_manager, running_daemon, wait_until
from wahub.testing.fake_graph import FakeGraphServer

USER = "16505551234"
BSUID = "US.13491208655302741918"
PLATFORMS = ["meta_cloud", "dialog360"]


@dataclass
class Cloud:
    daemon: RunningDaemon
    server: FakeGraphServer
    http: aiohttp.ClientSession

    @property
    def platform(self) -> str:
        return self.server.platform

    async def send(self, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(f"{self.daemon.url}/api/v1/messages", json=body, headers=AUTH) as response:
            answer: dict[str, Any] = await response.json()
            assert response.status == 202, answer
            return answer

    async def message(self, message_id: int) -> dict[str, Any]:
        async with self.http.get(f"{self.daemon.url}/api/v1/messages/{message_id}", headers=AUTH) as response:
            assert response.status == 200
            found: dict[str, Any] = await response.json()
            return found

    async def status_becomes(self, message_id: int, *statuses: str) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            found = await self.message(message_id)
            return found if found["status"] in statuses else None

        result: dict[str, Any] = await wait_until(reached, within=15)
        return result

    async def inbound(self, message: dict[str, Any], **who: Any) -> dict[str, Any]:
        """A user's message through the webhook; returns the stored row once processed."""
        message = {"id": f"wamid.in.{time.monotonic_ns()}", **message}
        assert await self.server.send_inbound(message, **who) == 200
        storage = self.daemon.hub.storage

        async def stored() -> dict[str, Any] | None:
            depth, _ = await storage.inbox_depth()
            if depth:
                return None
            async with storage.db.connect() as conn:
                from wahub.core.storage.schema import messages

                row = (
                    await conn.execute(messages.select().where(messages.c.provider_message_id == message["id"]))
                ).first()
            return dict(row._mapping) if row else None

        result: dict[str, Any] = await wait_until(stored, within=15)
        return result


def _raw_config(server: FakeGraphServer, database: str, **entry: Any) -> dict[str, Any]:
    return {
        "wahub": {"api_tokens": [TOKEN], "database": database},
        "providers": [server.provider_entry("main", pair_limit=None, **entry)],
    }


async def templates_synced(daemon: RunningDaemon, name: str = "main") -> None:
    """Wait for the template sync a daemon runs at start-up (shown on /readyz)."""

    async def synced() -> bool:
        return "templates_synced_at" in daemon.hub.providers[name].account

    await wait_until(synced, within=15)


async def _cloud(
    platform: str,
    database: str,
    tmp_path: Path,
    *,
    sections: dict[str, Any] | None = None,
    templates: tuple[dict[str, Any], ...] = (),
    clock: Clock | None = None,
    **entry: Any,
) -> AsyncIterator[Cloud]:
    """A daemon whose provider ``main`` talks to a fake API, once its start-up
    template sync is done; ``sections`` adds configuration sections, ``templates``
    are the account's templates from the start, ``clock`` the policy's clock."""
    server = FakeGraphServer(platform=platform)
    for template in templates:
        server.add_template(template)
    await server.start()
    raw = {**_raw_config(server, database, **entry), **(sections or {})}
    raw["wahub"]["media"] = {"directory": str(tmp_path / "media")}
    pm = plugin_manager()
    try:
        async with running_daemon(build_config(raw, database=database, pm=pm), pm=pm, clock=clock) as daemon:
            server.attach(daemon.url, "main")
            await templates_synced(daemon)
            async with aiohttp.ClientSession() as http:
                yield Cloud(daemon, server, http)
    finally:
        await server.close()


@pytest.fixture(params=PLATFORMS)
async def cloud(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> AsyncIterator[Cloud]:
    async for running in _cloud(request.param, database_url, tmp_path):
        yield running


# -- webhooks ----------------------------------------------------------------


async def test_meta_verification_handshake_echoes_the_challenge_only_for_the_right_token(
    sqlite_url: str, tmp_path: Path
) -> None:
    async for cloud in _cloud("meta_cloud", sqlite_url, tmp_path):
        url = f"{cloud.daemon.url}/webhooks/main"
        good = {"hub.mode": "subscribe", "hub.verify_token": cloud.server.verify_token, "hub.challenge": "1158201444"}
        async with cloud.http.get(url, params=good) as response:
            assert response.status == 200 and await response.text() == "1158201444"
        for wrong in ({"hub.verify_token": "guess"}, {"hub.mode": "unsubscribe"}):
            async with cloud.http.get(url, params={**good, **wrong}) as response:
                assert response.status == 403


async def test_a_forged_or_missing_signature_gets_401_and_stores_nothing(cloud: Cloud) -> None:
    envelope = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": cloud.server.waba_id,
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                            "messages": [
                                {
                                    "from": USER,
                                    "id": "wamid.forged",
                                    "timestamp": "1764000000",
                                    "type": "text",
                                    "text": {"body": "forged"},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    body = json.dumps(envelope).encode()
    forged = (
        {"X-Hub-Signature-256": "sha256=" + "0" * 64}
        if cloud.platform == "meta_cloud"
        else {"X-Wahub-Webhook-Secret": "not-the-secret-at-all"}
    )
    for headers in (forged, {}):
        async with cloud.http.post(f"{cloud.daemon.url}/webhooks/main", data=body, headers=headers) as response:
            assert response.status == 401
    storage = cloud.daemon.hub.storage
    assert await storage.inbox_depth() == (0, 0.0)
    assert await storage.messages.history("main", USER) == []


async def test_inbound_messages_are_stored_with_their_contact_keyed_by_bsuid(cloud: Cloud) -> None:
    row = await cloud.inbound({"type": "text", "text": {"body": "hello"}}, user_id=BSUID)

    assert row["address"] == BSUID and row["body"]["text"]["body"] == "hello"
    async with cloud.daemon.hub.storage.db.connect() as conn:
        from wahub.core.storage.schema import contact_identities

        kinds = {
            (r.kind, r.value)
            for r in await conn.execute(
                contact_identities.select().where(contact_identities.c.contact_id == row["contact_id"])
            )
        }
    assert {("bsuid", BSUID), ("wa_id", USER)} <= kinds


async def test_one_webhook_url_serves_several_numbers(sqlite_url: str) -> None:
    first = FakeGraphServer()
    second = FakeGraphServer(phone_number_id="106540352242923", display_phone_number="15550783882")
    await first.start()
    await second.start()
    raw = {
        "wahub": {"api_tokens": [TOKEN]},
        "providers": [first.provider_entry("main"), second.provider_entry("second")],
    }
    pm = plugin_manager()
    try:
        async with running_daemon(build_config(raw, database=sqlite_url, pm=pm), pm=pm) as daemon:
            # Both numbers' webhooks arrive at the app's one callback URL, signed with its secret.
            first.attach(daemon.url, "main")
            second.attach(daemon.url, "main")
            assert await first.send_inbound({"id": "wamid.first", "type": "text", "text": {"body": "one"}}) == 200
            assert await second.send_inbound({"id": "wamid.second", "type": "text", "text": {"body": "two"}}) == 200
            history = daemon.hub.storage.messages.history

            async def both() -> bool:
                return bool(await history("main", USER)) and bool(await history("second", USER))

            await wait_until(both)
            assert [m["provider_message_id"] for m in await history("second", USER)] == ["wamid.second"]
            assert [m["provider_message_id"] for m in await history("main", USER)] == ["wamid.first"]
    finally:
        await first.close()
        await second.close()


# -- sending -----------------------------------------------------------------


def _outbound(image_id: str, context_id: str) -> list[dict[str, Any]]:
    """One API body per canonical type (reference 2.2-2.4)."""
    link = "https://example.com/files/a"
    return [
        {"type": "text", "text": {"body": "See https://example.com", "preview_url": True}},
        {"type": "text", "text": {"body": "A reply"}, "context": {"message_id": context_id}},
        {"type": "image", "image": {"id": image_id, "caption": "Uploaded from a local file"}},
        {"type": "image", "image": {"link": f"{link}.jpg", "caption": "By link"}},
        {"type": "video", "video": {"link": f"{link}.mp4", "caption": "Clip"}},
        {"type": "audio", "audio": {"link": f"{link}.ogg"}},
        {"type": "document", "document": {"link": f"{link}.pdf", "filename": "invoice.pdf", "caption": "Invoice"}},
        {"type": "sticker", "sticker": {"link": f"{link}.webp"}},
        {"type": "location", "location": {"latitude": 37.75, "longitude": -122.42, "name": "HQ", "address": "1 Way"}},
        {
            "type": "contacts",
            "contacts": [
                {
                    "name": {"formatted_name": "Jo Smith", "first_name": "Jo", "last_name": "Smith"},
                    "phones": [{"phone": "+1 650 555 1234", "type": "WORK", "wa_id": "16505551234"}],
                    "emails": [{"email": "jo@example.com", "type": "WORK"}],
                }
            ],
        },
        {"type": "reaction", "reaction": {"message_id": context_id, "emoji": "\N{THUMBS UP SIGN}"}},
        {
            "type": "interactive",
            "interactive": {
                "type": "button",
                "header": {"type": "image", "image": {"link": f"{link}.jpg"}},
                "body": {"text": "Confirm the booking?"},
                "footer": {"text": "Reply to choose"},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                        {"type": "reply", "reply": {"id": "no", "title": "No"}},
                    ]
                },
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "list",
                "header": {"type": "text", "text": "Menu"},
                "body": {"text": "Pick a size"},
                "action": {
                    "button": "Choose",
                    "sections": [
                        {"title": "Sizes", "rows": [{"id": "s", "title": "Small", "description": "250 ml"}]},
                        {"title": "More", "rows": [{"id": "l", "title": "Large"}]},
                    ],
                },
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "cta_url",
                "body": {"text": "Track your parcel"},
                "action": {
                    "name": "cta_url",
                    "parameters": {"display_text": "Track", "url": "https://example.com/t/42"},
                },
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "flow",
                "body": {"text": "Book a table"},
                "action": {
                    "name": "flow",
                    "parameters": {
                        "flow_message_version": "3",
                        "flow_id": "1234567890",
                        "flow_cta": "Book",
                        "flow_token": "token-42",
                        "flow_action": "navigate",
                        "flow_action_payload": {"screen": "BOOKING", "data": {"party": 2}},
                    },
                },
            },
        },
        {
            "type": "template",
            "template": {
                "name": "order_update",
                "language": {"code": "en_US"},
                "components": [
                    {"type": "header", "parameters": [{"type": "image", "image": {"link": f"{link}.jpg"}}]},
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": "Ana"},
                            {
                                "type": "currency",
                                "currency": {"fallback_value": "$100.99", "code": "USD", "amount_1000": 100990},
                            },
                            {"type": "date_time", "date_time": {"fallback_value": "February 25, 1977"}},
                        ],
                    },
                    {
                        "type": "button",
                        "sub_type": "quick_reply",
                        "index": "0",
                        "parameters": [{"type": "payload", "payload": "CANCEL_42"}],
                    },
                    {"type": "button", "sub_type": "url", "index": "1", "parameters": [{"type": "text", "text": "42"}]},
                    {
                        "type": "button",
                        "sub_type": "copy_code",
                        "index": "2",
                        "parameters": [{"type": "coupon_code", "coupon_code": "SAVE10"}],
                    },
                ],
            },
        },
        {
            "type": "template",
            "template": {
                "name": "order_named",
                "language": {"code": "en_US"},
                "components": [
                    {"type": "body", "parameters": [{"type": "text", "parameter_name": "order_id", "text": "42"}]}
                ],
            },
        },
    ]


async def _approve(cloud: Cloud, *names: str) -> None:
    from wahub.core.storage.policy import Template

    for name in names:
        await cloud.daemon.hub.storage.policy.upsert_template("main", Template(name, "en_US", "UTILITY", "APPROVED"))


async def _upload(cloud: Cloud, data: bytes, mime_type: str, filename: str) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type=mime_type)
    async with cloud.http.post(f"{cloud.daemon.url}/api/v1/media", data=form, headers=AUTH) as response:
        answer: dict[str, Any] = await response.json()
        assert response.status == 201, answer
        return answer


async def test_every_outbound_type_reaches_the_api_valid_against_metas_schema(cloud: Cloud) -> None:
    inbound = await cloud.inbound({"type": "text", "text": {"body": "hi"}})  # opens the service window
    await _approve(cloud, "order_update", "order_named")
    photo = b"\xff\xd8\xff\xe0 a small jpeg"
    uploaded = await _upload(cloud, photo, "image/jpeg", "photo.jpg")
    bodies = _outbound(uploaded["id"], inbound["provider_message_id"])

    ids = [(await cloud.send({"to": USER, **body}))["id"] for body in bodies]
    for message_id in ids:
        await cloud.status_becomes(message_id, "delivered")

    assert cloud.server.schema_errors == []
    assert len(cloud.server.messages) == len(bodies)
    for body, sent in zip(bodies, cloud.server.messages, strict=True):
        assert sent["messaging_product"] == "whatsapp" and sent["to"] == USER and sent["type"] == body["type"]
        if body["type"] != "image" or "id" not in body["image"]:
            assert sent[body["type"]] == body[body["type"]]
    # The local file was uploaded once (multipart) and sent by the provider's media id.
    media_id = cloud.server.messages[2]["image"]["id"]
    assert cloud.server.media[media_id].data == photo
    assert cloud.server.messages[1]["context"] == {"message_id": inbound["provider_message_id"]}


async def test_a_local_file_is_uploaded_once_and_its_media_id_reused(cloud: Cloud) -> None:
    await cloud.inbound({"type": "text", "text": {"body": "hi"}})
    uploaded = await _upload(cloud, b"%PDF-1.4 tiny", "application/pdf", "terms.pdf")
    body = {"to": USER, "type": "document", "document": {"id": uploaded["id"], "filename": "terms.pdf"}}
    first, second = await cloud.send(body), await cloud.send(body)
    await cloud.status_becomes(first["id"], "delivered")
    await cloud.status_becomes(second["id"], "delivered")
    assert len(cloud.server.media) == 1
    assert cloud.server.messages[0]["document"]["id"] == cloud.server.messages[1]["document"]["id"]


async def test_read_receipts_typing_indicators_and_bsuid_recipients(cloud: Cloud) -> None:
    inbound = await cloud.inbound({"type": "text", "text": {"body": "hi"}}, user_id=BSUID)
    wamid = inbound["provider_message_id"]
    receipt = await cloud.send({"to": BSUID, "status": "read", "message_id": wamid})
    typing = await cloud.send(
        {"to": BSUID, "status": "read", "message_id": wamid, "typing_indicator": {"type": "text"}}
    )
    reply = await cloud.send({"to": BSUID, "type": "text", "text": {"body": "Looking into it"}})
    for message_id in (receipt["id"], typing["id"]):
        await cloud.status_becomes(message_id, "sent")
    await cloud.status_becomes(reply["id"], "delivered")

    calls = [r.json for r in cloud.server.requests if r.method == "POST" and r.path.endswith("messages")]
    assert {"messaging_product": "whatsapp", "status": "read", "message_id": wamid} in calls
    assert {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": wamid,
        "typing_indicator": {"type": "text"},
    } in calls
    sent = cloud.server.messages[-1]
    assert sent["recipient"] == BSUID and "to" not in sent
    assert cloud.server.schema_errors == []


@pytest.mark.parametrize(
    ("code", "http_status", "outcome"),
    [(131026, 400, "failed"), (132001, 404, "failed"), (131047, 400, "failed")],
)
async def test_api_errors_fail_the_message_with_metas_code_and_details(
    cloud: Cloud, code: int, http_status: int, outcome: str
) -> None:
    await cloud.inbound({"type": "text", "text": {"body": "hi"}})
    cloud.server.fail_next(code, http_status=http_status, details=f"details of {code}")
    sent = await cloud.send({"to": USER, "type": "text", "text": {"body": "x"}})
    failed = await cloud.status_becomes(sent["id"], outcome)
    assert failed["error"]["code"] == str(code)
    assert f"details of {code}" in failed["error"]["message"]


async def test_refused_credentials_pause_the_provider(cloud: Cloud) -> None:
    await cloud.inbound({"type": "text", "text": {"body": "hi"}})
    cloud.server.fail_next(190, http_status=401)
    await cloud.send({"to": USER, "type": "text", "text": {"body": "x"}})

    async def paused() -> dict[str, Any] | None:
        async with cloud.http.get(f"{cloud.daemon.url}/readyz") as response:
            body: dict[str, Any] = await response.json()
            return body if response.status == 503 else None

    body = await wait_until(paused)
    assert "main" in body["paused"]


async def test_a_late_failed_status_keeps_the_code_and_title(cloud: Cloud) -> None:
    await cloud.inbound({"type": "text", "text": {"body": "hi"}})
    cloud.server.fail_later(131047, "Re-engagement message")
    sent = await cloud.send({"to": USER, "type": "text", "text": {"body": "x"}})
    failed = await cloud.status_becomes(sent["id"], "failed")
    assert failed["error"] == {"code": "131047", "message": "Re-engagement message"}


# -- media -------------------------------------------------------------------


async def test_an_inbound_image_is_downloaded_checked_and_served_behind_the_token(cloud: Cloud) -> None:
    photo = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8192  # 2 MB: many chunks
    media_id = cloud.server.add_media(photo, "image/jpeg")
    announced = base64.b64encode(hashlib.sha256(photo).digest()).decode()  # webhooks say base64
    row = await cloud.inbound(
        {
            "type": "image",
            "image": {"id": media_id, "mime_type": "image/jpeg", "sha256": announced, "caption": "Receipt"},
        }
    )

    kept = row["body"]["image"]["wahub_media"]
    assert kept["sha256"] == hashlib.sha256(photo).hexdigest() and kept["size"] == len(photo)
    downloads = [r for r in cloud.server.requests if "attachments" in r.path]
    assert downloads and all(_credential(cloud, r.headers) for r in downloads)
    async with cloud.http.get(f"{cloud.daemon.url}{kept['url']}", headers=AUTH) as response:
        assert response.status == 200 and await response.read() == photo
        assert response.headers["Content-Type"] == "image/jpeg"
    async with cloud.http.get(f"{cloud.daemon.url}{kept['url']}") as response:
        assert response.status == 401


def _credential(cloud: Cloud, headers: Any) -> bool:
    if cloud.platform == "meta_cloud":
        return bool(headers.get("Authorization") == f"Bearer {cloud.server.access_token}")
    return bool(headers.get("D360-API-KEY") == cloud.server.api_key)


async def test_a_damaged_or_oversized_inbound_file_is_refused_but_the_message_kept(cloud: Cloud) -> None:
    media_id = cloud.server.add_media(b"real bytes", "image/jpeg")
    row = await cloud.inbound(
        {"type": "image", "image": {"id": media_id, "mime_type": "image/jpeg", "sha256": "0" * 64}}
    )
    assert "sha256" in row["body"]["image"]["wahub_media"]["error"]

    big = cloud.server.add_media(b"x" * (5 * 1024 * 1024 + 1), "image/png")
    row = await cloud.inbound({"type": "image", "image": {"id": big, "mime_type": "image/png"}})
    assert "over the limit" in row["body"]["image"]["wahub_media"]["error"]


async def test_a_download_stops_at_the_limit_when_the_announced_size_is_wrong(cloud: Cloud, tmp_path: Path) -> None:
    big = cloud.server.add_media(b"x" * (12 * 1024 * 1024), "image/png")
    cloud.server.media[big].size = 1000  # the API's file_size says 1000 bytes; the download is 12 MB
    row = await cloud.inbound({"type": "image", "image": {"id": big, "mime_type": "image/png"}})
    refused = "image of 12582912 bytes is over the limit of 5242880 bytes"  # by the download's Content-Length
    assert row["body"]["image"]["wahub_media"] == {"error": refused}

    cloud.server.chunked_downloads = True  # no Content-Length either: reading stops at the limit
    row = await cloud.inbound({"type": "image", "image": {"id": big, "mime_type": "image/png"}})
    assert row["body"]["image"]["wahub_media"] == {"error": "image is over the limit of 5242880 bytes"}
    assert [path for path in (tmp_path / "media").rglob("*") if path.is_file()] == []  # no partial file left


# -- templates, account and profile ----------------------------------------------


def _template(index: int) -> dict[str, Any]:
    return {
        "name": f"notice_{index:03d}",
        "language": "en_US",
        "status": "APPROVED",
        "category": "UTILITY",
        "parameter_format": "POSITIONAL",
        "components": [{"type": "BODY", "text": f"Notice {index}: {{{{1}}}}"}],
        "quality_score": {"score": "GREEN"},
    }


@asynccontextmanager
async def graph_and_config(
    tmp_path: Path, database: str, platform: str = "meta_cloud", **entry: Any
) -> AsyncIterator[tuple[FakeGraphServer, Path]]:
    """A fake API, and a configuration file whose provider ``main`` talks to it (for the CLI)."""
    server = FakeGraphServer(platform=platform)
    await server.start()
    try:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(_raw_config(server, database, **entry)))
        yield server, config
    finally:
        await server.close()


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wahub", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_templates_sync_fills_the_table_and_status_webhooks_keep_it_current(
    platform: str, sqlite_url: str, tmp_path: Path
) -> None:
    server = FakeGraphServer(platform=platform)
    await server.start()
    try:
        for index in range(130):  # more than one page
            server.add_template(_template(index))
        config = tmp_path / "config.yaml"
        raw = _raw_config(server, sqlite_url)
        config.write_text(yaml.safe_dump(raw))

        code, out, err = await _cli("templates", "sync", "-c", str(config))
        assert code == 0, err
        assert '"added": 130' in out
        pages = [r for r in server.requests if r.method == "GET" and "templates" in r.path]
        assert len(pages) >= 2

        pm = plugin_manager()
        async with running_daemon(build_config(raw, database=sqlite_url, pm=pm), pm=pm) as daemon:
            server.attach(daemon.url, "main")
            await templates_synced(daemon)
            policy = daemon.hub.storage.policy
            found, _ = await policy.template("main", "notice_007", "en_US")
            assert found is not None and found.status == "APPROVED"
            [row] = [t for t in await policy.templates("main") if t["name"] == "notice_007"]
            assert row["quality"] == "GREEN" and row["components"][0]["text"] == "Notice 7: {{1}}"
            quality = {
                "previous_quality_score": "GREEN",
                "new_quality_score": "YELLOW",
                "message_template_id": 7007,
                "message_template_name": "notice_007",
                "message_template_language": "en_US",
            }
            assert await server.deliver(quality, field="message_template_quality_update") == 200
            update = {
                "event": "PAUSED",
                "message_template_id": 7007,
                "message_template_name": "notice_007",
                "message_template_language": "en_US",
                "reason": "NONE",
            }
            assert await server.deliver(update, field="message_template_status_update") == 200

            async def paused() -> bool:
                rows = [t for t in await policy.templates("main") if t["name"] == "notice_007"]
                return bool(rows) and (rows[0]["status"], rows[0]["quality"]) == ("PAUSED", "YELLOW")

            await wait_until(paused)
    finally:
        await server.close()


async def test_templates_create_and_delete_through_the_cli(sqlite_url: str, tmp_path: Path) -> None:
    async with graph_and_config(tmp_path, sqlite_url) as (server, config):
        definition = tmp_path / "template.json"
        definition.write_text(
            json.dumps(
                {
                    "name": "order_named",
                    "language": "en_US",
                    "category": "UTILITY",
                    "parameter_format": "named",
                    "components": [
                        {
                            "type": "BODY",
                            "text": "Order {{order_id}} shipped",
                            "example": {"body_text_named_params": [{"param_name": "order_id", "example": "42"}]},
                        }
                    ],
                }
            )
        )
        code, out, err = await _cli("templates", "create", str(definition), "-c", str(config))
        assert code == 0, err
        assert '"PENDING"' in out
        assert [t["name"] for t in server.templates] == ["order_named"]
        code, out, _ = await _cli("templates", "list", "-c", str(config))
        assert "order_named\ten_US\tUTILITY\tPENDING" in out
        template_id = server.templates[0]["id"]
        assert out.rstrip().endswith(f"\t{template_id}")
        definition.write_text(
            json.dumps({"components": [{"type": "BODY", "text": "Order {{order_id}} is on its way"}]})
        )
        code, out, err = await _cli("templates", "edit", template_id, str(definition), "-c", str(config))
        assert code == 0, err
        assert server.templates[0]["components"][0]["text"] == "Order {{order_id}} is on its way"
        code, _, err = await _cli("templates", "delete", "order_named", "-c", str(config))
        assert code == 0, err
        assert server.templates == []


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_profile_apply_sends_the_configured_profile(platform: str, sqlite_url: str, tmp_path: Path) -> None:
    profile = {
        "about": "Fresh bread daily",
        "address": "1 Baker Street",
        "description": "Neighbourhood bakery",
        "email": "hello@example.com",
        "websites": ["https://example.com"],
        "vertical": "RESTAURANT",
    }
    async with graph_and_config(tmp_path, sqlite_url, platform=platform, profile=profile) as (server, config):
        code, out, err = await _cli("profile", "apply", "-c", str(config))
        assert code == 0, err
        assert {key: server.profile.get(key) for key in profile} == profile
        code, out, _ = await _cli("profile", "show", "-c", str(config))
        assert "Fresh bread daily" in out
        code, out, _ = await _cli("profile", "apply", "-c", str(config))
        assert out.strip() == "main: {}"  # nothing left to change


async def test_media_headers_and_the_profile_picture_go_through_resumable_uploads(
    sqlite_url: str, tmp_path: Path
) -> None:
    picture, header = tmp_path / "logo.png", tmp_path / "header.jpg"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n logo")
    header.write_bytes(b"\xff\xd8\xff\xe0 header")
    async with graph_and_config(tmp_path, sqlite_url, profile={"picture": str(picture)}) as (server, config):
        definition = tmp_path / "promo.json"
        components = [
            {"type": "HEADER", "format": "IMAGE", "example": {"header_file": "header.jpg"}},
            {"type": "BODY", "text": "Fresh bread is in"},
        ]
        definition.write_text(
            json.dumps({"name": "promo", "language": "en", "category": "MARKETING", "components": components})
        )
        code, _, err = await _cli("templates", "create", str(definition), "-c", str(config))
        assert code == 0, err
        [handle] = server.templates[0]["components"][0]["example"]["header_handle"]
        assert server.handles[handle].data == header.read_bytes()
        assert server.handles[handle].mime_type == "image/jpeg"

        code, out, err = await _cli("profile", "apply", "-c", str(config))
        assert code == 0, err
        assert str(picture) in out and server.profile["profile_picture_url"].startswith("https://")
        assert [item.data for item in server.handles.values()][-1] == picture.read_bytes()

        # Without the app id there is nowhere to upload to: said plainly.
        raw = _raw_config(server, sqlite_url, profile={"picture": "x.png"})
        del raw["providers"][0]["app_id"]
        config.write_text(yaml.safe_dump(raw))
        code, _, err = await _cli("profile", "apply", "-c", str(config))
        assert code == 1 and "set app_id in provider 'main'" in err


async def test_quality_and_messaging_limit_show_on_readyz_and_metrics(cloud: Cloud) -> None:
    if cloud.platform == "dialog360":
        update = {"display_phone_number": "15550783881", "event": "UPGRADE", "current_limit": "TIER_10K"}
        assert await cloud.server.deliver(update, field="phone_number_quality_update") == 200
        expected = {"messaging_limit": 10000, "messaging_limit_raw": "TIER_10K", "quality_event": "UPGRADE"}
        limit = "10000.0"
    else:
        expected = {
            "quality": "high",
            "quality_raw": "GREEN",
            "messaging_limit": 1000,
            "messaging_limit_raw": "TIER_1K",
        }
        limit = "1000.0"

    async def shown() -> dict[str, Any] | None:
        async with cloud.http.get(f"{cloud.daemon.url}/readyz") as response:
            body: dict[str, Any] = await response.json()
        account = body.get("accounts", {}).get("main", {})
        return account if expected.items() <= account.items() else None

    await wait_until(shown)
    async with cloud.http.get(f"{cloud.daemon.url}/metrics") as response:
        text = await response.text()
    assert f'wahub_provider_messaging_limit{{provider="main"}} {limit}' in text
    if cloud.platform == "meta_cloud":
        assert 'wahub_provider_quality{provider="main",rating="high"} 1.0' in text
        assert 'wahub_provider_quality{provider="main",rating="low"} 0.0' in text


async def test_dialog360_registers_its_webhook_with_the_secret_header(sqlite_url: str, tmp_path: Path) -> None:
    async with graph_and_config(tmp_path, sqlite_url, platform="dialog360") as (server, config):
        code, _, err = await _cli("webhook", "register", "https://hub.example.com/webhooks/main", "-c", str(config))
        assert code == 0, err
        registered = [r.json for r in server.requests if r.path == "/v1/configs/webhook" and r.method == "POST"]
        assert registered == [
            {
                "url": "https://hub.example.com/webhooks/main",
                "headers": {"X-Wahub-Webhook-Secret": server.webhook_secret},
            }
        ]


# -- policy errors teach the send policy ---------------------------------------


async def _post(cloud: Cloud, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with cloud.http.post(f"{cloud.daemon.url}/api/v1/messages", json=body, headers=AUTH) as response:
        return response.status, await response.json()


async def test_a_marketing_opt_out_refusal_enters_the_consent_ledger(cloud: Cloud) -> None:
    from wahub.core.storage.policy import Template

    policy = cloud.daemon.hub.storage.policy
    await policy.upsert_template("main", Template("weekly_offers", "en_US", "MARKETING", "APPROVED"))
    consent = f"{cloud.daemon.url}/api/v1/contacts/main/{USER}/consent"
    async with cloud.http.post(
        consent, json={"action": "opt_in", "scope": "marketing", "evidence": {"form": "signup"}}, headers=AUTH
    ) as response:
        assert response.status == 200
    offer = {"to": USER, "type": "template", "template": {"name": "weekly_offers", "language": {"code": "en_US"}}}
    cloud.server.fail_next(131050, details="user stopped marketing messages")
    failed = await cloud.status_becomes((await cloud.send(offer))["id"], "failed")
    assert failed["error"]["code"] == "131050"

    ledger = await policy.ledger("main", USER)
    assert [(e["action"], e["scope"], e["source"]) for e in ledger][-1] == ("opt_out", "marketing", "provider_error")
    status, body = await _post(cloud, offer)
    assert status == 422 and body["error"]["code"] == "opt_in_required"


async def test_a_paused_template_refusal_marks_the_template_paused(cloud: Cloud) -> None:
    await _approve(cloud, "order_update")
    update = {"to": USER, "type": "template", "template": {"name": "order_update", "language": {"code": "en_US"}}}
    cloud.server.fail_later(132015, "Template is paused")
    failed = await cloud.status_becomes((await cloud.send(update))["id"], "failed")
    assert failed["error"]["code"] == "132015"

    async def paused() -> bool:
        template, _ = await cloud.daemon.hub.storage.policy.template("main", "order_update", "en_US")
        return template is not None and template.status == "PAUSED"

    # A failed status that overtook the API's answer is learnt just after the failure is recorded.
    await wait_until(paused)
    status, body = await _post(cloud, update)
    assert status == 422 and body["error"]["code"] == "template_not_approved"


# -- account operations on a running daemon ---------------------------------------


async def test_a_running_daemon_syncs_templates_and_applies_the_profile_over_the_api(
    cloud: Cloud, tmp_path: Path
) -> None:
    for index in range(3):
        cloud.server.add_template(_template(index))
    base = f"{cloud.daemon.url}/api/v1/providers/main"
    async with cloud.http.post(f"{base}/templates/sync") as response:
        assert response.status == 401  # the REST API's token is needed
    async with cloud.http.post(f"{base}/templates/sync", headers=AUTH) as response:
        assert response.status == 200 and await response.json() == {"added": 3, "updated": 0, "removed": 0}
    cloud.server.templates.pop(0)
    async with cloud.http.post(f"{base}/templates/sync", headers=AUTH) as response:
        assert await response.json() == {"added": 0, "updated": 2, "removed": 1}
    async with cloud.http.get(f"{base}/templates", headers=AUTH) as response:
        listed = (await response.json())["templates"]
    assert [(t["name"], t["status"], t["quality"]) for t in listed] == [
        ("notice_001", "APPROVED", "GREEN"),
        ("notice_002", "APPROVED", "GREEN"),
    ]
    # The same sync runs on its own every template_sync_hours (6 by default).
    from wahub.plugins.providers.cloud import operations as cloud_operations

    [job] = cloud_operations.scheduled_jobs(cloud.daemon.hub)
    assert (job.id, job.trigger, job.trigger_args) == ("wahub.templates_sync.main", "interval", {"hours": 6.0})
    cloud.server.add_template(_template(9))
    await job.func(cloud.daemon.hub)
    assert [t["name"] for t in await cloud.daemon.hub.storage.policy.templates("main")][-1] == "notice_009"
    async with cloud.http.post(f"{base}/profile/apply", headers=AUTH) as response:
        assert response.status == 200 and await response.json() == {}  # no profile: block
    async with cloud.http.post(f"{cloud.daemon.url}/api/v1/providers/nope/templates/sync", headers=AUTH) as response:
        assert response.status == 404

    # The CLI cannot open the SQLite file the daemon holds, and says what to do instead.
    if cloud.daemon.hub.storage.is_sqlite:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(_raw_config(cloud.server, cloud.daemon.hub.config["wahub"]["database"])))
        code, _, err = await _cli("templates", "sync", "-c", str(config))
        assert code == 69 and "POST /api/v1/providers/<name>/templates/sync" in err


async def test_media_uploads_are_checked_and_unknown_media_is_404(cloud: Cloud, tmp_path: Path) -> None:
    url = f"{cloud.daemon.url}/api/v1/media"
    form = aiohttp.FormData()
    form.add_field("file", b"GIF89a", filename="a.gif", content_type="image/gif")
    async with cloud.http.post(url, data=form, headers=AUTH) as response:
        assert response.status == 422
        assert "image of type 'image/gif' is not accepted" in (await response.json())["error"]["message"]
    form = aiohttp.FormData()
    big = io.BytesIO(b"\x89PNG" + b"x" * (6 * 1024 * 1024))
    form.add_field("file", big, filename="big.png", content_type="image/png")
    async with cloud.http.post(url, data=form, headers=AUTH) as response:
        assert response.status == 413
        assert (await response.json())["error"] == {
            "code": "media_refused",
            "message": "image is over the limit of 5242880 bytes",
        }
    form = aiohttp.FormData()
    for name in ("one.txt", "two.txt"):
        form.add_field("file", b"text", filename=name, content_type="text/plain")
    async with cloud.http.post(url, data=form, headers=AUTH) as response:
        assert response.status == 400 and "one file per upload" in (await response.json())["error"]["message"]
    assert [path for path in (tmp_path / "media").rglob("*") if path.is_file()] == []  # nothing half kept
    async with cloud.http.post(f"{cloud.daemon.url}/api/v1/media", json={}, headers=AUTH) as response:
        assert response.status == 400
    async with cloud.http.get(f"{cloud.daemon.url}/api/v1/media/0123", headers=AUTH) as response:
        assert response.status == 404


async def test_media_uploads_pass_the_body_limit_of_other_routes(cloud: Cloud) -> None:
    contents = b"%PDF-1.4 " + os.urandom(6 * 1024 * 1024)  # over the 4 MB body limit, under 100 MB
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(contents), filename="manual.pdf", content_type="application/pdf")
    async with cloud.http.post(f"{cloud.daemon.url}/api/v1/media", data=form, headers=AUTH) as response:
        answer = await response.json()
        assert response.status == 201, answer
    assert (answer["size"], answer["sha256"]) == (len(contents), hashlib.sha256(contents).hexdigest())
    async with cloud.http.get(f"{cloud.daemon.url}{answer['url']}", headers=AUTH) as response:
        assert await response.read() == contents

    text = json.dumps({"to": USER, "type": "text", "text": {"body": "x" * (5 * 1024 * 1024)}}).encode()
    headers = {**AUTH, "Content-Type": "application/json"}
    async with cloud.http.post(
        f"{cloud.daemon.url}/api/v1/messages", data=io.BytesIO(text), headers=headers
    ) as response:
        assert response.status == 413  # other routes keep the limit
    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=zzz"}
    async with cloud.http.post(f"{cloud.daemon.url}/api/v1/media", data=b"no parts here", headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_upload"


async def test_dialog360_has_no_template_edit(sqlite_url: str, tmp_path: Path) -> None:
    async with graph_and_config(tmp_path, sqlite_url, platform="dialog360") as (_server, config):
        definition = tmp_path / "edit.json"
        definition.write_text(json.dumps({"category": "UTILITY"}))
        code, _, err = await _cli("templates", "edit", "1", str(definition), "-c", str(config))
        assert code == 1 and "360dialog's API has no template edit" in err


# Request bodies and error answers without a daemon are contract cases:
# tests/contract/meta and tests/contract/dialog360 (outbound.yaml, errors.yaml).


async def test_an_opt_out_given_before_the_bsuid_arrived_still_holds(cloud: Cloud) -> None:
    await _approve(cloud, "order_update")
    await cloud.inbound({"type": "text", "text": {"body": "STOP"}})  # known by wa_id only
    row = await cloud.inbound({"type": "text", "text": {"body": "hello again"}}, user_id=BSUID)
    assert row["address"] == BSUID
    history = await cloud.daemon.hub.storage.messages.history("main", BSUID)
    assert history[0]["body"]["text"]["body"] == "STOP"  # the contact moved, its history too

    for address in (BSUID, USER, f"+{USER}"):
        body = {"to": address, "type": "template", "template": {"name": "order_update", "language": {"code": "en_US"}}}
        status, answer = await _post(cloud, body)
        assert status == 422 and answer["error"]["code"] == "opted_out", address


async def test_a_webhook_only_speaks_for_providers_sharing_its_credential(database_url: str, tmp_path: Path) -> None:
    meta = FakeGraphServer()
    d360 = FakeGraphServer(platform="dialog360")
    await meta.start()
    await d360.start()
    raw = {
        "wahub": {"api_tokens": [TOKEN]},
        "providers": [meta.provider_entry("main"), d360.provider_entry("d360", phone_number_id="106540352242924")],
    }
    pm = plugin_manager()
    try:
        async with running_daemon(build_config(raw, database=database_url, pm=pm), pm=pm) as daemon:
            # 360dialog's secret, but the metadata names the meta_cloud number: it stays 360dialog's.
            d360.attach(daemon.url, "d360")
            message = {"id": "wamid.crossed", "type": "text", "text": {"body": "hi"}}
            assert await d360.send_inbound(message) == 200
            history = daemon.hub.storage.messages.history
            await wait_until(lambda: history("d360", USER))
            assert await history("main", USER) == []
    finally:
        await meta.close()
        await d360.close()


async def test_commands_that_change_one_account_need_provider_when_several_could(
    sqlite_url: str, tmp_path: Path
) -> None:
    first, second = FakeGraphServer(), FakeGraphServer(platform="dialog360")
    await first.start()
    await second.start()
    try:
        config = tmp_path / "config.yaml"
        raw = {
            "wahub": {"database": sqlite_url},
            "providers": [first.provider_entry("main"), second.provider_entry("d360")],
        }
        config.write_text(yaml.safe_dump(raw))
        code, _, err = await _cli("templates", "delete", "order_update", "-c", str(config))
        assert code == 69 and "add --provider (one of main, d360)" in err
        code, _, err = await _cli("templates", "delete", "x", "--id", "1", "--provider", "d360", "-c", str(config))
        assert code == 1 and "deletes a template in every language" in err
    finally:
        await first.close()
        await second.close()
