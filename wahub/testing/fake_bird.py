"""A fake of Bird's Channels API and its Notifications webhooks, for tests
(``FakeBSP``): sends on ``/workspaces/{ws}/channels/{ch}/messages`` checked
for ``Authorization: AccessKey <key>`` (401 ``Unauthorized`` otherwise), their
bodies validated (400 ``InvalidPayload`` with the problems in ``details``),
files by URL fetched as Bird fetches them, answered 202 with the accepted
message; webhooks (``whatsapp.inbound``, ``whatsapp.outbound``) signed with
``messagebird-signature`` over the URL they are posted to; inbound files
served behind the access key."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from wahub.plugins.providers.bird.signature import signature_headers
from wahub.testing.fake_bird_bodies import body_problems, canonical_kind
from wahub.testing.fake_bsp import FakeBSP, Sent

#: Bird's status words for the shared ones ``post_status`` is asked for.
BIRD_STATUS = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "delivery_failed"}
#: Bird's error token for an HTTP status, when a fault names no code.
GENERIC_TOKENS = {
    400: "InvalidPayload",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
JSON = {"Content-Type": "application/json"}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class FakeBird(FakeBSP):
    """Bird's API for one workspace and WhatsApp channel."""

    platform: ClassVar[str] = "bird"
    undeliverable_code: ClassVar[str] = "131026"
    workspace_id: str = "2d7f1d2c-5b7e-4c51-9c35-1f4b5e6a7b8c"
    channel_id: str = "8a3c9f10-4e21-4b9a-a0c2-7d5e6f708192"
    access_key: str = "bird-access-key-0123456789"
    signing_key: str = "bird-signing-key-0123456789"
    #: Files sent by URL, as the fake fetched them: URL -> (status, bytes).
    fetched: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/workspaces/{workspace}/channels/{channel}/messages", self._send),
            web.get("/workspaces/{workspace}/media/{media}", self._serve_media),
        ]

    def provider_entry(self, name: str = "main", **extra: Any) -> dict[str, Any]:
        return {
            "platform": "bird",
            "name": name,
            "workspace_id": self.workspace_id,
            "channel_id": self.channel_id,
            "access_key": self.access_key,
            "signing_key": self.signing_key,
            "api_base": self.url,
            **extra,
        }

    # -- the API -------------------------------------------------------------

    def _refused(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"AccessKey {self.access_key}":
            return self.error_answer(401, "Unauthorized")
        if request.match_info["workspace"] != self.workspace_id:
            return self.error_answer(404, "NotFound")
        return None

    async def _send(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if request.match_info["channel"] != self.channel_id:
            return self.error_answer(404, "NotFound")
        try:
            data = json.loads(await request.read())
        except ValueError:
            return self.error_answer(400, "InvalidPayload", details={"body": ["is not JSON"]})
        problems = body_problems(data)
        if not problems:
            problems = await self._fetch_media(data)
        if problems:
            return self.error_answer(400, "InvalidPayload", details={"problems": problems})
        message_id = str(uuid.uuid4())
        kind, text = canonical_kind(data)
        phone = data["receiver"]["contacts"][0]["identifierValue"]
        self.accepted(Sent(message_id, phone.removeprefix("+"), kind, text, data), self._attached_name())
        answer = {
            "id": message_id,
            "channelId": self.channel_id,
            "receiver": data["receiver"],
            "status": "accepted",
            "direction": "outgoing",
            "createdAt": _now_iso(),
            "updatedAt": _now_iso(),
            **({"body": data["body"]} if "body" in data else {"template": data["template"]}),
        }
        return web.json_response(answer, status=202)

    def _attached_name(self) -> str:
        return next(iter(self._webhook_urls), "main")

    async def _fetch_media(self, data: dict[str, Any]) -> list[str]:
        """Fetch a file sent by URL as Bird does before accepting it."""
        body = data.get("body") or {}
        inner = body.get(body.get("type")) or {}
        items = inner.get("images") or inner.get("files") or []
        assert self._http is not None
        for item in items:
            url = item["mediaUrl"]
            try:
                async with self._http.get(url) as response:
                    self.fetched[url] = (response.status, await response.read())
            except aiohttp.ClientError as exc:
                return [f"mediaUrl {url} could not be fetched: {exc}"]
            if self.fetched[url][0] != 200:
                return [f"mediaUrl {url} answered HTTP {self.fetched[url][0]}"]
        return []

    async def _serve_media(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        found = self._media.get(request.match_info["media"])
        if found is None:
            return self.error_answer(404, "NotFound")
        return web.Response(body=found[0], content_type=found[1])

    def add_media(self, data: bytes, mime_type: str) -> str:
        """Keep an inbound file; its ``mediaUrl``, served behind the access key."""
        media_id = str(uuid.uuid4())
        self._media[media_id] = (data, mime_type)
        return f"{self.url}/workspaces/{self.workspace_id}/media/{media_id}"

    def error_answer(self, status: int, code: str | None, *, details: dict[str, Any] | None = None) -> web.Response:
        token = code or GENERIC_TOKENS.get(status, "InternalServerError" if status >= 500 else "InvalidPayload")
        body: dict[str, Any] = {"code": token, "message": f"{token}: the request was refused"}
        if details:
            body["details"] = details
        return web.json_response(body, status=status)

    # -- webhooks ------------------------------------------------------------

    def sign(self, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        return signature_headers(self.signing_key, url, body, now=time.time())

    def inbound(
        self,
        user: str,
        body: dict[str, Any],
        *,
        profile: str | None = "Ana",
        bsuid: str | None = None,
        reply_to: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """A ``whatsapp.inbound`` webhook of the user's message ``body`` (Bird's shape)."""
        contact: dict[str, Any] = {"id": str(uuid.uuid4()), "identifierKey": "phonenumber"}
        contact["identifierValue"] = f"+{user}"
        if profile is not None:
            contact["annotations"] = {"name": profile}
        payload: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "channelId": self.channel_id,
            "sender": {"contact": contact},
            "receiver": {"connector": {"id": str(uuid.uuid4()), "identifierValue": "+15550100000"}},
            "body": body,
            "parts": [{"platformReference": f"wamid.FAKE{next(self._numbers):012d}"}],
            "status": "delivered",
            "direction": "incoming",
            "createdAt": _now_iso(),
            "updatedAt": _now_iso(),
        }
        if bsuid is not None:
            payload["meta"] = {"extraInformation": {"whatsappbsuid": bsuid}}
        if reply_to is not None:
            payload["replyTo"] = {"id": reply_to, "type": "message"}
        return self._event("whatsapp.inbound", payload)

    def inbound_text(self, user: str, text: str, *, profile: str = "Ana") -> tuple[bytes, dict[str, str]]:
        return self.inbound(user, {"type": "text", "text": {"text": text}}, profile=profile)

    def status_webhook(self, sent: Sent, status: str, *, error: str | None = None) -> tuple[bytes, dict[str, str]]:
        said = BIRD_STATUS.get(status, status)
        payload: dict[str, Any] = {
            "id": sent.provider_id,
            "channelId": self.channel_id,
            "receiver": {"contacts": [{"identifierKey": "phonenumber", "identifierValue": f"+{sent.to}"}]},
            "status": said,
            "direction": "outgoing",
            "parts": [{"platformReference": f"wamid.OUT{sent.provider_id.replace('-', '')}"}],
            "lastStatusAt": _now_iso(),
        }
        if error is not None:
            payload["reason"] = "the message could not be delivered"
            payload["failure"] = {"code": 4, "description": payload["reason"], "source": {"code": error}}
        return self._event("whatsapp.outbound", payload)

    def _event(self, event: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        body = json.dumps({"service": "channels", "event": event, "payload": payload}).encode()
        return body, dict(JSON)
