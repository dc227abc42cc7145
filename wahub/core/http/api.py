"""The REST API under ``/api/v1``: bearer tokens from ``wahub.api_tokens``,
JSON in and out, errors as ``{"error": {"code": ..., "message": ...}}``.

- ``POST /api/v1/messages``: queue a message (the canonical JSON with ``to``
  and an optional ``provider``). 202 ``{"id", "status"}``; 422 for an invalid
  message or a policy refusal, with the reason as ``code``. An
  ``Idempotency-Key`` header makes retries safe: the same key returns the
  first message and never sends twice (409 if the body differs).
- ``GET /api/v1/messages/{id}``: status, provider id, status history, error.
- ``GET|POST /api/v1/contacts/{provider}/{address}/consent``: the consent
  ledger and current state; record an opt-in or opt-out with its evidence.
- ``PATCH /api/v1/contacts/{provider}/{address}``: set the contact's time zone.
- ``POST /api/v1/media``: store a file to send (multipart field ``file``, the
  ``provider`` it is for), streamed to disk; 201 with its id ``wahub:<id>``
  for a message's media object, 413 past its kind's size limit.
  ``GET /api/v1/media/{id}``: a stored file (inbound or outbound), sent from disk.
- ``GET /api/v1/inbox/failed``: inbox events that gave up, oldest first
  (``?limit=``, default 100), phone numbers masked. ``POST
  /api/v1/inbox/{id}/retry``: run a failed event again (404 if it is not failed).
- Conversations (list, one with its messages, hand-off, resolve, assign) are in
  ``conversations``; contacts by id (search, get, PATCH) in ``contacts``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from wahub.core.canonical.validate import parse_message
from wahub.core.config.validators import timezone_name
from wahub.core.errors import InvalidMessage, InvalidTime, MediaRefused, MediaTooLarge, SendRefused
from wahub.core.http import contacts_import
from wahub.core.http.api_io import abort as _abort
from wahub.core.http.api_io import error, json_body, json_response, path_id, path_text, storable
from wahub.core.http.contacts import contact_routes
from wahub.core.http.conversations import conversation_routes
from wahub.core.http.openapi import route_defs
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.inbound.failures import failed_event
from wahub.core.models import InboxState
from wahub.core.policy.consent import consent_time
from wahub.core.storage.media import LOCAL_PREFIX, MediaFile, kind_of
from wahub.core.storage.policy import consent_state

_LOGGER = logging.getLogger(__name__)

PREFIX = "/api/v1/"
MAX_IDEMPOTENCY_KEY = 200
#: Largest consent evidence, as JSON: a form's answers and its wording, not a document.
MAX_EVIDENCE_BYTES = 16 * 1024
MAX_FAILED_LISTED = 1000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["api_routes", "auth_middleware", "error", "media_response", "stored_upload"]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every ``/api/v1`` request needs ``Authorization: Bearer <one of wahub.api_tokens>``;
    every error it gets is in the JSON envelope."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    tokens: list[str] = request.app[HUB_KEY].config["wahub"]["api_tokens"]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not tokens:
        return error(401, "unauthorized", "the REST API is off: add a token to wahub.api_tokens")
    # Header bytes that are not UTF-8 arrive as surrogates; they can never match a token.
    offered = given.strip().encode("utf-8", "surrogatepass")
    valid = False
    for token in tokens:  # every token compared, in constant time, whatever matches
        valid |= hmac.compare_digest(offered, token.encode())
    if scheme.lower() != "bearer" or not valid:
        return error(401, "unauthorized", "missing or invalid bearer token")
    return await _in_envelope(request, handler)


async def _in_envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's answer; aiohttp's own errors and any failure become the JSON envelope."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = exc.reason.lower().replace(" ", "_")
        return error(
            exc.status, code, exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        )
    except Exception:
        # The route's pattern, not the path: a path can hold a user's address.
        route = request.match_info.route.resource
        _LOGGER.exception("REST API request %s %s failed", request.method, route.canonical if route else "?")
        return error(500, "internal_error", "the request failed inside wahub; the log has the details")


def _idempotency_key(request: web.Request) -> str:
    given = request.headers.get("Idempotency-Key")
    if given is None:
        return f"api:{uuid.uuid4()}"
    if not 0 < len(given) <= MAX_IDEMPOTENCY_KEY or not given.isprintable():
        raise _abort(
            web.HTTPBadRequest,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
        )
    return f"api:{given}"


async def send_message(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    body = await json_body(request)
    key = _idempotency_key(request)
    if not isinstance(body, dict):
        return error(422, "invalid_message", "the body must be a JSON object")
    provider_name = body.pop("provider", None)
    if provider_name is not None and not isinstance(provider_name, str):
        return error(422, "invalid_message", "provider must be a provider's name (a string)")
    try:
        # The caller's address is kept: a BSUID written here is sent to as a BSUID.
        message = dataclasses.replace(parse_message(body), keep_address=True)
        provider = hub.provider(provider_name)
    except InvalidMessage as exc:
        return error(422, "invalid_message", str(exc))
    except SendRefused as exc:
        return error(422, exc.reason, str(exc))
    try:
        # A key used before returns its first message, whatever the policy says now.
        message_id = await hub.send(message, provider=provider.name, idempotency_key=key)
    except SendRefused as exc:
        return error(422, exc.reason, str(exc))
    row = await hub.storage.messages.get(message_id)
    assert row is not None
    if row["provider"] != provider.name or row["address"] != message.to:
        return error(409, "idempotency_conflict", "this Idempotency-Key was used for another message")
    if row["conversation_id"] is not None:
        # A person (an operator, an integration) wrote: their conversation stays theirs for a while.
        await hub.storage.conversations.note_human(row["conversation_id"], hub.clock.time())
    return json_response({"id": message_id, "status": row["status"]}, status=202)


async def get_message(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    message_id = path_id(request, what="message")
    row = await hub.storage.messages.get(message_id)
    if row is None:
        return error(404, "not_found", f"no message {message_id}")
    history = []
    if row["provider_message_id"] and row["direction"] == "out":
        history = await hub.storage.messages.status_history(row["provider"], row["provider_message_id"])
    failure = {"code": row["error_code"], "message": row["error_reason"]} if row["error_code"] else None
    return json_response(
        {
            "id": row["id"],
            "provider": row["provider"],
            "direction": row["direction"],
            "to" if row["direction"] == "out" else "from": row["address"],
            "type": row["type"],
            "status": row["status"],
            "provider_message_id": row["provider_message_id"],
            "attempts": row["attempts"],
            "error": failure,
            "statuses": history,
            "message": row["body"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }
    )


def _contact(request: web.Request) -> tuple[Hub, str, str]:
    hub = request.app[HUB_KEY]
    provider = request.match_info["provider"]
    if provider not in hub.providers:
        raise _abort(web.HTTPNotFound, "unknown_provider", f"no provider named {provider[:64]!r}")
    return hub, provider, path_text(request, "address")


async def get_consent(request: web.Request) -> web.Response:
    hub, provider, address = _contact(request)
    # One read, so the state always matches the events shown beside it.
    ledger = await hub.storage.policy.ledger(provider, address)
    state = consent_state(ledger)
    for event in ledger:
        event.pop("id", None)
    return json_response({"state": {"all": state.all, "marketing": state.marketing}, "events": ledger})


async def record_consent(request: web.Request) -> web.Response:
    hub, provider, address = _contact(request)
    body = await json_body(request)
    if (
        not isinstance(body, dict)
        or body.get("action") not in ("opt_in", "opt_out")
        or body.get("scope", "all") not in ("all", "marketing")
        or not isinstance(body.get("evidence"), dict)
    ):
        return error(
            422,
            "invalid_consent",
            'expected {"action": "opt_in"|"opt_out", "scope": "all"|"marketing", "evidence": {...}} '
            "(evidence says how the consent was given: form, checkbox text, URL, ...)",
        )
    if len(json.dumps(body["evidence"])) > MAX_EVIDENCE_BYTES:
        return error(422, "invalid_consent", f"evidence is over {MAX_EVIDENCE_BYTES} bytes of JSON")
    try:
        occurred_at = consent_time(body.get("occurred_at", time.time()))
    except InvalidTime as exc:
        return error(422, "invalid_consent", str(exc))
    await hub.storage.policy.record_consent(
        provider,
        address,
        action=body["action"],
        scope=body.get("scope", "all"),
        source="api",
        evidence=body["evidence"],
        occurred_at=occurred_at,
    )
    hub.metrics.consent_changes.labels(provider, body["action"], "api").inc()
    return await get_consent(request)


async def update_contact(request: web.Request) -> web.Response:
    hub, provider, address = _contact(request)
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) != {"timezone"}:
        return error(422, "invalid_contact", 'expected {"timezone": "<IANA name>"} (or null for the default)')
    zone = body["timezone"]
    if zone is not None:
        try:
            zone = timezone_name(zone)
        except Exception as exc:  # noqa: BLE001 - voluptuous.Invalid, reported to the client
            return error(422, "invalid_contact", str(exc))
    if not await hub.storage.policy.set_timezone(provider, address, zone):
        return error(404, "not_found", f"no contact {address} on {provider}")
    return json_response({"provider": provider, "address": address, "timezone": zone})


async def get_media(request: web.Request) -> web.StreamResponse:
    return await media_response(request.app[HUB_KEY], path_text(request, "id"))


async def media_response(hub: Hub, media_id: str, *, in_page: bool = False) -> web.StreamResponse:
    """The stored file ``media_id`` (inbound or outbound), sent from disk, or a 404.

    ``in_page``: for a web page's origin (the inbox), where a file that is not
    a picture, a sound or a film is sent as ``application/octet-stream``, so
    that no page of that origin can ever load it as a script or a style."""
    store = hub.storage.media
    file = await store.get(media_id)
    if file is None or not store.path(file).is_file():
        return error(404, "not_found", "no such media file")
    inline = shown_inline(file.mime_type)
    headers = {
        "Content-Type": file.mime_type if inline or not in_page else "application/octet-stream",
        "X-Content-SHA256": file.sha256,
        "X-Content-Type-Options": "nosniff",
        # A stored file is whatever a user or an uploader sent: it never runs as a page.
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    disposition = "inline" if inline else "attachment"
    if file.filename:
        disposition += f"; filename*=UTF-8''{quote(file.filename, safe='')}"
    headers["Content-Disposition"] = disposition
    return web.FileResponse(store.path(file), headers=headers)


def shown_inline(mime_type: str) -> bool:
    """Whether a stored file of this type may be shown in a page (a picture, a
    sound, a film); every other type, scripts, HTML and SVG among them, is only
    ever downloaded."""
    kind, _, subtype = mime_type.lower().partition("/")
    return kind in ("image", "audio", "video") and "svg" not in subtype and "xml" not in subtype


async def upload_media(request: web.Request) -> web.Response:
    stored = await stored_upload(request)
    if isinstance(stored, web.Response):
        return stored
    file = stored
    kind = kind_of(file.mime_type)
    return json_response({**file.summary(), "id": f"{LOCAL_PREFIX}{file.id}", "kind": kind}, status=201)


async def stored_upload(request: web.Request) -> MediaFile | web.Response:
    """Store a file to send, or the error answer saying why not. The multipart
    body is read as it comes (``request.multipart()``, which ``client_max_size``
    does not cap: that guards ``request.read()``), the file streamed to disk and
    refused as soon as it passes its kind's size limit."""
    hub = request.app[HUB_KEY]
    store = hub.storage.media
    if not request.content_type.startswith("multipart/"):
        return error(400, "invalid_upload", "send the file as multipart/form-data in a field named 'file'")
    provider, incoming, mime_type, filename = request.query.get("provider"), None, "", None
    try:
        async with contextlib.AsyncExitStack() as stack:
            async for part in await request.multipart():
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "provider":
                    provider = (await part.text()).strip()
                elif part.name == "file" and incoming is not None:
                    return error(400, "invalid_upload", "send one file per upload, in one field named 'file'")
                elif part.name == "file":
                    mime_type = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
                    filename = part.filename
                    if not storable(mime_type) or (filename is not None and not storable(filename)):
                        return error(
                            400,
                            "invalid_upload",
                            "the file's name and type may not contain U+0000 or unpaired surrogates",
                        )
                    store.check(kind_of(mime_type), mime_type, None)  # a refused type is not read at all
                    incoming = await stack.enter_async_context(store.incoming(kind_of(mime_type)))
                    while chunk := await part.read_chunk(1 << 16):
                        await incoming.write(chunk)
            if incoming is None:
                return error(400, "invalid_upload", "no multipart field named 'file'")
            try:
                name = hub.provider(provider).name
            except SendRefused as exc:
                return error(404, exc.reason, str(exc))
            return await store.keep(incoming, name, mime_type, direction="out", filename=filename)
    except MediaTooLarge as exc:
        return error(413, "media_refused", str(exc))
    except MediaRefused as exc:
        return error(422, "media_refused", str(exc))
    except (ValueError, HttpProcessingError) as exc:  # a malformed body or part header, or text not in its charset
        return error(400, "invalid_upload", f"the multipart body is malformed: {exc}")


