"""The Twilio provider in a running daemon against the fake Twilio cloud, over
real HTTP: webhooks signed by twilio-python's ``RequestValidator`` (for the
public URL, behind a proxy), inbound media fetched with the account's
credentials, local files fetched by Twilio through signed public URLs."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from tests.helpers import AUTH, TOKEN
from tests.plugins.providers.bsp_daemon import BspDaemon
from wahub.testing import build_config, plugin_manager, running_daemon, serve_on_loopback, wait_until
from wahub.testing.fake_twilio import FakeTwilio

USER = "16505551234"


@dataclass
class Proxy:
    """A reverse proxy in front of the daemon: ``/hub/...`` is forwarded to the
    daemon's ``/...`` with X-Forwarded-Proto/-Host/-Prefix, as nginx would."""

    url: str = ""
    target: str = ""
    host: str = "proxy.example.org"
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None

    async def start(self) -> Proxy:
        app = web.Application()
        app.router.add_route("*", "/hub/{tail:.*}", self._forward)
        self._runner, self.url = await serve_on_loopback(app)
        self._http = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        headers.update({"X-Forwarded-Proto": "https", "X-Forwarded-Host": self.host, "X-Forwarded-Prefix": "/hub"})
        url = f"{self.target}/{request.match_info['tail']}" + (
            f"?{request.query_string}" if request.query_string else ""
        )
        async with self._http.request(request.method, url, data=await request.read(), headers=headers) as answer:
            kept = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type",)}
            return web.Response(status=answer.status, body=await answer.read(), headers=kept)


@dataclass
class Twilio(BspDaemon):
    proxy: Proxy = field(default_factory=Proxy)

    async def post(self, body: bytes, headers: dict[str, str], *, url: str | None = None) -> aiohttp.ClientResponse:
        async with self.http.post(url or f"{self.daemon.url}/webhooks/main", data=body, headers=headers) as response:
            await response.read()
            return response


def signed(fake: FakeTwilio, url: str, body: bytes) -> dict[str, str]:
    """Headers of a form webhook signed by twilio-python for ``url``."""
    params = MultiDict(parse_qsl(body.decode(), keep_blank_values=True))
    signature = RequestValidator(fake.auth_token).compute_signature(url, params)
    return {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}


@asynccontextmanager
async def running(tmp_path: Path, database: str, **entry: Any) -> AsyncIterator[Twilio]:
    """The daemon with provider ``main`` on a fresh fake Twilio, and a proxy in front;
    ``entry`` adds to the provider entry (``"{proxy}"`` in a value is the proxy's URL)."""
    fake, proxy = await FakeTwilio().start(), await Proxy().start()
    extra = {
        key: value.replace("{proxy}", proxy.url) if isinstance(value, str) else value for key, value in entry.items()
    }
    raw = {
        "wahub": {"api_tokens": [TOKEN], "database": database, "media": {"directory": str(tmp_path / "media")}},
        # A key given as None is left out of the entry (to drop one of the fake's).
        "providers": [
            {k: v for k, v in fake.provider_entry("main", pair_limit=None, **extra).items() if v is not None}
        ],
    }
    pm = plugin_manager()
    try:
        async with running_daemon(build_config(raw, database=database, pm=pm), pm=pm) as daemon:
            proxy.target = daemon.url
            fake.attach(daemon.url, "main", public_url=_public(extra))
            async with aiohttp.ClientSession() as http:
                yield Twilio(daemon, fake, http, USER, proxy)
    finally:
        await fake.close()
        await proxy.close()


def _public(entry: dict[str, Any]) -> str | None:
    base = entry.get("public_base_url")
    return f"{base}/webhooks/main" if base else None


PUBLIC = "https://hooks.example.com/wahub"


