"""A fake of Meta's Graph API (WhatsApp Cloud API) and of 360dialog's hosted API,
on a real socket, for the tests of wahub and of provider plugins.

``FakeGraphServer`` answers message sends (validated against Meta's OpenAPI
document), mark-as-read and the typing indicator, media upload, URL, download
and delete, message templates, the business profile and the phone number. It
posts signed webhooks to a daemon: a user's messages (``send_inbound``), any
other change (``deliver``) and, after each accepted send, ``sent`` and
``delivered`` statuses. ``fail_next`` makes the next calls fail with a Graph
error, ``fail_later`` the next message in its status webhook; ``accepts_bsuids``
False refuses BSUID recipients (131062), ``hold_listings`` keeps template
listings waiting; created and edited templates are PENDING (in review) unless
``approve_templates`` approves them at once. Everything is recorded (``listings`` counts template
listings). Use it from a test::

    graph = await FakeGraphServer().start()      # or FakeGraphServer(platform="dialog360")
    config = build_config({"providers": [graph.provider_entry()]}, database=url, pm=pm)
    async with running_daemon(config, pm=pm) as daemon:
        graph.attach(daemon.url)                 # webhooks go to {daemon.url}/webhooks/main
        await graph.send_inbound({"type": "text", "text": {"body": "hi"}})
        ...                                      # the daemon sends through graph.url
        await graph.settle()                     # the status webhooks are in
        assert graph.messages and not graph.schema_errors
        graph.fail_next(131056, count=2)         # pair rate limit on the next two calls
    await graph.close()

Webhooks are signed as the platform does: ``meta_cloud`` sends
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body keyed with app_secret>``;
360dialog forwards Meta's payloads unsigned, so ``dialog360`` sends the header
``X-Wahub-Webhook-Secret: <webhook_secret>`` plus those registered with
``POST /v1/configs/webhook`` (whose URL then wins over ``attach``).

Meta's request bodies are checked by ``fake_graph_schema`` (``validate_message``,
``AMENDMENTS``), media by ``fake_graph_media``, templates and the business profile
by ``fake_graph_account``; the names are importable from here.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from wahub.core.provider import sign_body
from wahub.testing import close_fake, serve_on_loopback
from wahub.testing.fake_graph_account import AccountEndpoints
from wahub.testing.fake_graph_http import d360_error, graph_error, read_json, unsupported
from wahub.testing.fake_graph_media import MediaEndpoints, MediaItem
from wahub.testing.fake_graph_schema import AMENDMENTS, SPEC_PATH, read_problems, validate_message

__all__ = [
    "AMENDMENTS",
    "PLATFORMS",
    "SPEC_PATH",
    "WEBHOOK_SECRET_HEADER",
    "FakeGraphServer",
    "MediaItem",
    "Recorded",
    "validate_message",
]

WEBHOOK_SECRET_HEADER = "X-Wahub-Webhook-Secret"
PLATFORMS = ("meta_cloud", "dialog360")


@dataclass
class Recorded:
    """One HTTP request as the fake received it (``json``: the parsed body, or None;
    ``raw`` is empty for a multipart upload, which streams to disk instead)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    raw: bytes


@dataclass
class _Fault:
    code: int
    http_status: int
    message: str
    details: str
    remaining: int


