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
listings waiting. Everything is recorded (``listings`` counts template
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

``validate_message(body)`` checks a send body against ``components.schemas.Message``
of ``specs/meta/business-messaging-api_v23.0.yaml`` (JSON Schema 2020-12), read as
its authors intend:

(a) Each message type is ``allOf: [BaseMessageProperties, {additionalProperties: false,
    properties: {type, text...}}]``. Read literally, the inner ``additionalProperties:
    false`` forbids the base properties (``to``...) and no body could pass. So, in a copy,
    it is dropped from the ``allOf`` member and the schema holding the ``allOf`` gets
    ``unevaluatedProperties: false``: unknown fields still fail.
(b) ``recipient`` (the 2026 business-scoped user id, absent from v23) is validated as ``to``.
(c) The named, minimal ``AMENDMENTS`` (name → reason), where the document refuses what
    Meta accepts (mostly its own examples) or lacks a documented limit;
    ``validate_message(body, amended=False)`` leaves them out.

Its ``discriminator`` keywords are no JSON Schema: the one of ``Message`` only picks the
message type to report errors for; those of ``TemplateComponent`` and ``ParameterObject``
(with no ``oneOf``) check nothing, so template parameters are not checked.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import json
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from aiohttp.typedefs import Handler
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError, best_match  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from wahub.core.provider import sign_body
from wahub.testing import close_fake, serve_on_loopback

SPEC_PATH = Path(__file__).parent / "specs" / "meta" / "business-messaging-api_v23.0.yaml"
WEBHOOK_SECRET_HEADER = "X-Wahub-Webhook-Secret"
PLATFORMS = ("meta_cloud", "dialog360")
CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
MEDIA_HEADERS = ("IMAGE", "VIDEO", "DOCUMENT")
PROFILE_FIELDS = ("about", "address", "description", "email", "profile_picture_url", "websites", "vertical")
_SPEC_URI = "urn:wahub:meta:business-messaging-api:v23.0"

# -- validation against Meta's OpenAPI document ---------------------------------

AMENDMENTS: dict[str, str] = {
    "optional_recipient_type": "BaseMessageProperties.required lists recipient_type, which defaults to "
    "'individual' (reference 2.1); the document's examples 'Send Test Message' and 'Send Text Message "
    "with Preview URL' omit it.",
    "biz_opaque_callback_data": "BaseMessageProperties lacks biz_opaque_callback_data (a string of at most "
    "512 characters echoed in status webhooks, reference 2.1), so (a) refuses it.",
    "text_body_limit": "A tightening: TextMessage.text has no required body and no maxLength; Meta needs a "
    "body of at most 4096 characters (reference 2.6).",
    "numeric_coordinates": "LocationMessage.location.latitude/longitude are typed string; the document's "
    "example 'Send Location Message' and reference 2.2 send numbers.",
    "cta_url": "InteractiveObject.type and ActionObject lack the call-to-action URL button (reference 2.2: "
    "type cta_url, action {name: cta_url, parameters: {display_text of at most 20 characters, url}}).",
    "optional_language_policy": "LanguageObject.required lists policy, which is optional (reference 2.3); "
    "the document's examples 'Send Test Message' and 'Send Message Template Text' omit it.",
    "template_button_index": "TemplateComponent.index has the pattern ^[2-6, 11-14]$ (a character class "
    "that refuses '0' and '10') and type string; buttons are indexed 0-9 as a string or a number "
    "(reference 2.3; the document's examples send '0' and 0).",
    "template_button_sub_types": "TemplateComponent.sub_type allows quick_reply, url and catalog; copy_code "
    "and flow buttons exist (reference 2.3; the document's example 'Send Flow Template Message' sends flow).",
}
_CTA_URL_ACTION = {
    "required": ["name", "parameters"],
    "properties": {
        "name": {"const": "cta_url"},
        "parameters": {
            "type": "object",
            "required": ["display_text", "url"],
            "properties": {"display_text": {"type": "string", "maxLength": 20}, "url": {"type": "string"}},
        },
    },
}
_BIZ_OPAQUE = {"type": "string", "maxLength": 512}
_BUTTON_INDEX = {"type": ["string", "integer"], "pattern": "^[0-9]$", "minimum": 0, "maximum": 9}
_LOCATION = "LocationMessage/allOf/1/properties/location/properties"
#: How each amendment changes components.schemas: (amendment, path, key, "=" to set or "+=" to extend, value).
_PATCHES: list[tuple[str, str, str, str, Any]] = [
    ("optional_recipient_type", "BaseMessageProperties", "required", "=", ["messaging_product", "to", "type"]),
    ("biz_opaque_callback_data", "BaseMessageProperties/properties", "biz_opaque_callback_data", "=", _BIZ_OPAQUE),
    ("text_body_limit", "TextMessage/allOf/1/properties/text", "required", "=", ["body"]),
    ("text_body_limit", "TextMessage/allOf/1/properties/text/properties/body", "maxLength", "=", 4096),
    ("numeric_coordinates", f"{_LOCATION}/latitude", "type", "=", ["number", "string"]),
    ("numeric_coordinates", f"{_LOCATION}/longitude", "type", "=", ["number", "string"]),
    ("cta_url", "InteractiveObject/properties/type", "enum", "+=", ["cta_url"]),
    ("cta_url", "ActionObject", "oneOf", "+=", [_CTA_URL_ACTION]),
    ("optional_language_policy", "LanguageObject", "required", "=", ["code"]),
    ("template_button_index", "TemplateComponent/properties", "index", "=", _BUTTON_INDEX),
    ("template_button_sub_types", "TemplateComponent/properties/sub_type", "enum", "+=", ["copy_code", "flow"]),
]


def _close_all_ofs(node: Any) -> None:
    """Adjustment (a) of the module docstring, in place."""
    if isinstance(node, dict):
        closing = [m for m in node.get("allOf", []) if isinstance(m, dict) and m.get("additionalProperties") is False]
        for member in closing:
            del member["additionalProperties"]
        if closing:
            node["unevaluatedProperties"] = False
    for value in node.values() if isinstance(node, dict) else node if isinstance(node, list) else ():
        _close_all_ofs(value)


@functools.cache
def _document() -> dict[str, Any]:
    with SPEC_PATH.open("rb") as file:
        document: dict[str, Any] = yaml.load(file, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return document


@functools.cache
def _validator(schema: str, amended: bool) -> Any:
    document = copy.deepcopy(_document())
    schemas = document["components"]["schemas"]
    _close_all_ofs(schemas)
    for _name, path, key, operation, value in _PATCHES if amended else ():
        node = functools.reduce(lambda n, k: n[int(k)] if isinstance(n, list) else n[k], path.split("/"), schemas)
        node[key] = node[key] + copy.deepcopy(value) if operation == "+=" else copy.deepcopy(value)
    registry: Registry[Any] = Registry().with_resource(_SPEC_URI, DRAFT202012.create_resource(document))
    return Draft202012Validator({"$ref": f"{_SPEC_URI}#/components/schemas/{schema}"}, registry=registry)


def _flatten(errors: list[ValidationError]) -> list[ValidationError]:
    """Replace each failed ``oneOf``/``anyOf`` by the errors of the one branch that fits
    best, if one does: no enum/const miss (it is the intended kind), then the deepest
    errors (a too long button title rather than "matches none of the allowed shapes")."""
    flat: list[ValidationError] = []
    for error in errors:
        if error.validator in ("oneOf", "anyOf") and error.context:
            branches: dict[Any, list[ValidationError]] = {}
            for sub in error.context:
                branches.setdefault(sub.relative_schema_path[0], []).append(sub)
            scores = {
                key: (all(e.validator not in ("enum", "const") for e in group), max(len(e.path) for e in group))
                for key, group in branches.items()
            }
            winners = [key for key, score in scores.items() if score == max(scores.values())]
            if len(winners) == 1 and (scores[winners[0]][0] or scores[winners[0]][1] > 0):
                flat += _flatten(branches[winners[0]])
                continue
        flat.append(error)
    return flat


def _describe(errors: list[ValidationError]) -> list[str]:
    """One readable line per error: JSON path, then message."""
    errors, lines = _flatten(errors), []
    for error in errors:
        where = tuple(error.absolute_path)
        if error.validator == "unevaluatedProperties" and any(
            other is not error and tuple(other.absolute_path)[: len(where)] == where for other in errors
        ):
            continue  # a failing allOf drops its annotations, so every property looks unknown: noise
        message = error.message
        if error.validator in ("oneOf", "anyOf") and not error.context:
            message = "matches more than one of the allowed shapes"
        elif error.validator in ("oneOf", "anyOf"):
            closest = best_match(error.context)
            message = f"matches none of the allowed shapes (e.g. {closest.json_path}: {closest.message})"
        elif len(shown := repr(error.instance)) > 80:
            message = message.replace(shown, f"{shown[:60]}... ({len(shown)} characters)")
        if (line := f"{error.json_path}: {message[:300]}") not in lines:
            lines.append(line)
    return lines


def validate_message(body: Any, *, amended: bool = True) -> list[str]:
    """What is wrong with a ``POST .../messages`` body (not a mark-as-read), one line per
    problem ("JSON path: message"); an empty list when Meta's document accepts it."""
    if not isinstance(body, dict):
        return ["$: the message must be a JSON object"]
    if "recipient" in body:
        if "to" in body:
            return ["$: 'to' and 'recipient' exclude each other"]
        body = {("to" if key == "recipient" else key): value for key, value in body.items()}
    message = _document()["components"]["schemas"]["Message"]
    mapping: dict[str, str] = message["discriminator"]["mapping"]
    errors: list[ValidationError] = []
    for error in _validator("Message", amended).iter_errors(body):
        if error.validator == "oneOf" and not error.absolute_path:  # the discriminator names the type's branch
            if "type" not in body:
                return [f"$: 'type' is a required property, one of {sorted(mapping)}"]
            if body["type"] not in mapping:
                return [f"$.type: {body['type']!r} is not one of {sorted(mapping)}"]
            branch = [b["$ref"] for b in message["oneOf"]].index(mapping[body["type"]])
            errors += [e for e in error.context if e.relative_schema_path[0] == branch] or [error]
        else:
            errors.append(error)
    return _describe(errors)


# -- the server -----------------------------------------------------------------


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
class MediaItem:
    """A file the fake holds, on disk, with its sha256 (hex) and size."""

    path: Path
    mime_type: str
    sha256: str
    size: int
    filename: str | None = None

    @property
    def data(self) -> bytes:
        """The file's bytes, read from disk (for small files)."""
        return self.path.read_bytes()


@dataclass
class _Fault:
    code: int
    http_status: int
    message: str
    details: str
    remaining: int


@dataclass
class FakeGraphServer:
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
            ("POST", f"{v}/{self.app_id}/uploads" if phone else "/-", self._upload_session),
            ("GET", f"{phone}/whatsapp_business_profile", self._profile_get),
            ("POST", f"{phone}/whatsapp_business_profile", self._profile_post),
            ("GET", templates, self._templates_page),
            ("POST", templates, self._template_create),
            ("DELETE", templates if self.platform == "meta_cloud" else templates + "/{name}", self._template_delete),
            ("*", "/v1/configs/webhook", self._webhook_config),
            ("GET", ("/lookaside" if phone else "") + "/whatsapp_business/attachments/", self._download),
            ("*", (v if phone else "") + "/{node}", self._node),
            ("*", "/{tail:.+}", _unsupported),
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

    def add_media(self, data: bytes | Path, mime_type: str, *, media_id: str | None = None) -> str:
        """Store a media object (one a user sent, say); returns its id. A ``Path``
        is served from where it is, in chunks: a large file is never whole in memory."""
        media_id = media_id or _numeric_id()
        if isinstance(data, Path):
            digest = hashlib.sha256()
            with data.open("rb") as file:
                while block := file.read(1 << 20):
                    digest.update(block)
            self.media[media_id] = MediaItem(data, mime_type, digest.hexdigest(), data.stat().st_size)
        else:
            self.media[media_id] = self._keep_bytes(data, mime_type)
        return media_id

    def _new_file(self) -> Path:
        if self._files is None:
            self._files = Path(tempfile.mkdtemp(prefix="wahub-fake-graph-"))
        return self._files / secrets.token_hex(12)

    def _keep_bytes(self, data: bytes, mime_type: str) -> MediaItem:
        path = self._new_file()
        path.write_bytes(data)
        return MediaItem(path, mime_type, hashlib.sha256(data).hexdigest(), len(data))

    def add_template(self, template: dict[str, Any]) -> dict[str, Any]:
        """Seed the template list; ``id`` and ``status`` (APPROVED) are filled if missing."""
        self.templates.append(template := {"id": _numeric_id(), "status": "APPROVED", **template})
        return template

    def fail_next(
        self, code: int, *, http_status: int = 400, count: int = 1, message: str = "Injected failure", details: str = ""
    ) -> None:
        """Answer the next ``count`` authorized calls, of any kind, with a Graph error
        (``details``, in ``error_data``, defaults to ``message``)."""
        self._faults.append(_Fault(code, http_status, message, details, count))

    def hold_listings(self) -> None:
        """Keep template listing requests waiting (a slow API) until ``release_listings``."""
        self._listings_open.clear()

    def release_listings(self) -> None:
        self._listings_open.set()

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
            raw, body = await request.read(), await _json(request)
        query, headers = dict(request.query), dict(request.headers)
        self.requests.append(Recorded(request.method, request.path, query, headers, body, raw))
        if self.platform == "meta_cloud" and request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return _graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if self.platform == "dialog360" and request.headers.get("D360-API-KEY") != self.api_key:
            return _d360_error(401, "Invalid api key")
        for fault in self._faults:
            if fault.remaining > 0:
                fault.remaining -= 1
                return _graph_error(fault.http_status, fault.code, fault.message, fault.details)
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
            body = await _json(request)
            if problem := _template_problem(body, edit=True):
                return self._refuse([problem])
            template.update(body)
            return web.json_response({"success": True})
        return await _unsupported(request)

    async def _upload_session(self, request: web.Request) -> web.StreamResponse:
        """Resumable Upload, step 1: ``POST /{app-id}/uploads?file_name&file_length&file_type``."""
        query = request.query
        if not query.get("file_name") or not query.get("file_length", "").isdigit() or not query.get("file_type"):
            return self._refuse(["$: file_name, file_length (bytes) and file_type are required query parameters"])
        session = f"upload:{secrets.token_urlsafe(16)}"
        self._uploads[session] = (int(query["file_length"]), query["file_type"])
        return web.json_response({"id": session})

    async def _upload_bytes(self, request: web.Request, session: str) -> web.StreamResponse:
        """Resumable Upload, step 2: ``POST /{upload-id}`` with ``file_offset: 0`` and the bytes."""
        length, mime_type = self._uploads[session]
        data = await request.read()
        if request.headers.get("file_offset") != "0" or len(data) != length:
            return self._refuse([f"$: send all {length} bytes at file_offset 0 (got {len(data)})"])
        handle = f"4::{secrets.token_urlsafe(24)}"
        self.handles[handle] = self._keep_bytes(data, mime_type)
        del self._uploads[session]
        return web.json_response({"h": handle})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        if isinstance(body, dict) and body.get("status") == "read":
            problems = [f"$: unknown field {key!r}" for key in body if key not in _READ_FIELDS]
            if body.get("messaging_product") != "whatsapp":
                problems.append("$.messaging_product: must be 'whatsapp'")
            if not isinstance(body.get("message_id"), str) or not body["message_id"]:
                problems.append("$.message_id: the id of the message to mark read is required")
            if body.get("typing_indicator", {"type": "text"}) != {"type": "text"}:
                problems.append("$.typing_indicator: must be {'type': 'text'}")
            if problems:
                return self._refuse(problems)
            self.reads.append(body)
            return web.json_response({"success": True})
        if problems := validate_message(body):
            return self._refuse(problems)
        if "recipient" in body and not self.accepts_bsuids:
            details = "This message cannot be sent to a business-scoped user ID; send it to the phone number"
            return _graph_error(400, 131062, "Business-scoped user ID recipient not supported", details)
        self.messages.append(body)
        wamid = _wamid()
        if "recipient" in body:
            contact = {"input": body["recipient"], "user_id": body["recipient"]}
        else:
            contact = {"input": body["to"], "wa_id": self.wa_ids.get(_digits(body["to"]), _digits(body["to"]))}
        self._post_statuses(wamid, body)
        message = {"id": wamid, "message_status": "accepted"}
        return web.json_response({"messaging_product": "whatsapp", "contacts": [contact], "messages": [message]})

    def _refuse(self, problems: list[str]) -> web.Response:
        self.schema_errors.extend(problems)
        return _graph_error(400, 100, "Invalid parameter", "; ".join(problems))

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        """``POST /{phone-number-id}/media``: the multipart body read as it comes, the file streamed to disk."""
        fields: dict[str, str] = {}
        item: MediaItem | None = None
        if request.content_type != "multipart/form-data":
            return self._refuse(["$: the upload must be multipart/form-data"])
        try:
            async for part in await request.multipart():
                if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                    continue
                if part.name == "file":
                    item = await self._receive(part)
                else:
                    fields[part.name] = await part.text()
        except ValueError as exc:
            return self._refuse([f"$: the multipart body cannot be read ({exc})"])
        if item is None or "type" not in fields or fields.get("messaging_product") != "whatsapp":
            if item is not None:
                item.path.unlink()
            return self._refuse(["$: multipart/form-data needs file, type and messaging_product=whatsapp"])
        item.mime_type = fields["type"]
        self.media[media_id := _numeric_id()] = item
        return web.json_response({"id": media_id})

    async def _receive(self, part: aiohttp.BodyPartReader) -> MediaItem:
        path, digest, size = self._new_file(), hashlib.sha256(), 0
        with path.open("wb") as file:
            while chunk := await part.read_chunk(1 << 16):
                digest.update(chunk)
                file.write(chunk)
                size += len(chunk)
        mime_type = part.headers.get("Content-Type", "application/octet-stream")
        return MediaItem(path, mime_type, digest.hexdigest(), size, part.filename)

    async def _download(self, request: web.Request) -> web.StreamResponse:
        item = self.media.get(request.query.get("mid", ""))
        if item is None:
            return _graph_error(404, 100, "Invalid parameter", "unknown media")
        if not self.chunked_downloads:
            return web.FileResponse(item.path, headers={"Content-Type": item.mime_type})
        response = web.StreamResponse(headers={"Content-Type": item.mime_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with item.path.open("rb") as file:
            while block := await asyncio.to_thread(file.read, 1 << 16):
                await response.write(block)
        await response.write_eof()
        return response

    async def _templates_page(self, request: web.Request) -> web.StreamResponse:
        query, meta = request.query, self.platform == "meta_cloud"
        wanted = {key: query[key] for key in ("name", "status", "category", "language") if key in query}
        found = [t for t in self.templates if all(str(t.get(k, "")).upper() == v.upper() for k, v in wanted.items())]
        try:
            limit = int(query.get("limit", "25" if meta else "1000"))
            if meta:
                start = int(bytes.fromhex(query["after"]).decode()) + 1 if "after" in query else 0
            else:
                start = int(query.get("offset", "0"))
            if limit < 1 or start < 0:
                raise ValueError(limit, start)
        except ValueError:
            return self._refuse(["$: limit, after and offset must be integers or cursors from a previous page"])
        if start == 0:
            self.listings += 1
        await self._listings_open.wait()
        page = found[start : start + limit]
        if not meta:
            body = {"count": len(page), "limit": limit, "offset": start, "total": len(found), "waba_templates": page}
            return web.json_response(body)
        if "fields" in query:  # like the Graph API: only the fields asked for, and the id
            fields = {"id", *query["fields"].split(",")}
            page = [{key: value for key, value in template.items() if key in fields} for template in page]
        if not page:
            return web.json_response({"data": []})
        paging: dict[str, Any] = {"cursors": {"before": _cursor(start), "after": _cursor(start + len(page) - 1)}}
        if start + len(page) < len(found):
            paging["next"] = str(request.url.update_query(limit=limit, after=paging["cursors"]["after"]))
        return web.json_response({"data": page, "paging": paging})

    async def _template_create(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        problem = _template_problem(body, edit=False)
        if not problem and any(t["name"] == body["name"] and t["language"] == body["language"] for t in self.templates):
            problem = "$: content in this language already exists"
        if not problem and self.platform == "meta_cloud":
            problem = self._header_handle_problem(body["components"])
        if problem:
            return self._refuse([problem])
        self.templates.append(template := {"parameter_format": "POSITIONAL", **body, "id": _numeric_id()})
        template["status"] = "PENDING"
        return web.json_response({"id": template["id"], "status": "PENDING", "category": template["category"]})

    def _header_handle_problem(self, components: list[Any]) -> str | None:
        """A media header's example must be a handle of the Resumable Upload API."""
        for index, component in enumerate(components):
            if str(component.get("type")).upper() == "HEADER" and component.get("format") in MEDIA_HEADERS:
                handles = (component.get("example") or {}).get("header_handle") or [None]
                if handles[0] not in self.handles:
                    return f"$.components[{index}].example.header_handle: not a handle from the Resumable Upload API"
        return None

    async def _template_delete(self, request: web.Request) -> web.StreamResponse:
        name, hsm_id = request.match_info.get("name") or request.query.get("name"), request.query.get("hsm_id")
        if not name:
            return self._refuse(["$.name: the name of the template to delete is required"])
        gone = [t for t in self.templates if t["name"] == name and hsm_id in (None, t["id"])]
        if not gone:
            return _graph_error(404, 100, "Invalid parameter", f"no template named {name!r}")
        self.templates = [t for t in self.templates if all(t is not g for g in gone)]
        return web.json_response({"success": True})

    async def _profile_get(self, request: web.Request) -> web.StreamResponse:
        wanted = request.query.get("fields", ",".join(PROFILE_FIELDS)).split(",")
        if unknown := [name for name in wanted if name not in PROFILE_FIELDS]:
            return _graph_error(400, 100, f"Tried accessing nonexisting field ({unknown[0]})")
        data = {name: self.profile[name] for name in wanted if name in self.profile}
        return web.json_response({"data": [{**data, "messaging_product": "whatsapp"}]})

    async def _profile_post(self, request: web.Request) -> web.StreamResponse:
        body, schema = await _json(request), "WhatsAppBusinessProfileUpdateRequest"
        allowed = _document()["components"]["schemas"][schema]["properties"]
        problems = [f"$: unknown field {key!r}" for key in body if key not in allowed] if isinstance(body, dict) else []
        if problems := problems + _describe(list(_validator(schema, True).iter_errors(body))):
            return self._refuse(problems)
        update = {key: value for key, value in body.items() if key != "messaging_product"}
        if "profile_picture_handle" in update and update["profile_picture_handle"] not in self.handles:
            return self._refuse(["$.profile_picture_handle: not a handle from the Resumable Upload API"])
        if "profile_picture_handle" in update:
            update["profile_picture_url"] = f"https://pps.whatsapp.net/v/fake/{update.pop('profile_picture_handle')}"
        self.profile.update(update)
        return web.json_response({"success": True})

    async def _webhook_config(self, request: web.Request) -> web.StreamResponse:
        """360dialog's ``/v1/configs/webhook`` (a 404 on Meta)."""
        body = await _json(request)
        if self.platform != "dialog360" or request.method not in ("GET", "POST"):
            return await _unsupported(request)
        if request.method == "GET":
            return web.json_response({"url": self.webhook_config.get("url")})
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            return _d360_error(400, "a JSON body with a url is required")
        self.webhook_config = {"url": body["url"], "headers": dict(body.get("headers") or {})}
        return web.json_response({"url": body["url"]})


_READ_FIELDS = ("messaging_product", "status", "message_id", "typing_indicator", "recipient_type")


async def _json(request: web.Request) -> Any:
    """The JSON body, or None; aiohttp keeps the bytes once read."""
    try:
        return json.loads(await request.read())
    except ValueError:
        return None


async def _unsupported(request: web.Request) -> web.Response:
    message = f"Unsupported {request.method.lower()} request: {request.path} does not exist or is not faked"
    return _graph_error(404, 100, message)


def _template_problem(body: Any, *, edit: bool) -> str | None:
    """What is wrong with a template create (or edit) body."""
    if not isinstance(body, dict):
        return "$: the body must be a JSON object"
    if edit and (not body or set(body) - {"components", "category", "message_send_ttl_seconds", "parameter_format"}):
        return "$: an edit takes components and/or category"
    for key in () if edit else ("name", "language"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"$.{key}: is required"
    if (not edit or "category" in body) and body.get("category") not in CATEGORIES:
        return f"$.category: must be one of {list(CATEGORIES)}"
    components = body.get("components")
    if (not edit or "components" in body) and not (
        isinstance(components, list)
        and any(isinstance(c, dict) and str(c.get("type")).upper() == "BODY" for c in components)
    ):
        return "$.components: must be a list with a BODY component"
    return None


def _graph_error(status: int, code: int, message: str, details: str | None = None) -> web.Response:
    error = {
        "message": f"(#{code}) {message}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details or message},
        "fbtrace_id": f"A{secrets.token_urlsafe(16)}",
    }
    return web.json_response({"error": error}, status=status)


def _d360_error(status: int, message: str) -> web.Response:
    meta = {"httpCode": status, "developerMessage": message, "success": False}
    return web.json_response({"meta": meta}, status=status)


def _numeric_id() -> str:
    return str(10**15 + secrets.randbelow(9 * 10**15))


def _wamid() -> str:
    return f"wamid.HBgL{secrets.token_urlsafe(30)}"


def _digits(phone: Any) -> str:
    return "".join(ch for ch in str(phone) if ch.isdigit())


def _cursor(index: int) -> str:
    return str(index).encode().hex()
