"""The Infobip provider in the running daemon against ``FakeInfobip`` over real
HTTP: the webhook's credentials, inbound files fetched with the API key and
served, local files sent through a signed public URL the fake fetches,
templates listed, created and deleted, a refused key pausing the provider and
Infobip's throttling retried."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import AUTH
from tests.plugins.providers.bsp_daemon import USER, BspDaemon, bsp_daemon
from wahub.core.errors import ProviderError
from wahub.plugins.providers.infobip.provider import InfobipProvider
from wahub.testing import wait_until
from wahub.testing.fake_infobip import FakeInfobip

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


class Run(BspDaemon):
    @property
    def provider(self) -> InfobipProvider:
        provider = self.daemon.hub.providers["main"]
        assert isinstance(provider, InfobipProvider)
        return provider


@pytest.fixture
async def run(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Run]:
    async with bsp_daemon(FakeInfobip(), sqlite_url, tmp_path, public_url=True) as running:
        yield Run(running.daemon, running.fake, running.http)


@pytest.fixture
async def header_run(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Run]:
    fake = FakeInfobip(webhook_header="X-Infobip-Secret")
    async with bsp_daemon(fake, sqlite_url, tmp_path, public_url=True) as running:
        yield Run(running.daemon, running.fake, running.http)


async def _nothing_stored(run: Run) -> None:
    assert await run.daemon.hub.storage.inbox_depth() == (0, 0.0)
    assert await run.daemon.hub.storage.messages.history("main", USER) == []


# -- the webhook's credentials ------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        aiohttp.encode_basic_auth("wahub", "not-the-password-0123"),
        aiohttp.encode_basic_auth("mallory", "infobip-webhook-password-0123"),
        "Bearer infobip-webhook-password-0123",
        "Basic ###",
    ],
    ids=["missing", "wrong-password", "wrong-user", "bearer", "not-base64"],
)
async def test_a_missing_or_wrong_credential_is_401_with_nothing_stored(run: Run, authorization: str | None) -> None:
    body, headers = run.fake.inbound_text(USER, "let me in")
    if authorization is not None:
        headers["Authorization"] = authorization
    assert (await run.fake.send_webhook(body, headers, signed=False)).status == 401
    await _nothing_stored(run)


async def test_the_webhooks_basic_credentials_let_a_message_in(run: Run) -> None:
    await run.user_writes("hello")
    [row] = await run.history()
    assert (row["direction"], row["body"]["text"]["body"]) == ("in", "hello")


async def test_a_secret_header_protects_the_webhook_instead(header_run: Run) -> None:
    body, headers = header_run.fake.inbound_text(USER, "via header")
    wrong = {**headers, "X-Infobip-Secret": "infobip-webhook-secret-9999"}
    assert (await header_run.fake.send_webhook(body, wrong, signed=False)).status == 401
    basic = {**headers, "Authorization": aiohttp.encode_basic_auth("wahub", "infobip-webhook-password-0123")}
    assert (await header_run.fake.send_webhook(body, basic, signed=False)).status == 401
    await _nothing_stored(header_run)
    assert (await header_run.fake.send_webhook(body, headers)).status == 200
    assert [row["body"]["text"]["body"] for row in await header_run.history()] == ["via header"]


# -- media --------------------------------------------------------------------


async def test_an_inbound_image_is_fetched_with_the_api_key_and_served(run: Run) -> None:
    url = run.fake.add_media(PNG, "image/png")
    async with run.http.get(url) as response:  # Infobip serves the file to the key holder only
        assert response.status == 401
    body, headers = run.fake.inbound(USER, {"type": "IMAGE", "url": url, "caption": "the receipt"})
    assert (await run.fake.send_webhook(body, headers)).status == 200

    async def downloaded() -> dict[str, Any] | None:
        rows = await run.history()
        note = rows[0]["body"]["image"].get("wahub_media") if rows else None
        return note if note else None

    note = await wait_until(downloaded, within=15)
    assert note["mime_type"] == "image/png" and note["size"] == len(PNG), note
    async with run.http.get(run.daemon.url + note["url"], headers=AUTH) as response:
        assert response.status == 200 and await response.read() == PNG
    assert f"GET {url.removeprefix(run.fake.url)}" in run.fake.calls


async def test_a_local_file_is_sent_by_a_signed_public_url_that_infobip_fetches(run: Run) -> None:
    form = aiohttp.FormData()
    form.add_field("file", PNG, filename="part.png", content_type="image/png")
    async with run.http.post(f"{run.daemon.url}/api/v1/media", data=form, headers=AUTH) as response:
        uploaded = await response.json()
        assert response.status == 201, uploaded
    await run.user_writes()
    message_id = int(
        (await run.send({"to": USER, "type": "image", "image": {"id": uploaded["id"], "caption": "yours"}}))["id"]
    )
    await run.status_becomes(message_id, "sent", "delivered", "read")
    [sent] = [s for s in run.fake.sent if s.kind == "image"]
    media_url = sent.body["content"]["mediaUrl"]
    assert media_url.startswith(f"{run.daemon.url}/media/public/"), media_url
    assert run.fake.fetched[media_url] == (200, PNG)
    assert sent.body["content"]["caption"] == "yours"
    assert sent.body["notifyUrl"] == f"{run.daemon.url}/webhooks/main"


async def test_statuses_from_delivery_and_seen_reports_reach_read(run: Run) -> None:
    await run.user_writes()
    message_id = int((await run.send({"to": USER, "type": "text", "text": {"body": "on its way"}}))["id"])
    await run.status_becomes(message_id, "read")
    await run.fake.settle()
    [sent] = [s for s in run.fake.sent if s.text == "on its way"]
    assert await run.fake.post_status(sent, "delivered") == 200  # late: changes nothing
    await run.history()
    assert (await run.message(message_id))["status"] == "read"


# -- templates ----------------------------------------------------------------


def _listed(name: str, status: str, body: str) -> dict[str, Any]:
    return {
        "id": "100200300",
        "businessAccountId": 100,
        "name": name,
        "language": "en",
        "status": status,
        "category": "UTILITY",
        "structure": {"body": {"text": body}},
    }


async def test_templates_sync_create_and_delete_through_the_provider(run: Run) -> None:
    run.fake.templates[("order_ready", "en")] = _listed("order_ready", "APPROVED", "Hi {{1}}, order {{2}} is ready")
    assert await run.provider.sync_templates() == {"added": 1, "updated": 0, "removed": 0}
    [stored] = await run.daemon.hub.storage.policy.templates("main")
    assert (stored["name"], stored["language"], stored["status"], stored["category"]) == (
        "order_ready",
        "en",
        "APPROVED",
        "UTILITY",
    )
    assert stored["components"] == [{"type": "BODY", "text": "Hi {{1}}, order {{2}} is ready"}]

    definition = {
        "name": "visit_reminder",
        "language": "en",
        "category": "UTILITY",
        "components": [
            {"type": "BODY", "text": "See you at {{1}}", "example": {"body_text": [["9:00"]]}},
            {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Cancel"}]},
        ],
    }
    answer = await run.provider.create_template(definition)
    assert answer["status"] == "PENDING"
    created = run.fake.templates[("visit_reminder", "en")]
    assert created["structure"] == {
        "body": {"text": "See you at {{1}}", "examples": ["9:00"]},
        "buttons": [{"type": "QUICK_REPLY", "text": "Cancel"}],
    }
    statuses = {t["name"]: t["status"] for t in await run.daemon.hub.storage.policy.templates("main")}
    assert statuses == {"order_ready": "APPROVED", "visit_reminder": "PENDING"}

    with pytest.raises(ProviderError, match="already exists"):
        await run.provider.create_template(definition)
    with pytest.raises(ProviderError, match="every language"):
        await run.provider.delete_template("visit_reminder", "100200300")
    await run.provider.delete_template("visit_reminder")
    assert ("visit_reminder", "en") not in run.fake.templates


async def test_an_approved_template_is_sent_with_its_placeholders(run: Run) -> None:
    run.fake.templates[("order_ready", "en")] = _listed("order_ready", "APPROVED", "Hi {{1}}, order {{2}} is ready")
    await run.provider.sync_templates()
    parameters = [{"type": "text", "text": "Ana"}, {"type": "text", "text": "42"}]
    template = {
        "name": "order_ready",
        "language": {"code": "en"},
        "components": [{"type": "body", "parameters": parameters}],
    }
    message_id = int((await run.send({"to": USER, "type": "template", "template": template}))["id"])
    await run.status_becomes(message_id, "sent", "delivered", "read")
    [sent] = [s for s in run.fake.sent if s.kind == "template"]
    content = sent.body["content"]
    assert (content["templateName"], content["language"]) == ("order_ready", "en")
    assert content["templateData"]["body"]["placeholders"] == ["Ana", "42"]


# -- refusals -----------------------------------------------------------------


async def test_a_refused_api_key_pauses_the_provider(run: Run) -> None:
    await run.user_writes()
    run.fake.refuse_next("UNAUTHORIZED", status=401)
    await run.send({"to": USER, "type": "text", "text": {"body": "x"}})

    async def paused() -> dict[str, Any] | None:
        async with run.http.get(f"{run.daemon.url}/readyz") as response:
            body: dict[str, Any] = await response.json()
            return body if response.status == 503 else None

    body = await wait_until(paused)
    assert "main" in body["paused"]
    assert run.provider.paused is not None and "api_key" in run.provider.paused


async def test_infobips_throttling_is_retried_until_sent(run: Run) -> None:
    await run.user_writes()
    run.fake.statuses = False
    run.fake.refuse_next("TOO_MANY_REQUESTS", status=429, times=2)
    message_id = int((await run.send({"to": USER, "type": "text", "text": {"body": "after the pause"}}))["id"])
    await run.status_becomes(message_id, "sent")
    assert [s.text for s in run.fake.sent] == ["after the pause"]
    assert sum(call == "POST /whatsapp/1/message/text" for call in run.fake.calls) == 3


async def test_a_malformed_body_is_refused_by_the_fake_with_infobips_400(run: Run) -> None:
    async with run.http.post(
        f"{run.fake.url}/whatsapp/1/message/text",
        json={"from": run.fake.sender, "to": USER, "content": {"text": ""}},
        headers={"Authorization": f"App {run.fake.api_key}"},
    ) as response:
        assert response.status == 400
        error = (await response.json())["requestError"]["serviceException"]
    assert error == {"messageId": "BAD_REQUEST", "text": "content.text: must not be blank"}
    assert run.fake.sent == []


async def test_the_api_key_is_never_sent_to_a_host_other_than_base_url(run: Run) -> None:
    elsewhere = f"{run.daemon.url}/files/abc"
    async with run.daemon.hub.storage.media.incoming("image") as incoming:
        with pytest.raises(ProviderError, match="not on base_url"):
            await run.provider.download_media(elsewhere, "image", incoming)
    assert not any("/files/" in call for call in run.fake.calls)
    # Infobip's media path on another of its hosts is asked of base_url, never of that host.
    media_path = f"/whatsapp/1/senders/{run.fake.sender}/media/abc"
    async with run.daemon.hub.storage.media.incoming("image") as incoming:
        with pytest.raises(ProviderError):  # the fake keeps no file "abc"
            await run.provider.download_media(f"https://api.infobip.com{media_path}", "image", incoming)
    assert f"GET {media_path}" in run.fake.calls
