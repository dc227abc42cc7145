"""The shapes the inbox's page reads (docs/inbox.md): a conversation in the
list (``item``), its contact (``contact_shape``), the timeline's entries
(``message_entry``, ``event_entry``, ``note_entry``) and what the composer
offers (``composer``). The JSON API and the live feed send the same ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from wahub.core.config.validators import canonical_language
from wahub.core.conversations.language import fallback_chain, localized
from wahub.core.http.contacts import sync_state
from wahub.core.http.conversations import event_item
from wahub.core.hub import Hub
from wahub.core.models import Conversation, Owner, OwnershipChange
from wahub.core.policy.checks import SERVICE_WINDOW_SECONDS, window_open
from wahub.core.storage.desk import Note
from wahub.core.storage.media import LOCAL_PREFIX
from wahub.core.storage.operators import Operator
from wahub.core.storage.policy import consent_state
from wahub.plugins.inbox.state import Inbox

#: Longest preview of a message in the list.
MAX_PREVIEW = 160

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


# -- shapes ------------------------------------------------------------------


def window_of(last_inbound_at: float | None, now: float) -> dict[str, Any]:
    """The 24-hour service window: open or not, and when it closes (None: never opened)."""
    closes = None if last_inbound_at is None else last_inbound_at + SERVICE_WINDOW_SECONDS
    return {"open": window_open(last_inbound_at, now), "closes_at": closes}


def preview(body: Mapping[str, Any] | None, kind: str) -> str:
    """A short text for a message in the list: its text, caption or what it is."""
    content = (body or {}).get(kind)
    text = ""
    if isinstance(content, dict):
        if kind == "text":
            text = str(content.get("body", ""))
        elif kind == "interactive":
            inner = content.get("body") or content.get(str(content.get("type", ""))) or {}
            text = str(inner.get("text") or inner.get("title") or "") if isinstance(inner, dict) else ""
        elif kind == "template":
            text = f"template {content.get('name', '')}"
        elif kind == "reaction":
            text = str(content.get("emoji", ""))
        elif kind == "location":
            text = str(content.get("name") or content.get("address") or "")
        else:
            text = str(content.get("caption") or content.get("filename") or "")
    text = " ".join(text.split())
    if not text:
        text = f"[{kind}]"
    return text if len(text) <= MAX_PREVIEW else text[: MAX_PREVIEW - 1] + "…"


def author(row: Mapping[str, Any]) -> str:
    """Who wrote a message: ``contact``, ``bot``, ``operator:<name>``, ``phone`` (the
    business app), ``api``, or ``business`` (a notification or a scheduled send)."""
    if row["direction"] == "in":
        return "contact"
    if row.get("origin") == "phone":
        return "phone"
    key = str(row.get("idempotency_key") or "")
    if key.startswith("reply:"):
        return "bot"
    if key.startswith("inbox:"):
        return f"operator:{key.split(':')[1]}"
    return "api" if key.startswith("api:") else "business"


def item(row: Mapping[str, Any], now: float) -> dict[str, Any]:
    """A conversation in the list, from a row of ``DeskStore.listing``."""
    last = row.get("last")
    return {
        "id": row["id"],
        "section": row["section"],
        "owner": str(row["owner"]),
        "assignee": row["assignee"],
        "contact": {
            "id": row["contact_id"],
            "name": row["contact_name"],
            "address": row["address"],
            "language": row["language"],
            "tags": list(row.get("tags") or []),
        },
        "last": None
        if not last
        else {
            "id": last["id"],
            "direction": last["direction"],
            "type": last["type"],
            "preview": preview(last.get("body"), last["type"]),
            "by": author(last),
            "status": last["status"],
            "at": last["created_at"],
        },
        "unread": row.get("unread", 0),
        "queued_at": row.get("queued_at"),
        "updated_at": row["updated_at"],
        "window": window_of(row["last_inbound_at"], now),
    }


def _consent(ledger: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    state = consent_state(ledger)
    if state.opted_out:
        summary = "opted_out"
    elif state.marketing_allowed:
        summary = "opted_in"
    elif state.marketing == "opt_out":
        summary = "no_marketing"
    else:
        summary = "unknown"
    events = [
        {"action": e["action"], "scope": e["scope"], "source": e["source"], "at": e["occurred_at"]} for e in ledger
    ]
    return {"state": summary, "ledger": events}


async def contact_shape(hub: Hub, contact_id: int) -> dict[str, Any] | None:
    """The contact as the conversation pane shows it, or None when unknown."""
    contact = await hub.storage.contacts.get(contact_id)
    if contact is None:
        return None
    ids = {entry["kind"]: entry["value"] for entry in contact["identities"]}
    ledger = await hub.storage.policy.ledger(contact["provider"], contact["address"])
    return {
        "id": contact["id"],
        "name": contact["name"],
        "address": contact["address"],
        "phone": ids.get("phone") or ids.get("wa_id"),
        "bsuid": ids.get("bsuid"),
        "language": contact["language"],
        "language_source": contact["language_source"],
        "tags": contact["tags"],
        "consent": _consent(ledger),
        "sync": await sync_state(hub, contact_id),
    }


def _shown_body(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The stored message with its file's address under /inbox (the session opens no /api/v1)."""
    shown = dict(body)
    content = shown.get(kind)
    if not isinstance(content, dict):
        return shown
    note = content.get("wahub_media")
    media_id = content.get("id")
    if isinstance(note, dict) and note.get("id"):
        shown[kind] = {**content, "wahub_media": {**note, "url": f"/inbox/media/{note['id']}"}}
    elif isinstance(media_id, str) and media_id.startswith(LOCAL_PREFIX):
        local = media_id.removeprefix(LOCAL_PREFIX)
        shown[kind] = {**content, "wahub_media": {"id": local, "url": f"/inbox/media/{local}"}}
    return shown


