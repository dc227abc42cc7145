"""The sandbox provider: a simulated WhatsApp user side inside the daemon.

A person chats at ``/sandbox`` (or with ``wahub chat``) as a WhatsApp user.
What they type is posted, signed, to this provider's own webhook URL over
HTTP, so it takes exactly the path a real provider's webhook takes; the bot's
replies leave through the outbox and arrive here through ``send``. Receipts
from the page ("received", "seen") come back as signed status webhooks.

Webhook body::

    {"object": "wahub_sandbox", "business_number": "15550000000",
     "events": [{"type": "message", "id": "sbx.in.<id>", "from": "15551234567",
                 "name": "Alice", "timestamp": 1764000000,
                 "message": {"type": "text", "text": {"body": "hi"}}},
                {"type": "status", "id": "<event id>", "message_id": "sbx.out.<id>",
                 "recipient": "15551234567", "status": "delivered", "timestamp": 1764000001},
                {"type": "status", ..., "status": "failed", "errors": [{"code": 131047, "title": "..."}]},
                {"type": "echo", "id": "sbx.echo.<id>", "to": "15551234567", "timestamp": 1764000003,
                 "message": {"type": "text", "text": {"body": "sent from the phone"}}},
                {"type": "preference", "id": "<event id>", "user": "15551234567",
                 "category": "marketing_messages", "value": "stop", "timestamp": 1764000002}]}

signed with ``X-Wahub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.

The chat socket ``/sandbox/ws?user=<digits>&name=<name>`` first sends
``{"type": "history", "messages": [...]}``, then ``message``, ``status`` and
``error`` frames. The client sends ``text`` and ``button`` frames and the
``received`` / ``seen`` receipts. A receipt becomes a status webhook after the
provider's ``delivered_after`` / ``read_after`` seconds (a read never before
its delivered), so the ticks move as a person would see them. An ``echo`` frame (``{"type": "echo", "text":
...}``) plays the business's other side: a person at the business answering
this user from the WhatsApp Business app on a number shared with the API
(coexistence). It is posted as an ``echo`` event and shown to the user as the
business's message, marked ``"from_phone": true``. A ``text``, ``button`` or
``echo`` frame may carry a ``"ref"`` (1 to 64 characters) of the client's
choosing: once the message is stored the sender gets ``{"type": "accepted",
"ref": ..., "id": "sbx.in.<id>"}`` (``sbx.echo.<id>`` for an echo), and an
``error`` about it carries the same ``ref``.

A reply that waits in the outbox (pacing, a retry) is shown at once: the
history gives a queued message a ``"pending": {"reason": "pair rate limit",
"retry_in": 4.0}``, and while the chat is open ``{"type": "pending", "message":
...}`` frames add or update such replies. Once sent, the reply comes as a
``message`` frame with ``"replaces": "wahub.<id>"`` (the pending one's id); a
pending reply that failed or went another way comes as ``{"type": "settled",
"id": "wahub.<id>", "message": ...}`` (``null``: it is gone). A failed message
carries its reason as ``"error"`` (see ``wahub.plugins.providers.sandbox.pending``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import voluptuous as vol
from aiohttp import WSMsgType, web

from wahub import hookimpl
from wahub.core.canonical.fit import Capabilities
from wahub.core.config.validators import seconds_between
from wahub.core.errors import ErrorMeaning, ProviderError, WebhookError
from wahub.core.hub import Hub
from wahub.core.models import Event, OutgoingMessage, SendResult, StatusEvent
from wahub.core.provider import (
    PROVIDER_SCHEMA_BASE,
    Provider,
    sign_body,
    signature_matches,
)
from wahub.plugins.providers.cloud.errors import classify_cloud_error
from wahub.plugins.providers.sandbox.frames import (
    echo_event,
    frame_message,
    receipt_events,
    refusal,
    shown_event,
    text_problem,
    valid_ref,
)
from wahub.plugins.providers.sandbox.hosts import check_host
from wahub.plugins.providers.sandbox.pending import PendingReplies
from wahub.plugins.providers.sandbox.receipts import DelayedReceipts
from wahub.plugins.providers.sandbox.render import Shown, render
from wahub.plugins.providers.sandbox.templates import SandboxAccount
from wahub.plugins.providers.sandbox.webhook import parse_events as parse_events

_LOGGER = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Wahub-Signature-256"
WEB_DIR = Path(__file__).resolve().parents[3] / "web" / "sandbox"
SHARED_DIR = WEB_DIR.parent / "shared"
_USER_RE = re.compile(r"^\d{6,15}$")
#: The files the chat page loads from ``/sandbox/static/``, and where each is.
STATIC_FILES = {
    "sandbox.css": WEB_DIR / "sandbox.css",
    "sandbox.js": WEB_DIR / "sandbox.js",
    "whatsapp.js": SHARED_DIR / "whatsapp.js",
    "ticks.js": SHARED_DIR / "ticks.js",
}


def signature_valid(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether ``headers`` carry ``body``'s signature, compared in constant time."""
    return signature_matches(secret, headers.get(SIGNATURE_HEADER, ""), body)


