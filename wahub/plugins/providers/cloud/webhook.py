"""Meta WhatsApp Cloud API webhook bodies, parsed into wahub's normalized events.

Pure functions, no I/O: a Cloud API provider calls ``parse_cloud_webhook`` on a
body whose signature it has already checked. One POST can carry several
entries, each several changes, each several messages, statuses and errors:
every one of them becomes an event. A ``smb_message_echoes`` change (what the
business sent from the WhatsApp Business app) gives an ``EchoMessage`` per
echo (``wahub.plugins.providers.cloud.echoes``).

Only a body that is not a Cloud API envelope raises ``WebhookError``. A single
item wahub cannot read (a message or echo without an id, a status without a
status, a change that is not an object) becomes an ``UnsupportedEvent`` with the
external id ``unparsed:<sha256 of the item>``, so the rest of the body still
counts and a retried delivery dedupes to the same event.

Routing: a change naming ``metadata.phone_number_id`` belongs to
``numbers[id]``; template and account changes carry no metadata and name
their WhatsApp Business Account in ``entry.id``, so they go to every provider
of ``accounts[waba_id]``. Whatever matches nothing goes to ``default``, the
provider that received the POST.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wahub.core.errors import WebhookError
from wahub.core.inbound.webhook_json import read_json
from wahub.core.models import AccountEvent, Event, InboundMessage, PreferenceEvent, StatusEvent, UnsupportedEvent
from wahub.plugins.providers.cloud.echoes import ECHO_FIELD, ECHO_ITEMS, ECHO_USER_KEYS, echo_message
from wahub.plugins.providers.cloud.webhook_fields import (
    ACCOUNT_FIELDS,
    account_readable,
    headline,
    message_content,
    required,
    seconds,
    seconds_or_zero,
    text_id,
    user_identities,
)

OBJECT = "whatsapp_business_account"

#: How a user's message names its sender, each with the ``contacts[]`` key
#: holding the same id: by BSUID first, then by wa_id.
_SENDER_KEYS = (("from_user_id", "user_id"), ("from", "wa_id"))


def parse_cloud_webhook(
    body: bytes,
    *,
    default: str,
    numbers: Mapping[str, str],
    accounts: Mapping[str, Sequence[str]],
) -> list[Event]:
    """The events of a Cloud API webhook body.

    ``default`` is the provider that received the POST, ``numbers`` maps a
    phone number id to its provider, ``accounts`` a WABA id to its providers.
    """
    data = read_json(body)
    if not isinstance(data, dict):
        raise WebhookError(f"body is a JSON {type(data).__name__}, not an object")
    if data.get("object") != OBJECT:
        raise WebhookError(f"'object' is {data.get('object')!r}, expected {OBJECT!r}")
    if not isinstance(data.get("entry"), list):
        raise WebhookError("'entry' is missing or not a list")
    routes = _Routes(default, numbers, accounts)
    return [event for entry in data["entry"] for event in _entry_events(routes, entry)]


@dataclass(frozen=True)
class _Routes:
    """Which provider(s) an event belongs to."""

    default: str
    numbers: Mapping[str, str]
    accounts: Mapping[str, Sequence[str]]

    def number(self, metadata: dict[str, Any] | None) -> str:
        """The provider of the business number a change names (``default`` if none)."""
        number_id = text_id((metadata or {}).get("phone_number_id"))
        return self.numbers.get(number_id, self.default) if number_id else self.default

    def waba(self, waba_id: str | None) -> list[str]:
        """The providers sharing a WhatsApp Business Account (``[default]`` if unknown)."""
        names = self.accounts.get(waba_id, ()) if waba_id else ()
        return list(dict.fromkeys(names)) or [self.default]


@dataclass(frozen=True)
class _Entry:
    """What a change needs from its entry."""

    id: str | None
    time: Any
    timestamp: float


def _entry_events(routes: _Routes, entry: Any) -> list[Event]:
    if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
        return [_unparsed(routes.default, None, None, entry, 0.0)]
    info = _Entry(text_id(entry.get("id")), entry.get("time"), seconds_or_zero(entry.get("time")))
    return [event for change in entry["changes"] for event in _change_events(routes, info, change)]


def _change_events(routes: _Routes, entry: _Entry, change: Any) -> list[Event]:
    if not isinstance(change, dict) or not isinstance(change.get("field"), str):
        return [_unparsed(routes.default, None, entry.id, change, entry.timestamp)]
    field: str = change["field"]
    value = change.get("value")
    if not isinstance(value, dict):
        return [_unparsed(routes.default, field, entry.id, change, entry.timestamp)]
    metadata = value["metadata"] if isinstance(value.get("metadata"), dict) else None
    if field == "messages":
        return _messages_events(routes.number(metadata), entry, value, metadata)
    if field == ECHO_FIELD:
        return _echo_events(routes.number(metadata), entry, value, metadata)
    if field == "user_preferences":
        provider = routes.number(metadata)
        return _each(provider, field, entry, value, "user_preferences", lambda item: _preference(provider, item))
    if field in ACCOUNT_FIELDS:
        if not account_readable(field, value):
            return [_unparsed(routes.default, field, entry.id, change, entry.timestamp)]
        digest = _digest({"entry": entry.id, "time": entry.time, "value": value})
        return [
            AccountEvent(
                provider=provider,
                external_id=f"{field}:{digest}",
                field=field,
                event=headline(field, value),
                data=value,
                timestamp=entry.timestamp,
            )
            for provider in routes.waba(entry.id)
        ]
    providers = [routes.number(metadata)] if metadata is not None else routes.waba(entry.id)
    raw = {"field": field, "entry_id": entry.id, "value": value}
    digest = _digest(change)
    return [
        UnsupportedEvent(provider=provider, external_id=f"{field}:{digest}", raw=raw, timestamp=entry.timestamp)
        for provider in providers
    ]


def _messages_events(
    provider: str, entry: _Entry, value: dict[str, Any], metadata: dict[str, Any] | None
) -> list[Event]:
    """The messages, statuses and value-level errors of a ``messages`` change."""
    contacts = _contacts(value)
    messages = value.get("messages")
    single = isinstance(messages, list) and len(messages) == 1

    def message(item: dict[str, Any]) -> Event:
        return _message(provider, item, _contact_for(item, contacts, single, _SENDER_KEYS), metadata)

    def error(item: dict[str, Any]) -> Event:
        return AccountEvent(
            provider=provider,
            external_id="error:" + _digest({"entry": entry.id, "error": item}),
            field="errors",
            event=str(item.get("code", "")),
            data={"error": item, "metadata": metadata},
            timestamp=entry.timestamp,
        )

    return [
        *_each(provider, "messages", entry, value, "messages", message),
        *_each(provider, "messages", entry, value, "statuses", lambda item: _status(provider, item)),
        *_each(provider, "messages", entry, value, "errors", error),
    ]


def _echo_events(provider: str, entry: _Entry, value: dict[str, Any], metadata: dict[str, Any] | None) -> list[Event]:
    """The echoes of a ``smb_message_echoes`` change, each with its user's ``contacts[]`` item."""
    contacts = _contacts(value)
    echoes = value.get(ECHO_ITEMS)
    single = isinstance(echoes, list) and len(echoes) == 1

    def echo(item: dict[str, Any]) -> Event:
        return echo_message(provider, item, _contact_for(item, contacts, single, ECHO_USER_KEYS), metadata)

    return _each(provider, ECHO_FIELD, entry, value, ECHO_ITEMS, echo)


