"""The Vonage provider in a running daemon against ``FakeVonage``, over real HTTP:
signed webhooks (and the ones Vonage's own helper would wrongly let through),
inbound files fetched with the credentials, local files sent by a signed
public URL, templates, read receipts, refused credentials and throttling."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from vonage_jwt.verify_jwt import verify_signature

from tests.helpers import AUTH, TOKEN
from tests.plugins.providers.bsp_daemon import BspDaemon, bsp_daemon
from wahub.plugins.providers.vonage.provider import VonageProvider
from wahub.testing import build_config, plugin_manager, running_daemon, wait_until
from wahub.testing.fake_vonage import FakeVonage

USER = "447700900001"


class Vonage(BspDaemon):
    @property
    def provider(self) -> VonageProvider:
        provider = self.daemon.hub.providers["main"]
        assert isinstance(provider, VonageProvider)
        return provider

    async def user_sends(self, message_type: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """A user's message, posted signed; its stored row once processed."""
        message_uuid = str(uuid.uuid4())
        assert isinstance(self.fake, FakeVonage)
        body, headers = self.fake.inbound(USER, message_type, payload, message_uuid=message_uuid, **extra)
        assert (await self.fake.send_webhook(body, headers)).status == 200
        rows = await self.history()
        return next(row for row in rows if row["provider_message_id"] == message_uuid)


@pytest.fixture
async def vonage(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Vonage]:
    async with bsp_daemon(FakeVonage(), sqlite_url, tmp_path, public_url=True) as running:
        yield Vonage(running.daemon, running.fake, running.http, USER)


@pytest.fixture
async def vonage_basic(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Vonage]:
    async with bsp_daemon(FakeVonage(auth="basic"), sqlite_url, tmp_path, public_url=True) as running:
        yield Vonage(running.daemon, running.fake, running.http, USER)


def _token(secret: str, body: bytes, **claims: Any) -> str:
    payload = {
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "api_key": "abcd1234",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        **claims,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


# -- signatures -----------------------------------------------------------------


async def test_a_valid_jwt_over_another_body_is_refused_though_vonages_helper_accepts_it(vonage: Vonage) -> None:
    signed, headers = vonage.fake.inbound_text(USER, "pay 10 EUR")
    token = _token(vonage.fake.signature_secret, signed)
    tampered = signed.replace(b"pay 10 EUR", b"pay 99 EUR")
    # Vonage's own verifier checks the signature only: it would let the tampered body in.
    assert verify_signature(token, vonage.fake.signature_secret) is True
    answer = await vonage.fake.send_webhook(tampered, {**headers, "Authorization": f"Bearer {token}"}, signed=False)
    assert answer.status == 401
    assert await vonage.daemon.hub.storage.inbox_depth() == (0, 0.0)
    assert await vonage.daemon.hub.storage.messages.history("main", USER) == []
    # The same token with the body it was made for is taken.
    answer = await vonage.fake.send_webhook(signed, {**headers, "Authorization": f"Bearer {token}"}, signed=False)
    assert answer.status == 200
    assert [row["body"]["text"]["body"] for row in await vonage.history()] == ["pay 10 EUR"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer ",
        "Bearer not-a-jwt",
        "Basic YWJjZDEyMzQ6c2VjcmV0",
        "forged",
        "expired",
        "other-account",
        "hs512",
    ],
)
async def test_a_forged_or_missing_jwt_is_401_and_nothing_is_stored(vonage: Vonage, authorization: str | None) -> None:
    body, headers = vonage.fake.inbound_text(USER, "forged")
    secret = vonage.fake.signature_secret
    made = {
        "forged": f"Bearer {_token('not-the-signature-secret-0123456789', body)}",
        "expired": f"Bearer {_token(secret, body, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)}",
        "other-account": f"Bearer {_token(secret, body, api_key='zzzz9999')}",
        "hs512": "Bearer " + jwt.encode({"iat": int(time.time()), "payload_hash": "x"}, secret * 2, algorithm="HS512"),
    }
    if authorization is not None:
        headers["Authorization"] = made.get(authorization, authorization)
    async with vonage.http.post(vonage.fake.webhook_url(), data=body, headers=headers) as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "invalid_signature"
    assert await vonage.daemon.hub.storage.inbox_depth() == (0, 0.0)
    assert await vonage.daemon.hub.storage.messages.history("main", USER) == []