@dataclass
class FakeGraphServer(MediaEndpoints, AccountEndpoints):
    platform: str = "meta_cloud"
    access_token: str = "fake-graph-token-0123456789"
    api_key: str = "fake-d360-key-0123456789"
    app_secret: str = "fake-app-secret-0123456789"
    verify_token: str = "fake-verify-token"
    webhook_secret: str = "fake-webhook-secret-0123456789"
    phone_number_id: str = "106540352242922"
    display_phone_number: str = "15550783881"
    waba_id: str = "102290129340398"
    #: The Meta app, whose Resumable Upload API makes template header and profile picture handles.
    app_id: str = "1480000000000001"
    #: After each accepted send, post a ``sent`` then a ``delivered`` status webhook.
    auto_statuses: bool = True
    #: Serve media downloads chunked, without Content-Length (as a CDN may), instead of as a file.
    chunked_downloads: bool = False
    requests: list[Recorded] = field(default_factory=list)
    #: Accepted message bodies; ``reads``: accepted mark-as-read bodies.
    messages: list[dict[str, Any]] = field(default_factory=list)
    reads: list[dict[str, Any]] = field(default_factory=list)
    schema_errors: list[str] = field(default_factory=list)
    media: dict[str, MediaItem] = field(default_factory=dict)
    #: Files uploaded through the Resumable Upload API, by the handle it gave.
    handles: dict[str, MediaItem] = field(default_factory=dict)
    templates: list[dict[str, Any]] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    phone: dict[str, Any] = field(default_factory=dict)
    #: Status items the daemon took (answered 2xx), in order.
    statuses_sent: list[dict[str, Any]] = field(default_factory=list)
    #: False: refuse every send to a BSUID (``recipient``) with 131062, as Meta does
    #: for sends it does not allow by BSUID (authentication templates, some regions).
    accepts_bsuids: bool = True
    #: The wa_id a send's answer gives for the number sent to (digits), where WhatsApp's
    #: own form differs (a country's normalization); otherwise the number's digits.
    wa_ids: dict[str, str] = field(default_factory=dict)
    #: Template listings asked for (first pages; a listing of several pages counts once).
    listings: int = 0
    #: Approve created and edited templates at once, instead of leaving them PENDING (in review).
    approve_templates: bool = False
    #: dialog360: what ``POST /v1/configs/webhook`` set (``url``, ``headers``).
    webhook_config: dict[str, Any] = field(default_factory=dict)
    url: str = ""
    _uploads: dict[str, tuple[int, str]] = field(default_factory=dict)
    _faults: list[_Fault] = field(default_factory=list)
    _failures: list[tuple[int, str]] = field(default_factory=list)
    _listings_open: asyncio.Event = field(default_factory=asyncio.Event)
    _target: str | None = None
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _order: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Where uploaded and added files are kept; removed by ``close``.
    _files: Path | None = None

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ValueError(f"platform must be one of {PLATFORMS}, not {self.platform!r}")
        self._listings_open.set()
        blank = dict.fromkeys(("address", "description", "email", "profile_picture_url"), "")
        profile = {"about": "Hello from the fake Graph API", **blank, "websites": [], "vertical": "OTHER"}
        self.profile = profile | self.profile
        self.phone = {
            "id": self.phone_number_id,
            "display_phone_number": self.display_phone_number,
            "verified_name": "Wahub Test",
            "quality_rating": "GREEN",
            "whatsapp_business_manager_messaging_limit": "TIER_1K",
            "throughput": {"level": "STANDARD"},
        } | self.phone

    async def start(self) -> FakeGraphServer:
        @web.middleware
        async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._gate(request, handler)

        app = web.Application(middlewares=[gate], client_max_size=128 * 2**20)
        v = r"/{version:v\d+\.\d+}"
        phone, waba = (
            (f"{v}/{self.phone_number_id}", f"{v}/{self.waba_id}") if self.platform == "meta_cloud" else ("", "")
        )
        templates = f"{waba}/message_templates" if self.platform == "meta_cloud" else "/v1/configs/templates"
        for method, path, handler in [
            ("POST", f"{phone}/messages", self._messages),
            ("POST", f"{phone}/media", self._upload),
            *([("POST", f"{phone}/register", self._register)] if phone else []),
            ("POST", f"{v}/{self.app_id}/uploads" if phone else "/-", self._upload_session),
            ("GET", f"{phone}/whatsapp_business_profile", self._profile_get),
            ("POST", f"{phone}/whatsapp_business_profile", self._profile_post),
            ("GET", templates, self._templates_page),
            ("POST", templates, self._template_create),
            ("DELETE", templates if self.platform == "meta_cloud" else templates + "/{name}", self._template_delete),
            ("*", "/v1/configs/webhook", self._webhook_config),
            ("GET", ("/lookaside" if phone else "") + "/whatsapp_business/attachments/", self._download),
            ("*", (v if phone else "") + "/{node}", self._node),
            ("*", "/{tail:.+}", unsupported),
        ]:
            app.router.add_route(method, path, handler)
        self._runner, self.url = await serve_on_loopback(app)
        self._session = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        self.release_listings()
        await close_fake(self._runner, self._session, self._tasks)
        if self._files is not None:
            shutil.rmtree(self._files, ignore_errors=True)
            self._files = None

    def provider_entry(self, name: str = "main", **extra: Any) -> dict[str, Any]:
        """The ``providers:`` entry of a daemon that talks to this fake."""
        ids = {"phone_number_id": self.phone_number_id, "waba_id": self.waba_id}
        if self.platform == "meta_cloud":
            secrets_ = {"access_token": self.access_token, "app_secret": self.app_secret}
            entry = {**ids, **secrets_, "verify_token": self.verify_token, "api_base": self.url, "app_id": self.app_id}
        else:
            entry = {"api_key": self.api_key, "webhook_secret": self.webhook_secret, "api_base": self.url, **ids}
        return {"platform": self.platform, "name": name, **entry, **extra}

    def attach(self, daemon_url: str, name: str = "main") -> None:
        """Post webhooks to ``{daemon_url}/webhooks/{name}`` from now on."""
        self._target = f"{daemon_url.rstrip('/')}/webhooks/{name}"

    def fail_next(
        self, code: int, *, http_status: int = 400, count: int = 1, message: str = "Injected failure", details: str = ""
    ) -> None:
        """Answer the next ``count`` authorized calls, of any kind, with a Graph error
        (``details``, in ``error_data``, defaults to ``message``)."""
        self._faults.append(_Fault(code, http_status, message, details, count))

    def fail_later(self, code: int, title: str = "Message failed") -> None:
        """Report the next accepted message ``failed`` with ``code`` (instead of ``delivered``;
        posted like the other statuses, so only when attached)."""
        self._failures.append((code, title))

    # -- webhooks -----------------------------------------------------------------

    async def deliver(self, value: dict[str, Any], field: str = "messages") -> int:
        """Post one change (``value`` of ``field``) in the Cloud API envelope, signed;
        returns the HTTP status the daemon answered."""
        if field == "messages":
            metadata = {"display_phone_number": self.display_phone_number, "phone_number_id": self.phone_number_id}
            value = {"messaging_product": "whatsapp", "metadata": metadata, **value}
        entry = {"id": self.waba_id, "time": int(time.time()), "changes": [{"field": field, "value": value}]}
        body = json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()
        target = self.webhook_config.get("url") or self._target
        if target is None or self._session is None:
            raise RuntimeError("start() the fake and attach() it to a daemon first")
        headers = {"Content-Type": "application/json"}
        if self.platform == "meta_cloud":
            headers["X-Hub-Signature-256"] = sign_body(self.app_secret, body)
        else:
            headers |= {WEBHOOK_SECRET_HEADER: self.webhook_secret, **self.webhook_config.get("headers", {})}
        async with self._session.post(target, data=body, headers=headers) as response:
            await response.read()
            return response.status

    async def send_inbound(
        self, message: dict[str, Any], *, wa_id: str = "16505551234", name: str = "Ana", user_id: str | None = None
    ) -> int:
        """Deliver a message a user sent (``id``, ``from`` and ``timestamp`` filled if missing)."""
        message = {"from": wa_id, "id": _wamid(), "timestamp": str(int(time.time())), **message}
        contact: dict[str, Any] = {"profile": {"name": name}, "wa_id": wa_id}
        if user_id is not None:
            message.setdefault("from_user_id", user_id)
            contact["user_id"] = user_id
        return await self.deliver({"contacts": [contact], "messages": [message]})

    async def settle(self) -> None:
        """Wait until the status webhooks under way are posted (or given up)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _post_statuses(self, wamid: str, body: dict[str, Any]) -> None:
        failure = self._failures.pop(0) if self._failures else None
        names = ["sent", "delivered"] if self.auto_statuses else []
        names = [*names[:1], "failed"] if failure else names
        if not names or (self._target is None and "url" not in self.webhook_config):
            return
        category = "service"
        if body["type"] == "template":
            found = [t.get("category", "UTILITY") for t in self.templates if t.get("name") == body["template"]["name"]]
            category = str(found[0] if found else "UTILITY").lower()
        recipient = (
            {"recipient_user_id": body["recipient"]} if "recipient" in body else {"recipient_id": _digits(body["to"])}
        )
        extra = {key: body[key] for key in ("biz_opaque_callback_data",) if key in body}
        billable = category != "service"
        kind = "regular" if billable else "free_customer_service"
        pricing = {"billable": billable, "pricing_model": "PMP", "type": kind, "category": category}
        statuses = []
        for name in names:
            status = {"id": wamid, "status": name, "timestamp": str(int(time.time())), **recipient, **extra}
            if name == "failed" and failure is not None:
                code, title = failure
                status["errors"] = [{"code": code, "title": title, "message": title, "error_data": {"details": title}}]
            else:
                status["pricing"] = pricing
            statuses.append(status)
        task = asyncio.create_task(self._post_in_order(statuses))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_in_order(self, statuses: list[dict[str, Any]]) -> None:
        async with self._order:  # one message's statuses after the previous message's
            for status in statuses:
                for _attempt in range(20):  # like Meta, redeliver until the daemon takes it
                    try:
                        if 200 <= await self.deliver({"statuses": [status]}) < 300:
                            self.statuses_sent.append(status)
                            break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.25)

    # -- HTTP -----------------------------------------------------------------------

    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw, body = b"", None
        if request.content_type != "multipart/form-data":  # an upload streams to disk in its handler
            raw, body = await request.read(), await read_json(request)
        query, headers = dict(request.query), dict(request.headers)
        self.requests.append(Recorded(request.method, request.path, query, headers, body, raw))
        if self.platform == "meta_cloud" and request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if self.platform == "dialog360" and request.headers.get("D360-API-KEY") != self.api_key:
            return d360_error(401, "Invalid api key")
        for fault in self._faults:
            if fault.remaining > 0:
                fault.remaining -= 1
                return graph_error(fault.http_status, fault.code, fault.message, fault.details)
        return await handler(request)

    async def _node(self, request: web.Request) -> web.StreamResponse:
        """``/{v}/{id}`` on Meta, ``/{id}`` on 360dialog: the phone number, a media or a template."""
        node, method, meta = request.match_info["node"], request.method, self.platform == "meta_cloud"
        if node in self._uploads and method == "POST" and meta:
            return await self._upload_bytes(request, node)
        if node == self.phone_number_id and method == "GET" and meta:
            wanted = request.query.get("fields")
            if wanted is None:
                return web.json_response(self.phone)
            return web.json_response({k: v for k, v in self.phone.items() if k in wanted.split(",") or k == "id"})
        if node == self.phone_number_id and method == "POST" and meta:
            return await self._phone_update(request)
        if node in self.media and method == "DELETE":
            del self.media[node]
            return web.json_response({"success": True})
        if node in self.media and method == "GET":
            item, query = self.media[node], f"mid={node}&ext={int(time.time())}&hash=ATv{secrets.token_urlsafe(12)}"
            url = (
                f"{self.url}/lookaside" if meta else "https://lookaside.fbsbx.com"
            ) + "/whatsapp_business/attachments/"
            info = {"messaging_product": "whatsapp", "url": f"{url}?{query}", "mime_type": item.mime_type}
            return web.json_response(info | {"sha256": item.sha256, "file_size": str(item.size), "id": node})
        template = next((t for t in self.templates if t["id"] == node), None)
        if template is not None and method in ("GET", "POST") and meta:
            if method == "GET":
                return web.json_response(template)
            return await self._template_edit(request, template)
        return await unsupported(request)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        if isinstance(body, dict) and body.get("status") == "read":
            if problems := read_problems(body):
                return self._refuse(problems)
            self.reads.append(body)
            return web.json_response({"success": True})
        if problems := validate_message(body):
            return self._refuse(problems)
        if "recipient" in body and not self.accepts_bsuids:
            details = "This message cannot be sent to a business-scoped user ID; send it to the phone number"
            return graph_error(400, 131062, "Business-scoped user ID recipient not supported", details)
        self.messages.append(body)
        wamid = _wamid()
        if "recipient" in body:
            contact = {"input": body["recipient"], "user_id": body["recipient"]}
        else:
            contact = {"input": body["to"], "wa_id": self.wa_ids.get(_digits(body["to"]), _digits(body["to"]))}
        self._post_statuses(wamid, body)
        message = {"id": wamid, "message_status": "accepted"}
        return web.json_response({"messaging_product": "whatsapp", "contacts": [contact], "messages": [message]})

    async def _webhook_config(self, request: web.Request) -> web.StreamResponse:
        """360dialog's ``/v1/configs/webhook`` (a 404 on Meta)."""
        body = await read_json(request)
        if self.platform != "dialog360" or request.method not in ("GET", "POST"):
            return await unsupported(request)
        if request.method == "GET":
            return web.json_response({"url": self.webhook_config.get("url")})
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            return d360_error(400, "a JSON body with a url is required")
        self.webhook_config = {"url": body["url"], "headers": dict(body.get("headers") or {})}
        return web.json_response({"url": body["url"]})


def _wamid() -> str:
    return f"wamid.HBgL{secrets.token_urlsafe(30)}"


def _digits(phone: Any) -> str:
    return "".join(ch for ch in str(phone) if ch.isdigit())