def _contacts(value: dict[str, Any]) -> list[dict[str, Any]]:
    listed = value.get("contacts")
    return [c for c in listed if isinstance(c, dict)] if isinstance(listed, list) else []


def _each(
    provider: str,
    field: str,
    entry: _Entry,
    value: dict[str, Any],
    key: str,
    parse: Callable[[dict[str, Any]], Event],
) -> list[Event]:
    """``parse`` applied to every item of ``value[key]``; an item it cannot read becomes unparsed."""
    items = value.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        return [_unparsed(provider, field, entry.id, {key: items}, entry.timestamp)]
    events: list[Event] = []
    for item in items:
        try:
            if not isinstance(item, dict):
                raise TypeError(f"{key} item is not an object")
            events.append(parse(item))
        except (KeyError, TypeError, ValueError):
            events.append(_unparsed(provider, field, entry.id, item, entry.timestamp))
    return events


def _message(
    provider: str, message: dict[str, Any], contact: dict[str, Any] | None, metadata: dict[str, Any] | None
) -> InboundMessage:
    wamid, kind = required(message, "id"), required(message, "type")
    timestamp = seconds(message.get("timestamp"))
    identities = user_identities(contact, bsuid=message.get("from_user_id"), wa_id=message.get("from"))
    sender = identities.get("bsuid") or identities.get("wa_id")
    if not sender:
        raise ValueError("the message names no sender")
    content = message_content(message, kind)
    person = contact or {}
    profile = person["profile"] if isinstance(person.get("profile"), dict) else {}
    context = message.get("context")
    return InboundMessage(
        provider=provider,
        external_id=wamid,
        sender=sender,
        type=kind,
        content=content,
        timestamp=timestamp,
        sender_name=text_id(profile.get("name")),
        context_id=text_id(context.get("id")) if isinstance(context, dict) else None,
        raw={"message": message, "contact": contact, "metadata": metadata},
        identities=identities,
    )


