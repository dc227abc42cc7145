"""A fake of Infobip's WhatsApp API for tests (``FakeInfobip``, a ``FakeBSP``).

It answers as Infobip does: every request must carry ``Authorization: App
<api_key>`` (else 401 ``UNAUTHORIZED``), message bodies are checked per
endpoint (``wahub.testing.fake_infobip_checks``; a problem is a 400
``BAD_REQUEST`` naming the property), sends answer ``{to, messageCount,
messageId, status}`` (templates inside ``messages``), media files sent by URL
are fetched as Infobip fetches them, inbound files are served behind the key,
and templates are listed, created and deleted under
``/whatsapp/2/senders/{sender}/templates``. Webhooks (inbound messages,
delivery and seen reports) go to the daemon with the credential the entry
expects: HTTP Basic, or a secret header when ``webhook_header`` is set.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from wahub.core.provider import secret_matches
from wahub.testing.fake_bsp import FakeBSP, Sent
from wahub.testing.fake_infobip_checks import (
    CONTENT_CHECKS,
    envelope_problem,
    error_body,
    structure_problem,
    template_problem,
)

API_KEY = "infobip-fake-key-0123456789"
SENDER = "447860099299"
WEBHOOK_USER = "wahub"
WEBHOOK_PASSWORD = "infobip-webhook-password-0123"
_PENDING = {
    "groupId": 1,
    "groupName": "PENDING",
    "id": 7,
    "name": "PENDING_ENROUTE",
    "description": "Message sent to next instance",
}
_DELIVERED = {
    "groupId": 3,
    "groupName": "DELIVERED",
    "id": 5,
    "name": "DELIVERED_TO_HANDSET",
    "description": "Message delivered to handset",
}
_UNDELIVERABLE = {
    "groupId": 2,
    "groupName": "UNDELIVERABLE",
    "id": 9,
    "name": "UNDELIVERABLE_NOT_DELIVERED",
    "description": "Message sent not delivered",
}
_NO_ERROR = {
    "groupId": 0,
    "groupName": "OK",
    "id": 0,
    "name": "NO_ERROR",
    "description": "No Error",
    "permanent": False,
}


def infobip_time(at: float | None = None) -> str:
    """A time as Infobip writes it: ``2025-01-01T10:10:00.000+0000``."""
    moment = time.gmtime(time.time() if at is None else at)
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", moment)


@dataclass
class FakeInfobip(FakeBSP):
    platform = "infobip"
    undeliverable_code = "EC_UNKNOWN_SUBSCRIBER"
    # Infobip signs nothing: its webhooks carry a credential, not a signature of the body.
    signs_body = False

    api_key: str = API_KEY
    sender: str = SENDER
    webhook_username: str = WEBHOOK_USER
    webhook_password: str = WEBHOOK_PASSWORD
    #: Protect webhooks with this header (and ``webhook_secret``) instead of Basic credentials.
    webhook_header: str | None = None
    webhook_secret: str = "infobip-webhook-secret-0123"
    #: Inbound files served at /whatsapp/1/senders/{sender}/media/{id}: id -> (bytes, content type).
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    #: Files the fake fetched from the URLs it was given: URL -> (HTTP status, bytes).
    fetched: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    #: The sender's templates as Infobip lists them, by name and language.
    templates: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/whatsapp/1/message/template", self._send_template),
            web.post("/whatsapp/1/message/{kind:.+}", self._send),
            web.get("/whatsapp/1/senders/{sender}/media/{media_id}", self._media),
            web.get("/whatsapp/2/senders/{sender}/templates", self._list_templates),
            web.post("/whatsapp/2/senders/{sender}/templates", self._create_template),
            web.delete("/whatsapp/2/senders/{sender}/templates/{name}", self._delete_template),
        ]

    def provider_entry(self, name: str = "main", **extra: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "platform": "infobip",
            "name": name,
            "base_url": self.url,
            "api_key": self.api_key,
            "sender": self.sender,
        }
        if self.webhook_header:
            entry.update(webhook_header=self.webhook_header, webhook_secret=self.webhook_secret)
        else:
            entry.update(webhook_username=self.webhook_username, webhook_password=self.webhook_password)
        return {**entry, **extra}

    # -- webhooks ---------------------------------------------------------------

    def sign(self, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        """Infobip signs nothing: it sends the credential set on the webhook with every call."""
        if self.webhook_header:
            return {self.webhook_header: self.webhook_secret}
        token = base64.b64encode(f"{self.webhook_username}:{self.webhook_password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def inbound(
        self, user: str, message: dict[str, Any], *, profile: str = "Ana", **extra: Any
    ) -> tuple[bytes, dict[str, str]]:
        """A user's message of any type (Infobip's ``message`` object) as the inbound webhook."""
        result = {
            "from": user,
            "to": self.sender,
            "integrationType": "WHATSAPP",
            "receivedAt": infobip_time(),
            "messageId": f"wamid.{uuid.uuid4().hex}",
            "pairedMessageId": None,
            "callbackData": None,
            "message": message,
            "contact": {"name": profile},
            "price": {"pricePerMessage": 0, "currency": "EUR"},
            **extra,
        }
        body = {"results": [result], "messageCount": 1, "pendingMessageCount": 0}
        return json.dumps(body).encode(), {"Content-Type": "application/json"}

    def inbound_text(self, user: str, text: str, *, profile: str = "Ana") -> tuple[bytes, dict[str, str]]:
        return self.inbound(user, {"type": "TEXT", "text": text}, profile=profile)

    def add_media(self, data: bytes, content_type: str) -> str:
        """Keep a user's file; returns its URL as Infobip gives it in the inbound webhook."""
        media_id = uuid.uuid4().hex
        self.media[media_id] = (data, content_type)
        return f"{self.url}/whatsapp/1/senders/{self.sender}/media/{media_id}"

    def status_webhook(self, sent: Sent, status: str, *, error: str | None = None) -> tuple[bytes, dict[str, str]]:
        now = infobip_time()
        if status == "read":
            result: dict[str, Any] = {
                "messageId": sent.provider_id,
                "from": self.sender,
                "to": sent.to,
                "sentAt": now,
                "seenAt": now,
            }
        else:
            report_error = dict(_NO_ERROR)
            if status == "failed":
                report_error = {
                    "groupId": 1,
                    "groupName": "HANDSET_ERRORS",
                    "id": 1,
                    "name": error or self.undeliverable_code,
                    "description": "The number is not on WhatsApp",
                    "permanent": True,
                }
            result = {
                "bulkId": None,
                "messageId": sent.provider_id,
                "to": sent.to,
                "sentAt": now,
                "doneAt": now,
                "messageCount": 1,
                "price": {"pricePerMessage": 0, "currency": "EUR"},
                "status": _UNDELIVERABLE if status == "failed" else _DELIVERED if status == "delivered" else _PENDING,
                "error": report_error,
                "callbackData": None,
            }
        return json.dumps({"results": [result]}).encode(), {"Content-Type": "application/json"}

    def error_answer(self, status: int, code: str | None) -> web.Response:
        return error_body(status, code)

    # -- the API ----------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return secret_matches(request.headers.get("Authorization", ""), f"App {self.api_key}")

    async def _json(self, request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None

    async def _send(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return error_body(401)
        kind = request.match_info["kind"]
        if kind not in CONTENT_CHECKS:
            return error_body(404, text=f"no endpoint /whatsapp/1/message/{kind}")
        body = await self._json(request)
        canonical, check = CONTENT_CHECKS[kind]
        problem = envelope_problem(body, self.sender) or check(body["content"])
        if problem:
            return error_body(400, text=problem)
        content = body["content"]
        await self._fetch_media(content)
        text = content.get("text") or content.get("caption") or (content.get("body") or {}).get("text") or ""
        return self._accept(body, canonical, str(text))

    async def _send_template(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return error_body(401)
        body = await self._json(request)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return error_body(400, text="messages: must not be empty")
        answers = []
        for index, message in enumerate(messages):
            problem = envelope_problem(message, self.sender) or template_problem(message["content"])
            if problem:
                return error_body(400, text=f"messages[{index}].{problem}")
            header = message["content"]["templateData"].get("header")
            if isinstance(header, dict):
                await self._fetch_media(header)
            answers.append(self._accepted_json(message, "template", f"[template {message['content']['templateName']}]"))
        return web.json_response({"messages": answers, "bulkId": f"bulk-{uuid.uuid4().hex[:12]}"})

    def _accept(self, body: dict[str, Any], kind: str, text: str) -> web.Response:
        return web.json_response(self._accepted_json(body, kind, text))

    def _accepted_json(self, body: dict[str, Any], kind: str, text: str) -> dict[str, Any]:
        message_id = str(uuid.uuid4())
        self.accepted(Sent(message_id, body["to"], kind, text, body))
        return {"to": body["to"], "messageCount": 1, "messageId": message_id, "status": _PENDING}

    async def _fetch_media(self, content: dict[str, Any]) -> None:
        """Fetch a file given by URL, as Infobip does before passing it to WhatsApp."""
        url = content.get("mediaUrl")
        if not isinstance(url, str) or self._http is None:
            return
        async with self._http.get(url) as response:
            self.fetched[url] = (response.status, await response.read())

    async def _media(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return error_body(401)
        found = self.media.get(request.match_info["media_id"])
        if request.match_info["sender"] != self.sender or found is None:
            return error_body(404, text="media not found")
        return web.Response(body=found[0], content_type=found[1])

    async def _list_templates(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return error_body(401)
        if request.match_info["sender"] != self.sender:
            return error_body(404, text="sender not found")
        return web.json_response({"templates": list(self.templates.values())})

    async def _create_template(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return error_body(401)
        body = await self._json(request)
        problem = structure_problem(body)
        if problem:
            return error_body(400, text=problem)
        key = (body["name"], body["language"])
        if key in self.templates:
            return error_body(400, text=f"template {body['name']} already exists in {body['language']}")
        template = {"id": str(uuid.uuid4().int)[:15], "businessAccountId": 100, **body, "status": "PENDING"}
        self.templates[key] = template
        return web.json_response(template)

    async def _delete_template(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return error_body(401)
        name = request.match_info["name"]
        found = [key for key in self.templates if key[0] == name]
        if not found:
            return error_body(404, text=f"template {name} not found")
        for key in found:
            del self.templates[key]
        return web.Response(status=204)
