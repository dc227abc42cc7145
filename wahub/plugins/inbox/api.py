"""The inbox page's JSON endpoints under ``/inbox/api`` (see docs/inbox.md),
and ``GET /inbox/media/{id}``; every one needs a signed-in operator (``guarded``).
The shapes they answer with are built in ``shapes``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from wahub.core.canonical.validate import parse_message
from wahub.core.conversations.ownership import change_owner
from wahub.core.errors import InvalidMessage, SendRefused
from wahub.core.http.api import media_response, stored_upload
from wahub.core.http.api_io import error, error_text, json_body, json_response, path_id, path_text
from wahub.core.http.api_query import check_known, choices, cursor, search_text
from wahub.core.http.contacts import contact_changes
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.models import Conversation, OutgoingMessage, Owner
from wahub.core.policy.checks import SERVICE_WINDOW_SECONDS, Origin, window_open
from wahub.core.storage.desk import SECTIONS
from wahub.core.storage.media import LOCAL_PREFIX, kind_of
from wahub.core.storage.operators import Operator
from wahub.plugins.inbox.auth import guarded, operator_of
from wahub.plugins.inbox.shapes import (
    PLACEHOLDER,
    canned_replies,
    composer,
    contact_shape,
    event_entry,
    item,
    may_reply,
    message_entries,
    note_entry,
    template_text,
)
from wahub.plugins.inbox.state import Inbox, inbox_of

#: Longest text, caption or note an operator may write (WhatsApp's text limit).
MAX_TEXT = 4096
#: Messages on one page of a conversation's timeline.
TIMELINE_PAGE = 50
#: The owners an operator takes a conversation from: never from another operator.
TAKEABLE = frozenset({Owner.QUEUED, Owner.BOT})
_CAPTIONED = ("image", "video", "document")

# -- reading -----------------------------------------------------------------


def _parts(request: web.Request) -> tuple[Inbox, Hub, Operator]:
    hub = request.app[HUB_KEY]
    return inbox_of(hub), hub, operator_of(request)


async def listed(hub: Hub, operator: Operator, conversation_id: int) -> dict[str, Any] | None:
    """The list item of one conversation as ``operator`` sees it."""
    rows = await hub.storage.desk.listing(operator_id=operator.id, operator=operator.name, only=[conversation_id])
    return item(rows[0], hub.clock.time()) if rows else None


async def me(request: web.Request) -> web.Response:
    inbox, hub, operator = _parts(request)
    operators = [o.name for o in await hub.storage.operators.all() if not o.disabled]
    config = hub.config["wahub"]
    return json_response(
        {
            "operator": {"name": operator.name, "admin": operator.is_admin},
            "operators": operators,
            "canned_replies": canned_replies(inbox, None),
            "languages": list(dict.fromkeys([config["language"], *(config.get("languages") or sorted(hub.languages))])),
        }
    )


async def list_conversations(request: web.Request) -> web.Response:
    _, hub, operator = _parts(request)
    check_known(request, ("q", "section"))
    wanted = choices(request, "section", SECTIONS)
    if len(wanted) > 1:
        wanted = []  # several sections: all of them, filtered below
    rows = await hub.storage.desk.listing(
        operator_id=operator.id,
        operator=operator.name,
        section=wanted[0] if wanted else None,
        search=search_text(request, "q"),
    )
    chosen = set(choices(request, "section", SECTIONS)) or set(SECTIONS)
    now = hub.clock.time()
    sections: dict[str, list[dict[str, Any]]] = {name: [] for name in SECTIONS}
    for row in rows:
        if row["section"] in chosen:
            sections[row["section"]].append(item(row, now))
    return json_response({"sections": sections})


def _not_found(conversation_id: int) -> web.Response:
    return error(404, "not_found", f"no conversation {conversation_id}")


async def timeline(hub: Hub, conversation_id: int, before: int | None) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the timeline (oldest first): messages before ``before`` with the
    changes of owner and notes of the same stretch of time; and the next cursor."""
    page = await hub.storage.conversations.messages(conversation_id, before=before, limit=TIMELINE_PAGE)
    rows = page.items[::-1]
    upper = float("inf")
    if before is not None:
        anchor = await hub.storage.messages.get(before)
        upper = anchor["created_at"] if anchor is not None else upper
    lower = rows[0]["created_at"] if rows and page.next_after is not None else float("-inf")
    entries = await message_entries(hub, rows)
    if before is not None and not rows:
        return [], None
    events = [e for e in await hub.storage.conversations.events(conversation_id) if lower <= e.at < upper]
    notes = [n for n in await hub.storage.desk.notes(conversation_id) if lower <= n.created_at < upper]
    entries += [event_entry(e) for e in events] + [note_entry(n) for n in notes]
    order = {"message": 0, "event": 1, "note": 2}
    entries.sort(key=lambda entry: (entry["at"], order[entry["kind"]], entry["id"] or 0))
    return entries, page.next_after