async def test_a_signature_for_the_public_url_is_accepted_and_answered_with_empty_twiml(
    tmp_path: Path, sqlite_url: str
) -> None:
    async with running(tmp_path, sqlite_url, public_base_url=PUBLIC) as twilio:
        body, _ = twilio.fake.inbound_text(USER, "hello")
        response = await twilio.post(body, signed(twilio.fake, f"{PUBLIC}/webhooks/main", body))
        assert response.status == 200
        assert response.content_type == "text/xml"
        assert (await twilio.history())[0]["body"]["text"]["body"] == "hello"

        again, _ = twilio.fake.inbound_text(USER, "with the port")
        with_port = signed(twilio.fake, "https://hooks.example.com:443/wahub/webhooks/main", again)
        assert (await twilio.post(again, with_port)).status == 200

        # Signed for the URL the daemon itself saw: not the one Twilio is configured with.
        other, _ = twilio.fake.inbound_text(USER, "signed for another URL")
        own = signed(twilio.fake, f"{twilio.daemon.url}/webhooks/main", other)
        assert (await twilio.post(other, own)).status == 401
        assert [row["body"]["text"]["body"] for row in await twilio.history()] == ["hello", "with the port"]


async def test_the_answer_is_an_empty_twiml_response(tmp_path: Path, sqlite_url: str) -> None:
    async with running(tmp_path, sqlite_url) as twilio:
        body, headers = twilio.fake.inbound_text(USER, "hi")
        headers.update(twilio.fake.sign(twilio.fake.webhook_url(), body, headers))
        async with twilio.http.post(twilio.fake.webhook_url(), data=body, headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/xml")
            assert await response.text() == '<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def test_behind_a_trusted_proxy_the_forwarded_url_is_the_one_signed(tmp_path: Path, sqlite_url: str) -> None:
    async with running(tmp_path, sqlite_url, trusted_proxies=["127.0.0.1"]) as twilio:
        through = f"{twilio.proxy.url}/hub/webhooks/main"
        body, _ = twilio.fake.inbound_text(USER, "via the proxy")
        public = "https://proxy.example.org/hub/webhooks/main"
        assert (await twilio.post(body, signed(twilio.fake, public, body), url=through)).status == 200
        # The proxy's own address is not the URL Twilio called.
        other, _ = twilio.fake.inbound_text(USER, "wrong url")
        assert (await twilio.post(other, signed(twilio.fake, through, other), url=through)).status == 401
        assert [row["body"]["text"]["body"] for row in await twilio.history()] == ["via the proxy"]


async def test_forwarding_headers_of_an_untrusted_peer_are_not_believed(tmp_path: Path, sqlite_url: str) -> None:
    async with running(tmp_path, sqlite_url) as twilio:
        through = f"{twilio.proxy.url}/hub/webhooks/main"
        body, _ = twilio.fake.inbound_text(USER, "claims another host")
        forged = signed(twilio.fake, "https://proxy.example.org/hub/webhooks/main", body)
        assert (await twilio.post(body, forged, url=through)).status == 401
        # Only the URL the daemon saw itself counts.
        seen = signed(twilio.fake, f"{twilio.daemon.url}/webhooks/main", body)
        assert (await twilio.post(body, seen, url=through)).status == 200


async def test_a_forged_changed_or_missing_signature_is_401_and_nothing_is_stored(
    tmp_path: Path, sqlite_url: str
) -> None:
    async with running(tmp_path, sqlite_url, public_base_url=PUBLIC) as twilio:
        body, _ = twilio.fake.inbound_text(USER, "pay 10")
        headers = signed(twilio.fake, f"{PUBLIC}/webhooks/main", body)
        changed = body.replace(b"pay+10", b"pay+99")
        added = body + b"&Extra=1"
        missing = {"Content-Type": "application/x-www-form-urlencoded"}
        forged = {**missing, "X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}
        for candidate, candidate_headers in ((changed, headers), (added, headers), (body, missing), (body, forged)):
            response = await twilio.post(candidate, candidate_headers)
            assert response.status == 401
        assert await twilio.daemon.hub.storage.inbox_depth() == (0, 0.0)
        assert await twilio.daemon.hub.storage.messages.history("main", USER) == []


async def test_an_inbound_file_is_fetched_with_the_accounts_credentials_and_served(
    tmp_path: Path, sqlite_url: str
) -> None:
    photo = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4096
    async with running(tmp_path, sqlite_url) as twilio:
        body, headers = twilio.fake.inbound_media(USER, photo, "image/jpeg", caption="receipt")
        media_url = dict(parse_qsl(body.decode()))["MediaUrl0"]
        async with twilio.http.get(media_url) as response:  # without credentials: refused
            assert response.status == 401 and (await response.json())["code"] == 20003
        assert (await twilio.fake.send_webhook(body, headers)).status == 200

        async def downloaded() -> dict[str, Any] | None:
            rows = await twilio.history()
            return rows[0] if rows and "wahub_media" in rows[0]["body"]["image"] else None

        row = await wait_until(downloaded, within=15)
        kept = row["body"]["image"]["wahub_media"]
        assert kept["sha256"] == hashlib.sha256(photo).hexdigest() and kept["size"] == len(photo)
        assert row["body"]["image"]["caption"] == "receipt"
        assert any(call.startswith("GET /cdn/") for call in twilio.fake.calls)
        async with twilio.http.get(f"{twilio.daemon.url}{kept['url']}", headers=AUTH) as response:
            assert response.status == 200 and await response.read() == photo


async def test_a_file_url_off_twilios_api_is_not_fetched(tmp_path: Path, sqlite_url: str) -> None:
    async with running(tmp_path, sqlite_url) as twilio:
        elsewhere = {"NumMedia": "1", "MediaUrl0": "https://elsewhere.example/x.jpg", "MediaContentType0": "image/jpeg"}
        body, headers = twilio.fake.inbound_form(USER, MessageType="image", **elsewhere)
        assert (await twilio.fake.send_webhook(body, headers)).status == 200

        async def noted() -> dict[str, Any] | None:
            rows = await twilio.history()
            return rows[0] if rows and "wahub_media" in rows[0]["body"]["image"] else None

        row = await wait_until(noted, within=15)
        assert "not on Twilio's API" in row["body"]["image"]["wahub_media"]["error"]


async def test_a_local_file_is_fetched_by_twilio_through_a_signed_public_url(tmp_path: Path, sqlite_url: str) -> None:
    async with running(tmp_path, sqlite_url, public_base_url="{proxy}/hub") as twilio:
        assert await twilio.fake.send_inbound(USER, "send me the terms") == 200
        await twilio.history()
        form = aiohttp.FormData()
        form.add_field("file", b"%PDF-1.4 terms", filename="terms.pdf", content_type="application/pdf")
        async with twilio.http.post(f"{twilio.daemon.url}/api/v1/media", data=form, headers=AUTH) as response:
            uploaded = await response.json()
            assert response.status == 201, uploaded
        answer = await twilio.send({"to": USER, "type": "document", "document": {"id": uploaded["id"]}})
        # Twilio's status callbacks come to the public URL, signed for it.
        await twilio.status_becomes(answer["id"], "read")
        [sent] = [s for s in twilio.fake.sent if s.kind == "document"]
        [(url, status, data)] = twilio.fake.fetched
        assert url.startswith(f"{twilio.proxy.url}/hub/media/public/") and (status, data) == (200, b"%PDF-1.4 terms")
        assert sent.body["MediaUrl"] == [url]
        assert sent.body["StatusCallback"] == f"{twilio.proxy.url}/hub/webhooks/main"


async def test_a_refused_credential_pauses_the_provider(tmp_path: Path, sqlite_url: str) -> None:
    async with running(tmp_path, sqlite_url) as twilio:
        assert await twilio.fake.send_inbound(USER, "hi") == 200
        await twilio.history()
        twilio.fake.refuse_next("20003", status=401)
        answer = await twilio.send({"to": USER, "type": "text", "text": {"body": "x"}})

        async def paused() -> dict[str, Any] | None:
            async with twilio.http.get(f"{twilio.daemon.url}/readyz") as response:
                body: dict[str, Any] = await response.json()
                return body if response.status == 503 else None

        assert "main" in (await wait_until(paused))["paused"]
        assert not [s for s in twilio.fake.sent if s.text == "x"]
        assert answer["id"]


async def test_the_senders_rate_limit_is_retried(tmp_path: Path, sqlite_url: str) -> None:
    async with running(tmp_path, sqlite_url) as twilio:
        assert await twilio.fake.send_inbound(USER, "hi") == 200
        await twilio.history()
        twilio.fake.refuse_next("63018", status=429, times=2)
        answer = await twilio.send({"to": USER, "type": "text", "text": {"body": "after the limit"}})
        await twilio.status_becomes(answer["id"], "sent", "delivered", "read")
        assert [s.text for s in twilio.fake.sent] == ["after the limit"]
        posts = [call for call in twilio.fake.calls if call.startswith("POST /2010-04-01/")]
        assert len(posts) == 3


async def test_an_api_key_sends_and_the_auth_token_still_checks_webhooks(tmp_path: Path, sqlite_url: str) -> None:
    key, secret = next(iter(FakeTwilio().api_keys.items()))
    async with running(tmp_path, sqlite_url, api_key_sid=key, api_key_secret=secret) as twilio:
        assert await twilio.fake.send_inbound(USER, "hi") == 200
        await twilio.history()
        answer = await twilio.send({"to": USER, "type": "text", "text": {"body": "by key"}})
        await twilio.status_becomes(answer["id"], "read")
        assert [s.text for s in twilio.fake.sent] == ["by key"]


async def test_a_messaging_service_sends_and_a_location_is_a_geo_action(tmp_path: Path, sqlite_url: str) -> None:
    service = FakeTwilio().messaging_service_sid
    async with running(tmp_path, sqlite_url, messaging_service_sid=service, **{"from": None}) as twilio:
        assert await twilio.fake.send_inbound(USER, "where are you?") == 200
        await twilio.history()
        location = {"latitude": 52.52, "longitude": 13.405, "name": "Shop", "address": "Main St 1"}
        answer = await twilio.send({"to": USER, "type": "location", "location": location})
        await twilio.status_becomes(answer["id"], "read")
        [sent] = twilio.fake.sent
        assert sent.kind == "location" and sent.body["MessagingServiceSid"] == service and "From" not in sent.body
        assert sent.body["PersistentAction"] == "geo:52.52,13.405|Shop"


async def test_buttons_and_lists_go_as_session_content_made_once(tmp_path: Path, sqlite_url: str) -> None:
    async with running(tmp_path, sqlite_url) as twilio:
        assert await twilio.fake.send_inbound(USER, "menu") == 200
        await twilio.history()
        buttons = [{"type": "reply", "reply": {"id": i, "title": t}} for i, t in (("y", "Yes"), ("n", "No"))]
        confirm = {
            "type": "button",
            "header": {"type": "text", "text": "Order 42"},
            "body": {"text": "Confirm?"},
            "action": {"buttons": buttons},
        }
        rows = [{"id": "r1", "title": "Bread", "description": "Fresh"}, {"id": "r2", "title": "Cake"}]
        menu = {"type": "list", "body": {"text": "Pick"}, "action": {"button": "Menu", "sections": [{"rows": rows}]}}
        ids = []
        for interactive in (confirm, confirm, menu):
            answer = await twilio.send({"to": USER, "type": "interactive", "interactive": interactive})
            ids.append(answer["id"])
        for message_id in ids:
            await twilio.status_becomes(message_id, "read")
        sent = twilio.fake.sent
        assert [(s.kind, s.text) for s in sent] == [
            ("interactive", "Order 42\n\nConfirm?"),
            ("interactive", "Order 42\n\nConfirm?"),
            ("interactive", "Pick"),
        ]
        # The same message reuses its content resource: two resources for three sends.
        assert sent[0].body["ContentSid"] == sent[1].body["ContentSid"] != sent[2].body["ContentSid"]
        contents = twilio.fake.content.contents
        assert len(contents) == 2
        assert contents[sent[0].body["ContentSid"]]["types"]["twilio/quick-reply"]["actions"] == [
            {"title": "Yes", "id": "y"},
            {"title": "No", "id": "n"},
        ]
        assert contents[sent[2].body["ContentSid"]]["types"]["twilio/list-picker"] == {
            "body": "Pick",
            "button": "Menu",
            "items": [{"item": "Bread", "id": "r1", "description": "Fresh"}, {"item": "Cake", "id": "r2"}],
        }
