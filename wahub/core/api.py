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
  ``provider`` it is for); 201 with its id ``wahub:<id>`` for a message's
  media object. ``GET /api/v1/media/{id}``: a stored file (inbound or outbound).
- ``GET /api/v1/inbox/failed``: inbox events that gave up, oldest first
  (``?limit=``, default 100), phone numbers masked. ``POST
  /api/v1/inbox/{id}/retry``: run a failed event again (404 if it is not failed).
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from wahub.core.canonical import InvalidMessage, parse_message
from wahub.core.hub import HUB_KEY, Hub, SendRefused
from wahub.core.media import LOCAL_PREFIX, MediaRefused, kind_of
from wahub.core.pipeline import failed_event
from wahub.core.policy import timezone_name

PREFIX = "/api/v1/"
MAX_IDEMPOTENCY_KEY = 200
MAX_FAILED_LISTED = 1000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _abort(status: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    """The same JSON error, as an exception to raise from a helper."""
    return status(text=json.dumps({"error": {"code": code, "message": message}}), content_type="application/json")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every ``/api/v1`` request needs ``Authorization: Bearer <one of wahub.api_tokens>``."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    tokens: list[str] = request.app[HUB_KEY].config["wahub"]["api_tokens"]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not tokens:
        return error(401, "unauthorized", "the REST API is off: add a token to wahub.api_tokens")
    valid = False
    for token in tokens:  # every token compared, in constant time, whatever matches
        valid |= hmac.compare_digest(given.strip().encode(), token.encode())
    if scheme.lower() != "bearer" or not valid:
        return error(401, "unauthorized", "missing or invalid bearer token")
    return await handler(request)


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (UnicodeDecodeError, ValueError) as exc:
        raise _abort(web.HTTPBadRequest, "invalid_json", f"the body is not JSON: {exc}") from None


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
    body = await _json_body(request)
    key = _idempotency_key(request)
    if not isinstance(body, dict):
        return error(422, "invalid_message", "the body must be a JSON object")
    provider_name = body.pop("provider", None)
    try:
        message = parse_message(body)
        provider = hub.provider(provider_name if isinstance(provider_name, str) else None)
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
    return web.json_response({"id": message_id, "status": row["status"]}, status=202)


async def get_message(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:
        message_id = int(request.match_info["id"])
    except ValueError:
        return error(404, "not_found", "no such message")
    row = await hub.storage.messages.get(message_id)
    if row is None:
        return error(404, "not_found", f"no message {message_id}")
    history = []
    if row["provider_message_id"] and row["direction"] == "out":
        history = await hub.storage.messages.status_history(row["provider"], row["provider_message_id"])
    failure = {"code": row["error_code"], "message": row["error_reason"]} if row["error_code"] else None
    return web.json_response(
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
        raise _abort(web.HTTPNotFound, "unknown_provider", f"no provider named {provider!r}")
    return hub, provider, request.match_info["address"]


async def get_consent(request: web.Request) -> web.Response:
    hub, provider, address = _contact(request)
    state = await hub.storage.policy.consent(provider, address)
    ledger = await hub.storage.policy.ledger(provider, address)
    for event in ledger:
        event.pop("id", None)
    return web.json_response({"state": {"all": state.all, "marketing": state.marketing}, "events": ledger})


async def record_consent(request: web.Request) -> web.Response:
    hub, provider, address = _contact(request)
    body = await _json_body(request)
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
    occurred_at = body.get("occurred_at", time.time())
    if not isinstance(occurred_at, int | float) or isinstance(occurred_at, bool):
        return error(422, "invalid_consent", "occurred_at must be unix seconds")
    await hub.storage.policy.record_consent(
        provider,
        address,
        action=body["action"],
        scope=body.get("scope", "all"),
        source="api",
        evidence=body["evidence"],
        occurred_at=float(occurred_at),
    )
    hub.metrics.consent_changes.labels(provider, body["action"], "api").inc()
    return await get_consent(request)


async def update_contact(request: web.Request) -> web.Response:
    hub, provider, address = _contact(request)
    body = await _json_body(request)
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
    return web.json_response({"provider": provider, "address": address, "timezone": zone})


async def get_media(request: web.Request) -> web.StreamResponse:
    store = request.app[HUB_KEY].storage.media
    file = await store.get(request.match_info["id"])
    if file is None or not store.path(file).is_file():
        return error(404, "not_found", "no such media file")
    headers = {"Content-Type": file.mime_type, "X-Content-SHA256": file.sha256, "X-Content-Type-Options": "nosniff"}
    if file.filename:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(file.filename, safe='')}"
    return web.FileResponse(store.path(file), headers=headers)


async def upload_media(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    store = hub.storage.media
    if not request.content_type.startswith("multipart/"):
        return error(400, "invalid_upload", "send the file as multipart/form-data in a field named 'file'")
    provider, data, mime_type, filename = request.query.get("provider"), None, "", None
    reader = await request.multipart()
    limit = max(store.max_bytes.values())
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "provider":
            provider = (await part.text()).strip()
        elif part.name == "file":
            mime_type = part.headers.get("Content-Type", "application/octet-stream")
            filename = part.filename
            chunks, size = [], 0
            while chunk := await part.read_chunk(1 << 16):
                size += len(chunk)
                if size > limit:
                    return error(413, "media_refused", f"the file is over the largest limit of {limit} bytes")
                chunks.append(chunk)
            data = b"".join(chunks)
    if data is None:
        return error(400, "invalid_upload", "no multipart field named 'file'")
    try:
        name = hub.provider(provider).name
    except SendRefused as exc:
        return error(404, exc.reason, str(exc))
    try:
        file = await store.save(name, kind_of(mime_type), data, mime_type, direction="out", filename=filename)
    except MediaRefused as exc:
        return error(422, "media_refused", str(exc))
    return web.json_response(
        {**file.summary(), "id": f"{LOCAL_PREFIX}{file.id}", "kind": kind_of(mime_type)}, status=201
    )


async def failed_inbox(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_FAILED_LISTED:
        return error(400, "invalid_limit", f"limit must be a whole number from 1 to {MAX_FAILED_LISTED}")
    rows = await hub.storage.failed_inbox(limit)
    return web.json_response({"events": [failed_event(row) for row in rows]})


async def retry_inbox(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:
        event_id = int(request.match_info["id"])
    except ValueError:
        return error(404, "not_found", "no such inbox event")
    if not await hub.storage.retry_failed_inbox([event_id]):
        return error(404, "not_found", f"no failed inbox event {event_id}")
    hub.inbox_ready.set()
    return web.json_response({"id": event_id, "state": "pending"})


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
    ]