def _contact_for(
    message: dict[str, Any],
    contacts: list[dict[str, Any]],
    single: bool,
    keys: tuple[tuple[str, str], ...],
) -> dict[str, Any] | None:
    """The ``contacts[]`` item describing a message's user, matched on ``keys``
    (the item's key, the contact's key: BSUID first, then wa_id); the only
    contact of a change with a single item when none matches."""
    for message_key, contact_key in keys:
        wanted = text_id(message.get(message_key))
        for contact in contacts if wanted else ():
            if text_id(contact.get(contact_key)) == wanted:
                return contact
    return contacts[0] if single and len(contacts) == 1 else None


def _status(provider: str, item: dict[str, Any]) -> StatusEvent:
    message_id, status = required(item, "id"), required(item, "status")
    errors = item.get("errors")
    error = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    pricing = item["pricing"] if isinstance(item.get("pricing"), dict) else {}
    return StatusEvent(
        provider=provider,
        external_id=f"{message_id}:{status}",
        message_id=message_id,
        status=status,
        timestamp=seconds(item.get("timestamp")),
        # The wa_id first, as for messages (InboundMessage.contact_key): a user's
        # statuses and messages keep one order whether or not a BSUID is given.
        recipient=text_id(item.get("recipient_id")) or text_id(item.get("recipient_user_id")),
        error_code=None if error.get("code") is None else str(error["code"]),
        error_title=text_id(error.get("title")) or text_id(error.get("message")),
        pricing_category=text_id(pricing.get("category")),
        raw=item,
    )


def _preference(provider: str, item: dict[str, Any]) -> PreferenceEvent:
    user = text_id(item.get("user_id")) or text_id(item.get("wa_id"))
    if not user:
        raise ValueError("the preference names no user")
    category, value = required(item, "category"), required(item, "value")
    timestamp = seconds(item.get("timestamp"))
    return PreferenceEvent(
        provider=provider,
        external_id=f"pref:{user}:{category}:{value}:{timestamp}",
        user=user,
        category=category,
        value=value,
        timestamp=timestamp,
        detail=text_id(item.get("detail")),
        raw=item,
    )


def _unparsed(provider: str, field: str | None, entry_id: str | None, item: Any, timestamp: float) -> UnsupportedEvent:
    """An item wahub could not read, kept whole with where it came from."""
    return UnsupportedEvent(
        provider=provider,
        external_id="unparsed:" + _digest(item),
        raw={"field": field, "entry_id": entry_id, "item": item},
        timestamp=timestamp,
    )


def _digest(data: Any) -> str:
    # repr stands for read_json's markers; ASCII escapes keep any text encodable.
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode()).hexdigest()