def message_entry(row: Mapping[str, Any], statuses: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A message of the timeline, from a message row and its delivery statuses."""
    body = row["body"] or {}
    context = body.get("context")
    return {
        "kind": "message",
        "id": row["id"],
        "direction": row["direction"],
        "type": row["type"],
        "message": _shown_body(body, row["type"]),
        "status": row["status"],
        "statuses": list(statuses),
        "origin": row["origin"],
        "by": author(row),
        "error": {"code": row["error_code"], "message": row["error_reason"]} if row["error_code"] else None,
        "provider_message_id": row["provider_message_id"],
        "reply_to": context.get("message_id") if isinstance(context, dict) else None,
        "at": row["created_at"],
    }


async def message_entries(hub: Hub, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Timeline entries of message rows, with the statuses of those sent, in one read per provider."""
    by_provider: dict[str, list[str]] = {}
    for row in rows:
        if row["direction"] == "out" and row["provider_message_id"]:
            by_provider.setdefault(row["provider"], []).append(row["provider_message_id"])
    histories: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for provider, ids in by_provider.items():
        for pmid, history in (await hub.storage.messages.status_histories(provider, ids)).items():
            histories[(provider, pmid)] = history
    return [message_entry(row, histories.get((row["provider"], row["provider_message_id"] or ""), [])) for row in rows]


def event_entry(change: OwnershipChange) -> dict[str, Any]:
    """A change of owner in the timeline."""
    return {"kind": "event", "id": change.id, **event_item(change)}


def note_entry(note: Note) -> dict[str, Any]:
    return {"kind": "note", "id": note.id, "author": note.author, "text": note.text, "at": note.created_at}


def template_text(hub: Hub, provider: str, row: Mapping[str, Any]) -> str:
    """A template's body text: from its components, else the provider's own (the sandbox's simulated ones)."""
    for component in row.get("components") or []:
        if isinstance(component, dict) and str(component.get("type", "")).lower() == "body":
            return str(component.get("text", ""))
    configured = hub.providers[provider].config.get("templates") if provider in hub.providers else None
    for entry in configured or []:
        if isinstance(entry, dict) and entry.get("name") == row["name"] and entry.get("language") == row["language"]:
            return str(entry.get("text", ""))
    return ""


def _language_key(code: str) -> str:
    return canonical_language(code.replace("_", "-")) or code


async def templates_for(hub: Hub, provider: str, language: str | None) -> list[dict[str, Any]]:
    """The provider's approved templates, each in the best language of the contact's fallback chain."""
    chain = fallback_chain(language, hub.config["wahub"]["language"])
    best: dict[str, tuple[int, dict[str, Any]]] = {}
    for row in await hub.storage.policy.templates(provider):
        key = _language_key(row["language"])
        if row["status"] != "APPROVED" or key not in chain:
            continue
        rank = chain.index(key)
        if row["name"] not in best or rank < best[row["name"]][0]:
            best[row["name"]] = (rank, row)
    shown = []
    for name in sorted(best):
        row = best[name][1]
        text = template_text(hub, provider, row)
        shown.append(
            {
                "name": name,
                "language": row["language"],
                "category": row["category"],
                "text": text,
                "parameters": list(dict.fromkeys(PLACEHOLDER.findall(text))),
            }
        )
    return shown


def canned_replies(inbox: Inbox, language: str | None) -> list[dict[str, str]]:
    default = inbox.hub.config["wahub"]["language"]
    return [
        {"title": entry["title"], "text": localized(entry["text"], language, default)}
        for entry in inbox.config["canned_replies"]
    ]


def may_reply(operator: Operator, conversation: Conversation) -> bool:
    """Only the operator a conversation is assigned to, or an admin, answers in it."""
    mine = conversation.owner == Owner.ASSIGNED and conversation.assignee == operator.name
    return mine or operator.is_admin


async def composer(
    inbox: Inbox, operator: Operator, conversation: Conversation, last_inbound_at: float | None
) -> dict[str, Any]:
    """What the operator may send in the conversation now, and why not."""
    hub = inbox.hub
    window = window_of(last_inbound_at, hub.clock.time())
    templates = await templates_for(hub, conversation.provider, conversation.language)
    can_reply, why_not = True, None
    if not may_reply(operator, conversation):
        can_reply = False
        why_not = (
            f"{conversation.assignee} has this conversation: only they or an admin may answer"
            if conversation.owner == Owner.ASSIGNED
            else "take the conversation to answer it"
        )
    elif not window["open"]:
        can_reply = bool(templates)
        why_not = (
            "the contact has not written in 24 hours: text needs an open window, only an approved template can be sent"
            if templates
            else "the contact has not written in 24 hours and no approved template is in the contact's language"
        )
    return {
        "can_reply": can_reply,
        "why_not": why_not,
        "window": window,
        "templates": templates,
        "canned_replies": canned_replies(inbox, conversation.language),
    }
