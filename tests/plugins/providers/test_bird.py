"""Bird's provider in the running daemon, against the fake Bird over real HTTP:
webhook signatures over the URL Bird called (behind a public base URL or a
trusted proxy), inbound files fetched with the access key, local files sent
through a signed public URL the fake fetches, declared templates, refused
keys pausing the provider and throttling retried."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import AUTH
from tests.plugins.providers.bsp_daemon import BspDaemon, bsp_daemon
from wahub.core.errors import ErrorKind, Lesson
from wahub.core.models import OutgoingMessage
from wahub.plugins.providers.bird.provider import BirdProvider
from wahub.plugins.providers.bird.signature import TIMESTAMP_HEADER, signature_headers
from wahub.testing import wait_until
from wahub.testing.fake_bird import FakeBird

USER = "31612345678"
PUBLIC = "https://hooks.example.com/wahub"
PROXIED = "https://proxy.example.com"
TEMPLATE = {"name": "order_ready", "language": "en", "project_id": "proj-0001", "version": "ver-0001"}


class Bird(BspDaemon):
    def provider(self, name: str = "main") -> BirdProvider:
        provider = self.daemon.hub.providers[name]
        assert isinstance(provider, BirdProvider)
        return provider

    async def post(self, name: str, body: bytes, headers: dict[str, str]) -> int:
        async with self.http.post(f"{self.daemon.url}/webhooks/{name}", data=body, headers=headers) as response:
            await response.read()
            return response.status


@pytest.fixture
async def bird(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Bird]:
    fake = FakeBird()

    def entries() -> list[dict[str, Any]]:
        return [
            fake.provider_entry("main", pair_limit=None, templates=[TEMPLATE]),
            fake.provider_entry("public", public_base_url=PUBLIC),
            fake.provider_entry("proxied", trusted_proxies=["127.0.0.1"]),
        ]

    async with bsp_daemon(fake, sqlite_url, tmp_path, entries=entries, public_url=True) as running:
        yield Bird(running.daemon, running.fake, running.http, USER)


# -- signatures -----------------------------------------------------------------


async def test_a_stale_or_future_timestamp_is_refused_and_nothing_stored(bird: Bird) -> None:
    body, headers = bird.fake.inbound_text(USER, "replayed")
    url = bird.fake.webhook_url()
    for skew in (-301.0, 301.0):
        signed = signature_headers(bird.fake.signing_key, url, body, now=time.time() + skew)
        assert await bird.post("main", body, {**headers, **signed}) == 401
    fresh = signature_headers(bird.fake.signing_key, url, body, now=time.time() - 250)
    assert await bird.post("main", body, {**headers, **fresh}) == 200
    assert [row["body"]["text"]["body"] for row in await bird.history()] == ["replayed"]


async def test_a_signature_made_for_another_url_is_refused(bird: Bird) -> None:
    body, headers = bird.fake.inbound_text(USER, "elsewhere")
    for url in ("https://attacker.example/webhooks/main", f"{bird.daemon.url}/webhooks/public"):
        signed = bird.fake.sign(url, body, headers)
        assert await bird.post("main", body, {**headers, **signed}) == 401
    assert await bird.daemon.hub.storage.inbox_depth() == (0, 0.0)
    assert await bird.daemon.hub.storage.messages.history("main", USER) == []


async def test_the_url_is_rebuilt_from_the_public_base_url(bird: Bird) -> None:
    body, headers = bird.fake.inbound_text(USER, "through the proxy")
    # The daemon sees http://127.0.0.1:<port>/webhooks/public; Bird called the public URL.
    as_seen = bird.fake.sign(f"{bird.daemon.url}/webhooks/public", body, headers)
    assert await bird.post("public", body, {**headers, **as_seen}) == 401
    signed = bird.fake.sign(f"{PUBLIC}/webhooks/public", body, headers)
    assert await bird.post("public", body, {**headers, **signed}) == 200


async def test_forwarding_headers_count_only_from_a_trusted_proxy(bird: Bird) -> None:
    body, headers = bird.fake.inbound_text(USER, "forwarded")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "proxy.example.com"}
    for name, expected in (("proxied", 200), ("main", 401)):
        signed = bird.fake.sign(f"{PROXIED}/webhooks/{name}", body, headers)
        assert await bird.post(name, body, {**headers, **forwarded, **signed}) == expected, name


async def test_a_missing_or_malformed_signature_is_refused(bird: Bird) -> None:
    body, headers = bird.fake.inbound_text(USER, "unsigned")
    signed = bird.fake.sign(bird.fake.webhook_url(), body, headers)
    assert await bird.post("main", body, headers) == 401
    assert await bird.post("main", body, {**headers, TIMESTAMP_HEADER: signed[TIMESTAMP_HEADER]}) == 401
    assert await bird.post("main", body, {**headers, **signed, TIMESTAMP_HEADER: "soon"}) == 401
    assert await bird.daemon.hub.storage.inbox_depth() == (0, 0.0)


# -- media ----------------------------------------------------------------------


async def test_an_inbound_file_is_fetched_with_the_access_key_and_served(bird: Bird) -> None:
    picture = b"\xff\xd8\xff\xe0" + b"bird picture" * 100
    media_url = bird.fake.add_media(picture, "image/jpeg")
    async with bird.http.get(media_url) as response:  # Bird keeps it behind the access key
        assert response.status == 401
    image = {"type": "image", "image": {"images": [{"mediaUrl": media_url}], "text": "the part"}}
    body, headers = bird.fake.inbound(USER, image)
    assert (await bird.fake.send_webhook(body, headers)).status == 200

    async def stored() -> dict[str, Any] | None:
        rows = await bird.history()
        note = rows[0]["body"]["image"].get("wahub_media") if rows else None
        return note if isinstance(note, dict) else None

    note = await wait_until(stored, within=15)
    assert note["mime_type"] == "image/jpeg" and note["size"] == len(picture), note
    async with bird.http.get(f"{bird.daemon.url}/api/v1/media/{note['id']}", headers=AUTH) as response:
        assert response.status == 200 and await response.read() == picture


async def test_a_local_file_goes_out_through_a_signed_url_the_fake_fetches(bird: Bird) -> None:
    assert await bird.fake.send_inbound(USER, "send me the menu") == 200
    await bird.history()
    form = aiohttp.FormData()
    form.add_field("provider", "main")
    form.add_field("file", b"%PDF-1.4 menu", filename="menu.pdf", content_type="application/pdf")
    async with bird.http.post(f"{bird.daemon.url}/api/v1/media", data=form, headers=AUTH) as response:
        uploaded = await response.json()
        assert response.status == 201, uploaded
    answer = await bird.send({"to": USER, "type": "document", "document": {"id": uploaded["id"], "caption": "Menu"}})
    await bird.status_becomes(answer["id"], "sent", "delivered", "read")
    [sent] = [s for s in bird.fake.sent if s.kind == "document"]
    [file] = sent.body["body"]["file"]["files"]
    assert file["contentType"] == "application/pdf" and file["filename"] == "menu.pdf"
    assert file["mediaUrl"].startswith(f"{bird.daemon.url}/media/public/")
    assert bird.fake.fetched[file["mediaUrl"]] == (200, b"%PDF-1.4 menu")


# -- sending --------------------------------------------------------------------


async def test_declared_templates_are_synced_and_sent_by_project_and_version(bird: Bird) -> None:
    assert await bird.provider().sync_templates() == {"added": 1, "updated": 0, "removed": 0}
    [stored] = await bird.daemon.hub.storage.policy.templates("main")
    assert (stored["name"], stored["status"], stored["external_id"]) == (
        "order_ready",
        "APPROVED",
        "proj-0001:ver-0001",
    )
    components = [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}]
    template = {"name": "order_ready", "language": {"code": "en"}, "components": components}
    answer = await bird.send({"to": USER, "type": "template", "template": template})
    await bird.status_becomes(answer["id"], "sent", "delivered", "read")
    [sent] = [s for s in bird.fake.sent if s.kind == "template"]
    assert sent.body["template"] == {
        "projectId": "proj-0001",
        "version": "ver-0001",
        "locale": "en",
        "parameters": [{"type": "string", "key": "1", "value": "Ana"}],
    }
    assert await bird.provider("public").sync_templates() is None  # declares none: Bird has no listing


async def test_a_refused_access_key_pauses_the_provider(bird: Bird) -> None:
    assert await bird.fake.send_inbound(USER, "hi") == 200
    await bird.history()
    bird.fake.access_key = "a-key-bird-no-longer-knows"
    answer = await bird.send({"to": USER, "type": "text", "text": {"body": "are you there?"}})

    async def paused() -> str | None:
        return bird.provider().paused

    reason = await wait_until(paused, within=15)
    assert "Unauthorized" in reason
    assert [s for s in bird.fake.sent if s.text == "are you there?"] == []
    # The message waits in the outbox until the key is fixed.
    waiting = await bird.status_becomes(answer["id"], "queued", "sent", "failed")
    assert (waiting["status"], waiting["provider_message_id"]) == ("queued", None)


async def test_throttling_is_retried_until_bird_accepts(bird: Bird) -> None:
    assert await bird.fake.send_inbound(USER, "hi") == 200
    await bird.history()
    bird.fake.refuse_next("TooManyRequests", status=429, times=2)
    answer = await bird.send({"to": USER, "type": "text", "text": {"body": "after the limit"}})
    await bird.status_becomes(answer["id"], "sent", "delivered", "read")
    assert [s.text for s in bird.fake.sent].count("after the limit") == 1
    assert sum(call.startswith("POST /workspaces/") for call in bird.fake.calls) >= 3


async def test_a_user_known_by_bsuid_is_answered_at_their_number(bird: Bird) -> None:
    body, headers = bird.fake.inbound(USER, {"type": "text", "text": {"text": "hi"}}, bsuid="NL.1349120865530274")
    assert (await bird.fake.send_webhook(body, headers)).status == 200
    # The contact is keyed by its BSUID; Bird addresses phone numbers only.
    [row] = await bird.history("NL.1349120865530274")
    assert (row["direction"], row["body"]["text"]["body"]) == ("in", "hi")
    # wahub's own replies go to the contact's number...
    reply = OutgoingMessage.text("NL.1349120865530274", "hello again")
    message_id = await bird.daemon.hub.send(reply, provider="main", idempotency_key="bird-bsuid-reply")
    await bird.status_becomes(message_id, "sent", "delivered", "read")
    [sent] = [s for s in bird.fake.sent if s.text == "hello again"]
    assert sent.body["receiver"]["contacts"][0]["identifierValue"] == f"+{USER}"
    # ...while a REST API send to exactly that id is refused, naming why.
    answer = await bird.send({"to": "NL.1349120865530274", "type": "text", "text": {"body": "exactly there"}})
    failed = await bird.status_becomes(answer["id"], "failed")
    assert "give the user's number" in failed["error"]["message"], failed


async def test_a_failed_status_with_whatsapps_opt_out_code_records_an_opt_out(bird: Bird) -> None:
    assert await bird.fake.send_inbound(USER, "hi") == 200
    await bird.history()
    bird.fake.statuses = False
    answer = await bird.send({"to": USER, "type": "text", "text": {"body": "a promotion"}})
    await bird.status_becomes(answer["id"], "sent")
    [sent] = [s for s in bird.fake.sent if s.text == "a promotion"]
    assert await bird.fake.post_status(sent, "failed", error="131050") == 200
    failed = await bird.status_becomes(answer["id"], "failed")
    assert failed["error"]["code"] == "131050", failed
    ledger = await bird.daemon.hub.storage.policy.ledger("main", USER)
    assert [(event["action"], event["scope"]) for event in ledger] == [("opt_out", "marketing")]


def test_whatsapps_codes_and_birds_tokens_keep_their_meaning(bird: Bird) -> None:
    provider = bird.provider()
    window = provider.classify_error("131047")
    assert window.kind is ErrorKind.POLICY and "24 hours" in window.reason
    assert provider.classify_error("131050").lesson is Lesson.OPTED_OUT
    throttled = provider.classify_error("TooManyRequests", http_status=429)
    assert (throttled.kind, throttled.throttle) == (ErrorKind.RETRYABLE, "throughput")
    assert provider.classify_error("Forbidden", http_status=403).kind is ErrorKind.AUTH
    assert provider.classify_error(None, http_status=502).kind is ErrorKind.RETRYABLE


async def test_a_malformed_body_is_refused_by_the_fake_as_bird_does(bird: Bird) -> None:
    url = f"{bird.fake.url}/workspaces/{bird.fake.workspace_id}/channels/{bird.fake.channel_id}/messages"
    key = {"Authorization": f"AccessKey {bird.fake.access_key}"}
    bad = {"receiver": {"contacts": [{"identifierKey": "phonenumber", "identifierValue": USER}]}, "body": {"type": "x"}}
    async with bird.http.post(url, data=json.dumps(bad), headers=key) as response:
        answer = await response.json()
    assert response.status == 400 and answer["code"] == "InvalidPayload"
    assert len(answer["details"]["problems"]) == 2, answer
    async with bird.http.post(url, json=bad) as response:
        assert response.status == 401 and (await response.json())["code"] == "Unauthorized"