async def failed_inbox(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_FAILED_LISTED:
        return error(400, "invalid_limit", f"limit must be a whole number from 1 to {MAX_FAILED_LISTED}")
    rows = await hub.storage.failed_inbox(limit)
    return json_response({"events": [failed_event(row) for row in rows]})


async def retry_inbox(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    event_id = path_id(request, what="inbox event")
    if not await hub.storage.retry_failed_inbox([event_id]):
        return error(404, "not_found", f"no failed inbox event {event_id}")
    hub.inbox_ready.set()
    return json_response({"id": event_id, "state": InboxState.PENDING})


def api_routes() -> list[web.RouteDef]:
    contact = "/api/v1/contacts/{provider}/{address}"
    return [
        web.post("/api/v1/messages", send_message),
        web.get("/api/v1/messages/{id}", get_message),
        web.get(f"{contact}/consent", get_consent),
        web.post(f"{contact}/consent", record_consent),
        web.patch(contact, update_contact),
        web.post("/api/v1/media", upload_media),
        web.get("/api/v1/media/{id}", get_media),
        web.get("/api/v1/inbox/failed", failed_inbox),
        web.post("/api/v1/inbox/{id}/retry", retry_inbox),
        *conversation_routes(),
        *contact_routes(),
        *route_defs(contacts_import.operations()),
    ]
