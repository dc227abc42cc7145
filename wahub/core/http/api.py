"""The REST API under ``/api/v1``: bearer tokens from ``wahub.api_tokens``,
JSON in and out, errors as ``{"error": {"code": ..., "message": ...}}``.
Every endpoint is an ``Operation`` (``api_operations``), so the OpenAPI
document at ``/api/v1/openapi.json`` (served, with its page ``/api/v1/docs``,
without a token) describes exactly what is served.

- ``POST /api/v1/messages``: queue a message (the canonical JSON with ``to``
  and an optional ``provider``). 202 ``{"id", "status"}``; 422 for an invalid
  message or a policy refusal, with the reason as ``code``. An
  ``Idempotency-Key`` header makes retries safe: the same key returns the
  first message and never sends twice (409 if the body differs).
- ``GET /api/v1/messages/{id}``: status, provider id, status history, error.
- ``GET /api/v1/inbox/failed``: inbox events that gave up, oldest first
  (``?limit=``, default 100), phone numbers masked. ``POST
  /api/v1/inbox/{id}/retry``: run a failed event again (404 if it is not failed).
- Conversations (list, one with its messages, hand-off, resolve, assign) are in
  ``conversations``; contacts by id (search, get, PATCH) in ``contacts``, by
  address (consent ledger, time zone) in ``consent``;
  files (upload, download) in ``media``; ``/api/v1/status`` in ``health``.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from wahub.core.canonical.validate import parse_message
from wahub.core.errors import InvalidMessage, SendRefused
from wahub.core.http import (
    api_docs,
    consent,
    contacts,
    contacts_import,
    conversations,
    deliveries,
    health,
    media,
    notifications,
    reminders,
)
from wahub.core.http.api_io import MAX_INT, error, idempotency_key, json_response, path_id
from wahub.core.http.api_schemas import (
    ID,
    MAYBE_TEXT,
    MAYBE_TIME,
    MESSAGE,
    TEXT,
    TIME,
    Schema,
    obj,
)
from wahub.core.http.media import media_response, stored_upload
from wahub.core.http.openapi import IDEMPOTENCY_KEY, Answer, Operation, Param, body_of, errors, route_defs
from wahub.core.hub import HUB_KEY
from wahub.core.inbound.failures import failed_event
from wahub.core.models import InboxState

_LOGGER = logging.getLogger(__name__)

PREFIX = "/api/v1/"
#: Largest consent evidence, as JSON: a form's answers and its wording, not a document.
MAX_FAILED_LISTED = 1000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["api_operations", "api_routes", "auth_middleware", "error", "media_response", "stored_upload"]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every ``/api/v1`` request needs ``Authorization: Bearer <one of wahub.api_tokens>``;
    every error it gets is in the JSON envelope."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    if request.path in api_docs.PUBLIC_PATHS:  # the API's description: nothing secret in it
        return await _in_envelope(request, handler)
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


async def send_message(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    body = dict(body_of(request))
    key = idempotency_key(request)
    provider_name = body.pop("provider", None)
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


def _id(what: str) -> Param:
    return Param(
        "id", {"type": "integer", "minimum": 1, "maximum": MAX_INT}, f"The {what}'s id", where="path", example=1
    )


#: A message to send: the canonical JSON (see docs/api.md), with ``to`` and an optional ``provider``.
#: ``to`` and ``type`` are checked with the rest of the message (after the
#: Idempotency-Key, whose refusal is a 400 whatever the body).
SEND_BODY: Schema = {
    "type": "object",
    "description": "A canonical message; to and type are required",
    "examples": [{"to": "15551234567", "type": "text", "text": {"body": "Your order has shipped"}}],
    "properties": {
        "to": {"type": "string", "minLength": 1, "description": "Phone number (digits), wa_id or BSUID"},
        "type": {"type": "string", "description": "text, image, document, interactive, template, ..."},
        "provider": {
            "type": ["string", "null"],
            "description": "The provider to send through; the first one when absent",
        },
    },
    "additionalProperties": True,
}

FAILED_EVENT = obj(
    ["id", "provider", "kind", "attempts", "error", "received_at", "failed_at"],
    id=ID,
    provider=TEXT,
    kind=TEXT,
    attempts={"type": "integer", "minimum": 0},
    error=MAYBE_TEXT,
    contact={"type": ["string", "null"], "description": "The contact, its digits masked"},
    received_at=TIME,
    failed_at=MAYBE_TIME,
)


def _message_operations() -> list[Operation]:
    return [
        Operation(
            "POST",
            "/api/v1/messages",
            send_message,
            "Queue a message",
            "messages",
            {
                202: Answer(
                    "Queued (or, with a used Idempotency-Key, the first message)",
                    obj(["id", "status"], id=ID, status=TEXT),
                ),
                **errors(400, 401, 409, 413, 422),
            },
            description=(
                "A policy refusal (window_closed, opted_out, template_not_approved...) is a 422 "
                "with the reason as its code."
            ),
            body=SEND_BODY,
            body_error="invalid_message",
            params=[IDEMPOTENCY_KEY],
        ),
        Operation(
            "GET",
            "/api/v1/messages/{id}",
            get_message,
            "A message with its delivery statuses",
            "messages",
            {200: Answer("The message", MESSAGE), **errors(401, 404)},
            params=[_id("message")],
        ),
    ]


def _inbox_operations() -> list[Operation]:
    return [
        Operation(
            "GET",
            "/api/v1/inbox/failed",
            failed_inbox,
            "Inbox events that gave up, oldest first",
            "inbox",
            {
                200: Answer(
                    "The events, phone numbers masked", obj(["events"], events={"type": "array", "items": FAILED_EVENT})
                ),
                **errors(400, 401),
            },
            params=[
                Param(
                    "limit", {"type": "integer", "minimum": 1, "maximum": MAX_FAILED_LISTED, "default": 100}, "How many"
                )
            ],
        ),
        Operation(
            "POST",
            "/api/v1/inbox/{id}/retry",
            retry_inbox,
            "Run a failed inbox event again",
            "inbox",
            {200: Answer("Pending again", obj(["id", "state"], id=ID, state=TEXT)), **errors(401, 404)},
            params=[_id("inbox event")],
        ),
    ]


def api_operations() -> list[Operation]:
    """Every endpoint of the core REST API, as the document lists them: a new
    module of endpoints adds its ``operations()`` here."""
    return [
        *_message_operations(),
        *consent.operations(),
        *media.operations(),
        *_inbox_operations(),
        *conversations.operations(),
        *contacts.operations(),
        *contacts_import.operations(),
        *health.operations(),
        *notifications.operations(),
        *reminders.operations(),
        *deliveries.operations(),
        *api_docs.operations(),
    ]


def api_routes() -> list[web.RouteDef]:
    """The core REST API's routes: its operations, and the docs page's static files."""
    return [*route_defs(api_operations()), *api_docs.static_routes()]