async def test_a_signature_older_than_its_maximum_age_is_refused(vonage: Vonage) -> None:
    body, headers = vonage.fake.inbound_text(USER, "from yesterday")
    old = _token(vonage.fake.signature_secret, body, iat=int(time.time()) - 2 * 86400)
    response = await vonage.fake.send_webhook(body, {**headers, "Authorization": f"Bearer {old}"}, signed=False)
    assert response.status == 401


# -- inbound --------------------------------------------------------------------


async def test_an_inbound_image_is_downloaded_with_the_credentials_and_served(vonage: Vonage) -> None:
    photo = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4096
    url = vonage.fake.add_media(photo, "image/jpeg")
    row = await vonage.user_sends("image", {"image": {"url": url, "caption": "Receipt"}, "profile": {"name": "Ana"}})

    kept = row["body"]["image"]["wahub_media"]
    assert kept["sha256"] == hashlib.sha256(photo).hexdigest() and kept["size"] == len(photo)
    assert row["body"]["image"]["caption"] == "Receipt"
    assert vonage.fake.refused_downloads == 0 and "GET /v3/media/" + url.rsplit("/", 1)[1] in vonage.fake.calls
    async with vonage.http.get(f"{vonage.daemon.url}{kept['url']}", headers=AUTH) as response:
        assert response.status == 200 and await response.read() == photo
        assert response.headers["Content-Type"] == "image/jpeg"
    # Vonage's media URL itself needs the credentials.
    async with vonage.http.get(url) as response:
        assert response.status == 401


async def test_a_reply_tap_and_a_read_receipt_reach_vonage(vonage: Vonage) -> None:
    row = await vonage.user_sends("reply", {"reply": {"id": "yes", "title": "Yes"}})
    assert row["body"]["interactive"]["button_reply"] == {"id": "yes", "title": "Yes"}
    message_uuid = row["provider_message_id"]
    receipt = {"messaging_product": "whatsapp", "to": USER, "status": "read", "message_id": message_uuid}
    answer = await vonage.send(receipt)
    await vonage.status_becomes(answer["id"], "sent")
    assert vonage.fake.reads == [message_uuid]
    assert f"PATCH /v1/messages/{message_uuid}" in vonage.fake.calls


# -- outbound -------------------------------------------------------------------


async def test_a_local_file_goes_by_a_signed_public_url_that_vonage_fetches(vonage: Vonage) -> None:
    await vonage.user_sends("text", {"text": "send me the invoice"})
    pdf = b"%PDF-1.4 an invoice" + b"." * 4096
    form = aiohttp.FormData()
    form.add_field("file", pdf, filename="invoice.pdf", content_type="application/pdf")
    async with vonage.http.post(f"{vonage.daemon.url}/api/v1/media", data=form, headers=AUTH) as response:
        uploaded = await response.json()
        assert response.status == 201, uploaded
    body = {"to": USER, "type": "document", "document": {"id": uploaded["id"], "filename": "invoice.pdf"}}
    answer = await vonage.send(body)
    await vonage.status_becomes(answer["id"], "read")

    [sent] = [s for s in vonage.fake.sent if s.kind == "document"]
    link = sent.body["file"]["url"]
    assert link.startswith(f"{vonage.daemon.url}/media/public/") and sent.body["file"]["name"] == "invoice.pdf"
    assert vonage.fake.fetched == [(link, 200, pdf)]

    # Inside a custom payload too (an interactive message's header), a stored file goes by its link.
    interactive = {
        "type": "button",
        "header": {"type": "document", "document": {"id": uploaded["id"]}},
        "body": {"text": "Is this the right invoice?"},
        "action": {"buttons": [{"type": "reply", "reply": {"id": "yes", "title": "Yes"}}]},
    }
    answer = await vonage.send({"to": USER, "type": "interactive", "interactive": interactive})
    await vonage.status_becomes(answer["id"], "read")
    [sent] = [s for s in vonage.fake.sent if s.kind == "interactive"]
    header = sent.body["custom"]["interactive"]["header"]
    assert list(header["document"]) == ["link"]
    async with vonage.http.get(header["document"]["link"]) as response:
        assert response.status == 200 and await response.read() == pdf


async def test_a_file_vonage_cannot_fetch_fails_with_its_code(vonage: Vonage) -> None:
    await vonage.user_sends("text", {"text": "hi"})
    body = {"to": USER, "type": "image", "image": {"link": f"{vonage.daemon.url}/media/public/gone"}}
    answer = await vonage.send(body)
    failed = await vonage.status_becomes(answer["id"], "failed")
    assert failed["error"]["code"] == "1380", failed