async def get_conversation(request: web.Request) -> web.Response:
    inbox, hub, operator = _parts(request)
    conversation_id = path_id(request, what="conversation")
    check_known(request, ("before",))
    before = cursor(request, "before")
    conversation = await hub.storage.conversations.get(conversation_id)
    shown = await listed(hub, operator, conversation_id)
    if conversation is None or shown is None:
        return _not_found(conversation_id)
    contact = await contact_shape(hub, conversation.contact_id)
    entries, next_before = await timeline(hub, conversation_id, before)
    last_inbound = shown["window"]["closes_at"]
    last_inbound = None if last_inbound is None else last_inbound - SERVICE_WINDOW_SECONDS
    return json_response(
        {
            "conversation": shown,
            "contact": contact,
            "timeline": entries,
            "next": next_before,
            "composer": await composer(inbox, operator, conversation, last_inbound),
        }
    )


async def media_file(request: web.Request) -> web.StreamResponse:
    return await media_response(request.app[HUB_KEY], path_text(request, "id"), in_page=True)


# -- changes -----------------------------------------------------------------


def _invalid(code: str, message: str) -> web.HTTPUnprocessableEntity:
    return web.HTTPUnprocessableEntity(text=error_text(code, message), content_type="application/json")


async def _body(request: web.Request, allowed: Sequence[str]) -> dict[str, Any]:
    """The JSON object of a request (an empty body is ``{}``), its keys checked."""
    body = await json_body(request) if request.body_exists else {}
    if not isinstance(body, dict):
        raise _invalid("invalid_request", f"the body must be a JSON object with {', '.join(allowed)}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        names = ", ".join(repr(key[:40]) for key in unknown)
        raise _invalid("invalid_request", f"unknown key {names}: this takes {', '.join(allowed)}")
    return body


def _text(body: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise _invalid("invalid_request", f"{key} must be text of 1 to {MAX_TEXT} characters")
    return value.strip()


async def _conflict(hub: Hub, conversation_id: int, doing: str) -> web.Response:
    current = await hub.storage.conversations.get(conversation_id)
    assert current is not None  # conversations are never deleted
    who = f"{current.assignee} has it" if current.owner == Owner.ASSIGNED else f"it is {current.owner}"
    return error(
        409,
        "owner_conflict",
        f"conversation {conversation_id} cannot be {doing}: {who}",
        owner=str(current.owner),
        assignee=current.assignee,
    )


async def _changed(
    request: web.Request,
    change: str,
    doing: str,
    reason: str,
    *,
    assignee: str | None = None,
    only_from: frozenset[Owner] | None = None,
    held_by: str | None = None,
) -> web.Response:
    """Make ``change`` as the signed-in operator; the conversation's list item, or why not."""
    _, hub, operator = _parts(request)
    conversation_id = path_id(request, what="conversation")
    done = await change_owner(
        hub,
        conversation_id,
        change,
        actor=f"operator:{operator.name}",
        reason=reason,
        assignee=assignee,
        only_from=only_from,
        held_by=held_by,
    )
    if done is None:
        current = await hub.storage.conversations.get(conversation_id)
        if current is None:
            return _not_found(conversation_id)
        # Taking or being given what one already has is no conflict.
        if not (change == "assigned" and current.owner == Owner.ASSIGNED and current.assignee == assignee):
            return await _conflict(hub, conversation_id, doing)
    return json_response({"conversation": await listed(hub, operator, conversation_id)})


async def _owned_or_refused(request: web.Request) -> Conversation | web.Response:
    """The conversation if the operator may act on it as its owner (its assignee, or an admin)."""
    _, hub, operator = _parts(request)
    conversation_id = path_id(request, what="conversation")
    conversation = await hub.storage.conversations.get(conversation_id)
    if conversation is None:
        return _not_found(conversation_id)
    if not may_reply(operator, conversation):
        holder = conversation.assignee if conversation.owner == Owner.ASSIGNED else "nobody"
        return error(403, "not_yours", f"conversation {conversation_id} is not yours ({holder} has it)")
    return conversation


async def take(request: web.Request) -> web.Response:
    await _body(request, ())
    name = operator_of(request).name
    return await _changed(request, "assigned", "taken", f"taken by {name}", assignee=name, only_from=TAKEABLE)


async def assign(request: web.Request) -> web.Response:
    _, hub, operator = _parts(request)
    body = await _body(request, ("operator",))
    name = body.get("operator")
    target = await hub.storage.operators.get(name) if isinstance(name, str) and len(name) <= 64 else None
    if target is None or target.disabled:
        raise _invalid(
            "unknown_operator", f'expected {{"operator": "<name>"}} naming an enabled operator; got {name!r}'
        )
    conversation = await hub.storage.conversations.get(path_id(request, what="conversation"))
    if conversation is None:
        return _not_found(path_id(request, what="conversation"))
    reason = f"given to {target.name} by {operator.name}"
    if operator.is_admin:
        return await _changed(request, "assigned", "assigned", reason, assignee=target.name)
    # An operator gives away their own conversation (still theirs when the change
    # is made), or one from the queue or the bot's; never another operator's.
    held_by = operator.name if may_reply(operator, conversation) else None
    only_from = None if held_by else TAKEABLE
    return await _changed(
        request, "assigned", "assigned", reason, assignee=target.name, only_from=only_from, held_by=held_by
    )


async def release(request: web.Request) -> web.Response:
    await _body(request, ())
    owned = await _owned_or_refused(request)
    if isinstance(owned, web.Response):
        return owned
    operator = operator_of(request)
    reason = f"given back to the queue by {operator.name}"
    return await _changed(request, "released", "released", reason, held_by=None if operator.is_admin else operator.name)


async def resolve(request: web.Request) -> web.Response:
    await _body(request, ())
    operator = operator_of(request)
    reason = f"resolved by {operator.name}"
    if operator.is_admin:
        return await _changed(request, "resolved", "resolved", reason)
    conversation = await request.app[HUB_KEY].storage.conversations.get(path_id(request, what="conversation"))
    if conversation is not None and conversation.owner == Owner.QUEUED:
        # Anyone may close a hand-off nobody took: still untaken when the change is made.
        return await _changed(request, "resolved", "resolved", reason, only_from=frozenset({Owner.QUEUED}))
    owned = await _owned_or_refused(request)
    if isinstance(owned, web.Response):
        return owned
    return await _changed(request, "resolved", "resolved", reason, held_by=operator.name)


# -- writing -----------------------------------------------------------------


def _idempotency_key(operator: Operator, body: Mapping[str, Any]) -> str:
    client_id = body.get("client_id")
    if client_id is None:
        return f"inbox:{operator.name}:{uuid.uuid4()}"
    if not isinstance(client_id, str) or not 0 < len(client_id) <= 100 or not client_id.isprintable():
        raise _invalid("invalid_message", "client_id must be 1 to 100 printable characters")
    return f"inbox:{operator.name}:{client_id}"


async def _template_message(hub: Hub, conversation: Conversation, given: Any) -> dict[str, Any]:
    """The canonical template message of ``{"name", "language", "parameters"}``."""
    if (
        not isinstance(given, dict)
        or not isinstance(given.get("name"), str)
        or not isinstance(given.get("language"), str)
        or not isinstance(given.get("parameters", []), list)
        or not all(isinstance(p, str) for p in given.get("parameters", []))
    ):
        raise _invalid(
            "invalid_message", 'template must be {"name": ..., "language": ..., "parameters": [texts in order]}'
        )
    names: list[str] = []
    for row in await hub.storage.policy.templates(conversation.provider):
        if row["name"] == given["name"] and row["language"] == given["language"]:
            names = list(dict.fromkeys(PLACEHOLDER.findall(template_text(hub, conversation.provider, row))))
    values = given.get("parameters", [])
    if names and len(values) != len(names):
        raise _invalid(
            "invalid_message", f"template {given['name']!r} takes {len(names)} parameters ({', '.join(names)})"
        )
    parameters: list[dict[str, Any]] = []
    for index, value in enumerate(values):
        parameter: dict[str, Any] = {"type": "text", "text": value}
        if index < len(names) and not names[index].isdigit():
            parameter["parameter_name"] = names[index]
        parameters.append(parameter)
    template: dict[str, Any] = {"name": given["name"], "language": {"code": given["language"]}}
    if parameters:
        template["components"] = [{"type": "body", "parameters": parameters}]
    return {"type": "template", "template": template}


async def _media_message(hub: Hub, body: Mapping[str, Any]) -> dict[str, Any]:
    media_id = body.get("media")
    file = None
    if isinstance(media_id, str) and media_id.startswith(LOCAL_PREFIX):
        file = await hub.storage.media.get(media_id.removeprefix(LOCAL_PREFIX))
    if file is None:
        raise _invalid("invalid_message", 'media must be the "id" POST /inbox/api/media answered (wahub:<id>)')
    kind = kind_of(file.mime_type)
    content: dict[str, Any] = {"id": media_id}
    caption = _text(body, "caption", required=False)
    if caption is not None and kind in _CAPTIONED:
        content["caption"] = caption
    if kind == "document" and file.filename:
        content["filename"] = file.filename
    return {"type": kind, kind: content}


async def _outgoing(hub: Hub, conversation: Conversation, body: Mapping[str, Any]) -> OutgoingMessage:
    """The message a send's body asks for, checked as the REST API checks one."""
    if "template" in body:
        shape = await _template_message(hub, conversation, body["template"])
    elif "media" in body:
        shape = await _media_message(hub, body)
    elif "text" in body:
        shape = {"type": "text", "text": {"body": _text(body, "text")}}
    else:
        raise _invalid("invalid_message", 'send {"text"}, {"media", "caption"?} or {"template"}')
    reply_to = body.get("reply_to")
    if reply_to is not None:
        quoted = await hub.storage.messages.get(reply_to) if isinstance(reply_to, int) and reply_to > 0 else None
        if quoted is None or quoted["conversation_id"] != conversation.id or not quoted["provider_message_id"]:
            raise _invalid("invalid_message", "reply_to must be the id of a delivered message of this conversation")
        shape["context"] = {"message_id": quoted["provider_message_id"]}
    try:
        return parse_message({"to": conversation.address, **shape})
    except InvalidMessage as exc:
        raise _invalid("invalid_message", str(exc)) from None


async def send(request: web.Request) -> web.Response:
    _, hub, operator = _parts(request)
    body = await _body(request, ("text", "reply_to", "media", "caption", "template", "client_id"))
    owned = await _owned_or_refused(request)
    if isinstance(owned, web.Response):
        return owned
    message = await _outgoing(hub, owned, body)
    page = await hub.storage.conversations.list(only=owned.id, limit=1)
    last_inbound = page.items[0]["last_inbound_at"] if page.items else None
    # Inside the window an operator answers the contact; outside it only a template
    # goes, as the business writing first (consent and quiet hours apply).
    origin: Origin = "reply" if window_open(last_inbound, hub.clock.time()) else "business"
    key = _idempotency_key(operator, body)
    try:
        message_id = await hub.send(message, provider=owned.provider, idempotency_key=key, origin=origin)
    except SendRefused as exc:
        return error(422, exc.reason, str(exc))
    row = await hub.storage.messages.get(message_id)
    assert row is not None
    if row["conversation_id"] != owned.id:
        return error(409, "idempotency_conflict", "this client_id was used for a message of another conversation")
    await hub.storage.conversations.note_human(owned.id, hub.clock.time())
    [entry] = await message_entries(hub, [row])
    return json_response(entry, status=202)


async def add_note(request: web.Request) -> web.Response:
    _, hub, operator = _parts(request)
    conversation_id = path_id(request, what="conversation")
    text = _text(await _body(request, ("text",)), "text")
    assert text is not None
    if await hub.storage.conversations.get(conversation_id) is None:
        return _not_found(conversation_id)
    note = await hub.storage.desk.add_note(conversation_id, operator.name, text, now=hub.clock.time())
    return json_response(note_entry(note), status=201)


async def mark_read(request: web.Request) -> web.Response:
    _, hub, operator = _parts(request)
    conversation_id = path_id(request, what="conversation")
    message_id = (await _body(request, ("message_id",))).get("message_id")
    if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id <= 0:
        raise _invalid("invalid_request", 'expected {"message_id": <id of the last message seen>}')
    if await hub.storage.conversations.get(conversation_id) is None:
        return _not_found(conversation_id)
    await hub.storage.desk.mark_read(operator.id, conversation_id, message_id)
    return json_response({"conversation": await listed(hub, operator, conversation_id)})


async def update_contact(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    contact_id = path_id(request, what="contact")
    body = await _body(request, ("language", "tags"))
    changes = contact_changes(body)
    if await hub.storage.contacts.get(contact_id) is None:
        return error(404, "not_found", f"no contact {contact_id}")
    if changes:
        await hub.storage.contacts.update(contact_id, changes)
    return json_response({"contact": await contact_shape(hub, contact_id)})


async def upload(request: web.Request) -> web.Response:
    stored = await stored_upload(request)
    if isinstance(stored, web.Response):
        return stored
    return json_response(
        {
            "id": f"{LOCAL_PREFIX}{stored.id}",
            "mime_type": stored.mime_type,
            "filename": stored.filename,
            "kind": kind_of(stored.mime_type),
            "size": stored.size,
            "url": f"/inbox/media/{stored.id}",
        },
        status=201,
    )


def api_routes(inbox: Inbox) -> list[web.RouteDef]:
    base, one = "/inbox/api", "/inbox/api/conversations/{id}"
    handlers = [
        ("GET", f"{base}/me", me),
        ("GET", f"{base}/conversations", list_conversations),
        ("GET", one, get_conversation),
        ("POST", f"{one}/take", take),
        ("POST", f"{one}/assign", assign),
        ("POST", f"{one}/release", release),
        ("POST", f"{one}/resolve", resolve),
        ("POST", f"{one}/messages", send),
        ("POST", f"{one}/notes", add_note),
        ("POST", f"{one}/read", mark_read),
        ("PATCH", f"{base}/contacts/{{id}}", update_contact),
        ("POST", f"{base}/media", upload),
        ("GET", "/inbox/media/{id}", media_file),
    ]
    return [web.route(method, path, guarded(inbox, handler)) for method, path, handler in handlers]