class SandboxProvider(SandboxAccount):
    PLATFORM = "sandbox"
    # The chat page shows text and reply buttons; other types arrive as their text fallback.
    CAPABILITIES = Capabilities(types=frozenset({"text", "interactive", "interactive.button", "template"}))
    CONFIG_SCHEMA = PROVIDER_SCHEMA_BASE.extend(
        {
            vol.Optional("secret"): vol.All(str, vol.Length(min=16, msg="use at least 16 characters")),
            vol.Optional("business_number", default="15550000000"): vol.All(
                vol.Coerce(str), vol.Match(_USER_RE, msg="digits only, 6 to 15 of them")
            ),
            # Host names the chat page answers to (name:port, or a name on any port).
            # Empty: the bind address, localhost, 127.0.0.1 and [::1], on any port.
            vol.Optional("hosts", default=list): [vol.All(str, vol.Length(min=1, max=261), vol.Lower)],
            # Seconds from a reply reaching the page to its delivered receipt, and
            # from it being shown to its read receipt: the ticks take visible time.
            vol.Optional("delivered_after", default=1.0): seconds_between(0, 60),
            vol.Optional("read_after", default=2.0): seconds_between(0, 60),
            # Simulated approved templates; {{1}} or {{name}} take the body parameters.
            vol.Optional("templates", default=list): [
                {
                    vol.Required("name"): vol.All(str, vol.Match(r"^[a-z0-9_]{1,512}$", msg="lowercase, digits and _")),
                    vol.Optional("language", default="en"): str,
                    vol.Optional("category", default="UTILITY"): vol.In(["MARKETING", "UTILITY", "AUTHENTICATION"]),
                    vol.Required("text"): vol.All(str, vol.Length(min=1, max=1024)),
                }
            ],
        }
    )

    def __init__(self, hub: Hub, config: Mapping[str, Any]) -> None:
        super().__init__(hub, config)
        # Without a configured secret the sandbox signs with a fresh one per run:
        # only this process ever posts to its webhook.
        self.secret: str = config.get("secret") or secrets.token_hex(32)
        self.business_number: str = config["business_number"]
        self.clients: defaultdict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self.pending = PendingReplies(hub, self.name, self.push)
        self.receipts = DelayedReceipts(self.post_webhook, config["delivered_after"], config["read_after"])

    # -- the provider contract ---------------------------------------------

    def classify_error(self, code: str | None, *, http_status: int | None = None) -> ErrorMeaning:
        """The sandbox speaks the Cloud API's error codes (a ``failed`` status with 131047...)."""
        return classify_cloud_error(code, http_status=http_status)

    def verify_signature(self, headers: Mapping[str, str], body: bytes) -> bool:
        return signature_valid(self.secret, headers, body)

    def parse_webhook(self, body: bytes) -> list[Event]:
        return parse_events(self.name, body)

    async def start(self) -> None:
        await self.store_configured_templates()
        await super().start()

    async def stop(self) -> None:
        await self.pending.stop()
        await self.receipts.stop()
        await super().stop()

    async def render_template(self, sent: Mapping[str, Any]) -> Shown:
        """A template message (Meta's send shape of ``template``) as the user reads it."""
        name, language = str(sent.get("name")), str((sent.get("language") or {}).get("code"))
        components = await self.template_components(name, language)
        if components is None:
            raise ProviderError(f"template {name!r} does not exist in that language ({language})", code="132001")
        return render(name, components, sent)

    async def shown_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A stored message body as the chat shows it: a template filled in, else as it is."""
        if body.get("type") != "template" or not isinstance(body.get("template"), dict):
            return body
        try:
            shown = await self.render_template(body["template"])
        except ProviderError:
            return body  # shown by its name; a failed send shows its own error
        return {"to": body.get("to"), **shown.body()}

    async def send(self, message: OutgoingMessage) -> SendResult:
        provider_id = f"sbx.out.{uuid.uuid4().hex}"
        shown = message
        if message.type == "template":  # a template that cannot be read fails before it counts as sent
            rendered = await self.render_template(message.content["template"])
            shown = OutgoingMessage.from_json({"to": message.to, **rendered.body()})
        replaces = self.pending.sent(message, provider_id)
        row = {
            "body": shown.to_json(),
            "provider_message_id": provider_id,
            "direction": "out",
            "status": "sent",
            "created_at": time.time(),
        }
        frame: dict[str, Any] = {"type": "message", "message": frame_message(row)}
        if replaces is not None:
            frame["replaces"] = replaces
        await self.push(message.to, frame)
        return SendResult(provider_id)

    # -- the simulated user side -------------------------------------------

    async def push(self, user: str, frame: dict[str, Any]) -> None:
        for ws in list(self.clients.get(user, ())):
            if not ws.closed:
                try:
                    await ws.send_json(frame)
                except (ConnectionError, RuntimeError):
                    # A closing page: it reloads the history when it reconnects.
                    self.clients[user].discard(ws)

    async def post_webhook(self, base_url: str, events: list[dict[str, Any]]) -> None:
        """Deliver ``events`` to this provider's webhook URL, signed, like a BSP would."""
        body = json.dumps(
            {"object": "wahub_sandbox", "business_number": self.business_number, "events": events}
        ).encode()
        headers = {SIGNATURE_HEADER: sign_body(self.secret, body), "Content-Type": "application/json"}
        async with self.hub.http.post(f"{base_url}/webhooks/{self.name}", data=body, headers=headers) as response:
            if response.status != 200:
                raise WebhookError(f"the daemon answered {response.status}: {await response.text()}")
            answer = await response.json()
            if answer.get("quarantined"):
                raise WebhookError("wahub could not store it; the reason is in the daemon's log")

    def connected_users(self) -> set[str]:
        return {user for user, sockets in self.clients.items() if sockets}

    def user_event(self, user: str, name: str, frame: Mapping[str, Any]) -> dict[str, Any] | None:
        """The webhook event for what the person did on the page, or None if it makes no sense."""
        base = {
            "type": "message",
            "id": f"sbx.in.{uuid.uuid4().hex}",
            "from": user,
            "name": name,
            "timestamp": time.time(),
        }
        if frame.get("type") == "text" and text_problem(frame.get("text")) is None:
            return {**base, "message": {"type": "text", "text": {"body": frame["text"]}}}
        if frame.get("type") == "button" and frame.get("id"):
            reply = {
                "type": "button_reply",
                "button_reply": {"id": str(frame["id"]), "title": str(frame.get("title", ""))},
            }
            message: dict[str, Any] = {"type": "interactive", "interactive": reply}
            if frame.get("context"):
                message["context"] = {"id": str(frame["context"])}
            return {**base, "message": message}
        return None