async def test_a_template_goes_as_custom_without_a_template_list(vonage: Vonage) -> None:
    # Vonage keeps no template list wahub can read: the send is left to Vonage to check.
    assert await vonage.provider.sync_templates() is None
    template = {
        "name": "order_ready",
        "language": {"code": "en"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "1042"}]}],
    }
    answer = await vonage.send({"to": USER, "type": "template", "template": template})
    await vonage.status_becomes(answer["id"], "read")
    [sent] = vonage.fake.sent
    assert (sent.kind, sent.text) == ("template", "order_ready")
    assert sent.body["message_type"] == "custom" and sent.body["custom"] == {"type": "template", "template": template}


async def test_basic_credentials_send_too(vonage_basic: Vonage) -> None:
    await vonage_basic.user_sends("text", {"text": "hi"})
    answer = await vonage_basic.send({"to": USER, "type": "text", "text": {"body": "hello by basic auth"}})
    await vonage_basic.status_becomes(answer["id"], "read")
    assert [s.text for s in vonage_basic.fake.sent] == ["hello by basic auth"]


async def test_refused_credentials_pause_the_provider_and_keep_the_message(vonage: Vonage) -> None:
    await vonage.user_sends("text", {"text": "hi"})
    vonage.fake.rotate_keys()  # the application's key was replaced at Vonage
    answer = await vonage.send({"to": USER, "type": "text", "text": {"body": "are you there?"}})

    async def paused() -> str | None:
        return vonage.provider.paused

    reason = await wait_until(paused, within=15)
    assert "unauthorized" in reason
    assert (await vonage.message(answer["id"]))["status"] == "queued"
    assert vonage.fake.sent == []


async def test_throttling_is_retried_until_the_message_goes(vonage: Vonage) -> None:
    await vonage.user_sends("text", {"text": "hi"})
    vonage.fake.refuse_next("1000", status=429, times=2)
    answer = await vonage.send({"to": USER, "type": "text", "text": {"body": "after the throttle"}})
    await vonage.status_becomes(answer["id"], "read", within=30)
    assert [s.text for s in vonage.fake.sent] == ["after the throttle"]
    assert [call for call in vonage.fake.calls if call == "POST /v1/messages"].count("POST /v1/messages") == 3


async def test_the_fake_refuses_what_vonage_refuses(vonage: Vonage) -> None:
    token_headers = {"Content-Type": "application/json"}
    async with vonage.http.post(f"{vonage.fake.url}/v1/messages", json={}, headers=token_headers) as response:
        assert response.status == 401
        assert (await response.json())["type"].endswith("#unauthorized")
    pair = base64.b64encode(f"{vonage.fake.api_key}:{vonage.fake.api_secret}".encode()).decode()
    basic = {"Authorization": f"Basic {pair}"}
    body = {"channel": "whatsapp", "message_type": "text", "to": "+44 7700", "from": vonage.fake.number, "text": ""}
    async with vonage.http.post(f"{vonage.fake.url}/v1/messages", json=body, headers=basic) as response:
        problem = await response.json()
        assert response.status == 422 and problem["title"] == "Invalid params"
        assert [item["name"] for item in problem["invalid_parameters"]] == ["to", "text"]
    body = {**body, "to": USER, "text": "hi", "from": "15550000000"}
    async with vonage.http.post(f"{vonage.fake.url}/v1/messages", json=body, headers=basic) as response:
        assert response.status == 422 and (await response.json())["type"].endswith("#1120")


async def test_numbers_of_one_application_share_its_webhook_url(sqlite_url: str, tmp_path: Path) -> None:
    fake = await FakeVonage().start()
    second = "14157386199"
    raw = {
        "wahub": {"api_tokens": [TOKEN], "database": sqlite_url, "media": {"directory": str(tmp_path / "media")}},
        "providers": [fake.provider_entry("main"), fake.provider_entry("second", **{"from": second})],
    }
    pm = plugin_manager()
    try:
        async with running_daemon(build_config(raw, database=sqlite_url, pm=pm), pm=pm) as daemon:
            fake.attach(daemon.url, "main")  # the application's one inbound URL
            for number, text in ((fake.number, "to the first"), (second, "to the second")):
                body, headers = fake.inbound(USER, "text", {"text": text}, to=number)
                assert (await fake.send_webhook(body, headers)).status == 200
            storage = daemon.hub.storage

            async def both() -> bool:
                return (await storage.inbox_depth())[0] == 0 and bool(await storage.messages.history("second", USER))

            await wait_until(both, within=15)
            for name, text in (("main", "to the first"), ("second", "to the second")):
                assert [row["body"]["text"]["body"] for row in await storage.messages.history(name, USER)] == [text]
    finally:
        await fake.close()
