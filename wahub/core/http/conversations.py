"""The REST API's conversations: listing them, one with its owner's history and
its messages, and the changes of owner a person asks for.

- ``GET /api/v1/conversations``: by id, filtered by ``owner``, ``contact_id``
  and ``updated_since``; ``{"conversations": [...], "next": cursor|null}``.
- ``GET /api/v1/conversations/{id}``: the conversation, its ownership
  ``events`` (oldest first) and a page of its ``messages`` (newest first,
  refused and dropped ones included, each with its delivery statuses).
- ``POST /api/v1/conversations/{id}/handoff|resolve|assign|release``: ask for a
  person, give it back to the bot, give it to an operator, give an
  operator's conversation back to the queue (actor ``api``); 409
  ``owner_conflict`` when the current owner does not allow it.

Times are unix seconds, as everywhere in the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from wahub.core.conversations.ownership import change_owner
from wahub.core.http.api_io import MAX_INT, error, error_text, json_body, json_response, path_id
from wahub.core.http.api_query import (
    check_known,
    choices,
    cursor,
    page_limit,
    point_in_time,
    positive_id,
)
from wahub.core.http.api_schemas import CONVERSATION, CONVERSATION_MESSAGE, CONVERSATION_WITH_EVENTS, Schema, page_of
from wahub.core.http.openapi import ERROR_SCHEMA, PAGE_AFTER, PAGE_LIMIT, Answer, Handler, Operation, Param, errors
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.models import OWNER_CHANGES, Owner, OwnershipChange
from wahub.core.policy.checks import SERVICE_WINDOW_SECONDS, window_open

#: Longest reason a change may give, and longest operator name (the ``assignee`` column).
MAX_REASON, MAX_OPERATOR = 1000, 128

_LIST_PARAMETERS = ("owner", "contact_id", "updated_since", "limit", "after")
_DETAIL_PARAMETERS = ("before", "limit")


def conversation_item(row: Mapping[str, Any], now: float) -> dict[str, Any]:
    """A conversation as the API shows it, from a row of ``ConversationStore.list``."""
    last_inbound = row["last_inbound_at"]
    return {
        "id": row["id"],
        "provider": row["provider"],
        "contact": {
            "id": row["contact_id"],
            "address": row["address"],
            "name": row["contact_name"],
            "language": row["language"],
        },
        "owner": str(row["owner"]),
        "assignee": row["assignee"],
        "owner_changed_at": row["owner_changed_at"],
        "updated_at": row["updated_at"],
        "last_inbound_at": last_inbound,
        "window_open_until": None if last_inbound is None else last_inbound + SERVICE_WINDOW_SECONDS,
        "window_open": window_open(last_inbound, now),
    }


def event_item(change: OwnershipChange) -> dict[str, Any]:
    """One change of owner as the API shows it."""
    return {
        "change": change.change,
        "from": str(change.from_owner),
        "to": str(change.to_owner),
        "actor": change.actor,
        "reason": change.reason,
        "assignee": change.assignee,
        "at": change.at,
    }


async def message_items(hub: Hub, provider: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages of one provider's conversation as ``GET /api/v1/messages/{id}`` shows
    them, with their origin and the delivery statuses of those the provider accepted."""
    sent = [row["provider_message_id"] for row in rows if row["provider_message_id"] and row["direction"] == "out"]
    # One read for the page: a query per message would cost a round trip each.
    histories = await hub.storage.messages.status_histories(provider, sent)
    return [
        {
            "id": row["id"],
            "direction": row["direction"],
            "to" if row["direction"] == "out" else "from": row["address"],
            "type": row["type"],
            "status": row["status"],
            "provider_message_id": row["provider_message_id"],
            "origin": row["origin"],
            "error": {"code": row["error_code"], "message": row["error_reason"]} if row["error_code"] else None,
            "statuses": histories.get(row["provider_message_id"], []) if row["direction"] == "out" else [],
            "message": row["body"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }
        for row in rows
    ]


async def _conversation(hub: Hub, conversation_id: int) -> dict[str, Any] | None:
    """The conversation with its ownership events, or None when there is none with this id."""
    # The listing's row of this one id: it carries the times ``get`` leaves out.
    page = await hub.storage.conversations.list(only=conversation_id, limit=1)
    if not page.items:
        return None
    events = await hub.storage.conversations.events(conversation_id)
    return {**conversation_item(page.items[0], hub.clock.time()), "events": [event_item(e) for e in events]}


def _not_found(conversation_id: int) -> web.Response:
    return error(404, "not_found", f"no conversation {conversation_id}")


async def list_conversations(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    check_known(request, _LIST_PARAMETERS)
    page = await hub.storage.conversations.list(
        owners=choices(request, "owner", [owner.value for owner in Owner]),
        contact_id=positive_id(request, "contact_id"),
        updated_since=point_in_time(request, "updated_since"),
        after=cursor(request, "after"),
        limit=page_limit(request),
    )
    now = hub.clock.time()
    items = [conversation_item(row, now) for row in page.items]
    return json_response({"conversations": items, "next": page.next_after})


async def get_conversation(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    conversation_id = path_id(request, what="conversation")
    check_known(request, _DETAIL_PARAMETERS)
    before, limit = cursor(request, "before"), page_limit(request)
    found = await _conversation(hub, conversation_id)
    if found is None:
        return _not_found(conversation_id)
    page = await hub.storage.conversations.messages(conversation_id, before=before, limit=limit)
    messages = await message_items(hub, found["provider"], page.items)
    return json_response({**found, "messages": messages, "next": page.next_after})


def _text(body: Mapping[str, Any], key: str, longest: int, *, one_line: bool = True) -> str | None:
    """``body[key]``: absent or null is None, else text of 1 to ``longest`` characters
    (printable ones when ``one_line``), stripped."""
    value = body.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > longest
        or (one_line and not value.isprintable())
    ):
        kind = "printable characters" if one_line else "characters"
        raise _invalid(f"{key} must be text of 1 to {longest} {kind}")
    return value.strip()


def _invalid(message: str) -> web.HTTPUnprocessableEntity:
    return web.HTTPUnprocessableEntity(text=error_text("invalid_change", message), content_type="application/json")


async def _change_body(request: web.Request, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    """The JSON object a change takes (an empty body is ``{}``), its keys checked."""
    body = await json_body(request) if request.body_exists else {}
    if not isinstance(body, dict):
        raise _invalid(f"the body must be a JSON object with {' and '.join(allowed)}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        names = ", ".join(repr(key[:40]) for key in unknown)
        raise _invalid(f"unknown key {names}: this change takes {', '.join(allowed)}")
    return body


async def _apply(
    hub: Hub, conversation_id: int, change: str, verb: str, reason: str, *, assignee: str | None = None
) -> web.Response:
    """Make ``change`` as the API and answer the conversation, or why not (``verb`` names the endpoint)."""
    if await hub.storage.conversations.get(conversation_id) is None:
        return _not_found(conversation_id)
    done = await change_owner(hub, conversation_id, change, actor="api", reason=reason, assignee=assignee)
    if done is None:
        current = await hub.storage.conversations.get(conversation_id)
        assert current is not None  # conversations are never deleted
        allowed, _ = OWNER_CHANGES[change]
        if current.owner == Owner.ASSIGNED and change == "assigned":
            problem = f"it is already assigned to {current.assignee}"  # the only assignment refused
        else:
            problem = f"{verb} is allowed only while it is {', '.join(sorted(allowed))}"
        return error(
            409,
            "owner_conflict",
            f"conversation {conversation_id} is owned by {current.owner}: {problem}",
            owner=str(current.owner),
            assignee=current.assignee,
        )
    found = await _conversation(hub, conversation_id)
    assert found is not None
    return json_response(found)


async def handoff(request: web.Request) -> web.Response:
    conversation_id = path_id(request, what="conversation")
    body = await _change_body(request, ("reason",))
    reason = _text(body, "reason", MAX_REASON, one_line=False) or "handed off through the API"
    return await _apply(request.app[HUB_KEY], conversation_id, "queued", "handoff", reason)


async def resolve(request: web.Request) -> web.Response:
    conversation_id = path_id(request, what="conversation")
    body = await _change_body(request, ("reason",))
    reason = _text(body, "reason", MAX_REASON, one_line=False) or "resolved through the API"
    return await _apply(request.app[HUB_KEY], conversation_id, "resolved", "resolve", reason)


async def release(request: web.Request) -> web.Response:
    conversation_id = path_id(request, what="conversation")
    body = await _change_body(request, ("reason",))
    reason = _text(body, "reason", MAX_REASON, one_line=False) or "given back to the queue through the API"
    return await _apply(request.app[HUB_KEY], conversation_id, "released", "release", reason)


async def assign(request: web.Request) -> web.Response:
    conversation_id = path_id(request, what="conversation")
    body = await _change_body(request, ("operator", "reason"))
    operator = _text(body, "operator", MAX_OPERATOR)
    if operator is None:
        raise _invalid(f'expected {{"operator": "<name>"}}: an operator\'s name of 1 to {MAX_OPERATOR} characters')
    reason = _text(body, "reason", MAX_REASON, one_line=False) or f"assigned to {operator} through the API"
    return await _apply(request.app[HUB_KEY], conversation_id, "assigned", "assign", reason, assignee=operator)


_ONE = "/api/v1/conversations/{id}"
_ID = Param(
    "id", {"type": "integer", "minimum": 1, "maximum": MAX_INT}, "The conversation's id", where="path", example=1
)
_REASON: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_REASON, "description": "Why, for the history"}
_CHANGED = {
    200: Answer("The conversation after the change", CONVERSATION_WITH_EVENTS),
    **errors(400, 401, 404, 413),
    409: Answer("The current owner does not allow this change (owner and assignee say who has it)", ERROR_SCHEMA),
    422: Answer("The body is refused (invalid_change names the key)", ERROR_SCHEMA),
}


def _change(path: str, handler: Handler, summary: str, **properties: Schema) -> Operation:
    """A change of owner: a JSON object of ``properties`` (``reason`` among them), or no body."""
    return Operation(
        "POST",
        f"{_ONE}/{path}",
        handler,
        summary,
        "conversations",
        _CHANGED,
        body={"type": "object", "properties": {**properties, "reason": _REASON}, "additionalProperties": False},
        body_error="invalid_change",
        body_required=False,
        handler_checks_body=True,
        params=[_ID],
    )


def operations() -> list[Operation]:
    listing = page_of("conversations", CONVERSATION)
    owners = ", ".join(owner.value for owner in Owner)
    return [
        Operation(
            "GET",
            "/api/v1/conversations",
            list_conversations,
            "Conversations by id, filtered",
            "conversations",
            {200: Answer("A page of conversations", listing), **errors(400, 401)},
            params=[
                Param("owner", {"type": "string"}, f"One or more of {owners}, separated by commas"),
                Param("contact_id", {"type": "integer", "minimum": 1, "maximum": MAX_INT}, "The contact's id"),
                Param("updated_since", {"type": "string"}, "Unix seconds or an ISO 8601 time"),
                PAGE_LIMIT,
                PAGE_AFTER,
            ],
        ),
        Operation(
            "GET",
            _ONE,
            get_conversation,
            "A conversation, its owner's history and a page of its messages",
            "conversations",
            {
                200: Answer(
                    "The conversation; messages newest first",
                    {
                        "allOf": [
                            CONVERSATION_WITH_EVENTS,
                            page_of("messages", CONVERSATION_MESSAGE),
                        ]
                    },
                ),
                **errors(400, 401, 404),
            },
            params=[
                _ID,
                Param("before", {"type": "integer", "minimum": 1, "maximum": MAX_INT}, "The previous page's next"),
                PAGE_LIMIT,
            ],
        ),
        _change("handoff", handoff, "Ask for a person"),
        _change("resolve", resolve, "Give the conversation back to the bot"),
        _change(
            "assign",
            assign,
            "Give the conversation to an operator",
            operator={"type": "string", "minLength": 1, "maxLength": MAX_OPERATOR, "description": "The operator"},
        ),
        _change("release", release, "Give an operator's conversation back to the queue"),
    ]