def _sandbox_for(hub: Hub, request: web.Request) -> SandboxProvider:
    name = request.query.get("provider")
    for provider in hub.providers.values():
        if isinstance(provider, SandboxProvider) and (name is None or provider.name == name):
            return provider
    raise web.HTTPNotFound(text="no sandbox provider is configured")


def _loopback_url(request: web.Request) -> str:
    """The address this very connection reached, so the sandbox posts to its own daemon."""
    host, port = request.transport.get_extra_info("sockname")[:2] if request.transport else ("127.0.0.1", 8080)
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    return f"http://[{host}]:{port}" if ":" in host and not host.startswith("[") else f"http://{host}:{port}"


def _check_host(provider: SandboxProvider, request: web.Request) -> None:
    check_host(provider.config["hosts"], str(provider.hub.config["wahub"]["http"]["host"]), request)


async def _chat_socket(hub: Hub, request: web.Request) -> web.WebSocketResponse:
    provider = _sandbox_for(hub, request)
    _check_host(provider, request)
    user = request.query.get("user", "")
    if not _USER_RE.match(user):
        raise web.HTTPBadRequest(text="'user' must be the simulated phone number: 6 to 15 digits")
    name = request.query.get("name", "Sandbox user")[:64]
    ws = web.WebSocketResponse(heartbeat=30)
    try:
        await ws.prepare(request)
    except ConnectionResetError as exc:
        _LOGGER.debug("sandbox chat client left during the handshake: %s", exc)
        # Nobody is left to read it: an answer only ends the request without a traceback.
        raise web.HTTPBadRequest(text="the connection closed during the handshake") from exc
    provider.clients[user].add(ws)
    closer = asyncio.create_task(_close_on_shutdown(hub, ws))
    try:
        history = await hub.storage.messages.history(provider.name, user)
        now = hub.clock.time()
        shown = [{**row, "body": await provider.shown_body(row["body"])} for row in history]
        await _send(ws, {"type": "history", "messages": [provider.pending.shown_row(row, now) for row in shown]})
        provider.pending.watch(user, history, provider.connected_users)
        base_url = _loopback_url(request)
        # Frames that arrived before the person left are still theirs: they are delivered.
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    frame = json.loads(msg.data)
                except (ValueError, RecursionError):
                    await _send(ws, {"type": "error", "message": "frames are JSON objects"})
                    continue
                await _on_frame(provider, ws, base_url, user, name, frame)
    finally:
        closer.cancel()
        provider.clients[user].discard(ws)
    return ws


async def _send(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
    """Send ``frame`` to one chat client; a client that went away is told nothing more."""
    try:
        await ws.send_json(frame)
    except ConnectionResetError as exc:
        # Closing a tab or piping into `wahub chat` ends a chat at any moment: no fault.
        _LOGGER.debug("sandbox chat client left before a %r frame: %s", frame.get("type"), exc)


async def _close_on_shutdown(hub: Hub, ws: web.WebSocketResponse) -> None:
    await hub.shutting_down.wait()
    await ws.close(message=b"wahub is shutting down")


async def _on_frame(
    provider: SandboxProvider, ws: web.WebSocketResponse, base_url: str, user: str, name: str, frame: Any
) -> None:
    if not isinstance(frame, dict):
        await _send(ws, {"type": "error", "message": "frames are JSON objects"})
        return
    ref = frame.get("ref")
    # The reference a client gave its message comes back with the answer about it.
    answer: dict[str, Any] = {} if ref is None else {"ref": ref}
    if ref is not None and not valid_ref(ref):
        await _send(ws, {"type": "error", "message": "'ref' must be a string of 1 to 64 characters"})
        return
    try:
        if frame.get("type") in ("received", "seen"):
            await provider.receipts.post(base_url, receipt_events(user, frame))
            return
        event = echo_event(user, frame) if frame.get("type") == "echo" else provider.user_event(user, name, frame)
        if event is None:
            await _send(ws, {"type": "error", "message": refusal(frame), **answer})
            return
        await provider.post_webhook(base_url, [event])
        await provider.push(user, {"type": "message", "message": shown_event(event)})
        if ref is not None:
            await _send(ws, {"type": "accepted", "ref": ref, "id": event["id"]})
    except (WebhookError, OSError) as exc:
        _LOGGER.warning("sandbox could not deliver to its webhook: %s", exc)
        await _send(ws, {"type": "error", "message": f"not delivered: {exc}", **answer})


@hookimpl
def register_providers() -> Iterable[type[Provider]]:
    return [SandboxProvider]


@hookimpl
def register_routes(hub: Hub) -> list[web.AbstractRouteDef]:
    async def page(request: web.Request) -> web.FileResponse:
        _check_host(_sandbox_for(hub, request), request)
        return web.FileResponse(WEB_DIR / "index.html")

    async def static(request: web.Request) -> web.FileResponse:
        _check_host(_sandbox_for(hub, request), request)
        path = STATIC_FILES.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="no such file")
        return web.FileResponse(path)

    async def socket(request: web.Request) -> web.WebSocketResponse:
        return await _chat_socket(hub, request)

    return [
        web.get("/sandbox", page),
        web.get("/sandbox/ws", socket),
        web.get("/sandbox/static/{name}", static),
    ]


@hookimpl
async def status_update(hub: Hub, status: StatusEvent) -> None:
    provider = hub.providers.get(status.provider)
    if isinstance(provider, SandboxProvider) and status.recipient:
        frame = {"type": "status", "id": status.message_id, "status": status.status}
        if status.status == "failed" and status.error_title:
            frame["error"] = status.error_title
        await provider.push(status.recipient, frame)
