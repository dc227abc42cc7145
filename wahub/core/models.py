"""Normalized events and messages shared by every provider.

Message bodies follow the Cloud API's shapes (``{"type": "text", "text":
{"body": ...}}``) so integrators recognise them whatever the provider.
Everything here round-trips through JSON: the inbox stores events as JSON and
workers rebuild them, so a crash between steps loses nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

EventKind = Literal["message", "echo", "status", "preference", "account", "unsupported"]


class InboxState(enum.StrEnum):
    """Where a stored webhook event is (the ``inbox.state`` column)."""

    PENDING = "pending"  # waits for a worker, or for its retry time
    PROCESSING = "processing"  # claimed by a worker, under a lease
    DONE = "done"
    FAILED = "failed"  # gave up; replayed by hand (``wahub inbox retry``)


class MessageStatus(enum.StrEnum):
    """A message's status (the ``messages.status`` column and delivery statuses)."""

    RECEIVED = "received"  # an inbound message
    QUEUED = "queued"  # waits in the outbox
    SENT = "sent"  # the provider accepted it
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"  # final


#: Forward order of delivery statuses; ``failed`` is final.
STATUS_RANK: dict[str, int] = {
    MessageStatus.QUEUED: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.READ: 3,
    MessageStatus.FAILED: 4,
}


class Owner(enum.StrEnum):
    """Who answers a conversation now (the ``conversations.owner`` column)."""

    BOT = "bot"  # rules, FAQ and AI answer
    QUEUED = "queued"  # a person was asked for; none has taken it yet
    ASSIGNED = "assigned"  # an operator owns it
    PHONE = "phone"  # the business answered from the WhatsApp Business app


#: Each change of owner: the owners it may start from, and the owner it gives.
OWNER_CHANGES: dict[str, tuple[frozenset[Owner], Owner]] = {
    # A person is asked for (a rule, the AI, the FAQ, business hours, the API).
    "queued": (frozenset({Owner.BOT, Owner.PHONE}), Owner.QUEUED),
    # An operator takes it, or is given it (also from another operator).
    "assigned": (frozenset(Owner), Owner.ASSIGNED),
    # The operator gives it back to the queue.
    "released": (frozenset({Owner.ASSIGNED}), Owner.QUEUED),
    # Back to the bot: resolved by a person, by the API, or after a quiet period.
    "resolved": (frozenset({Owner.QUEUED, Owner.ASSIGNED, Owner.PHONE}), Owner.BOT),
    # The business answered from its app: a person has it, the bot falls silent.
    "phone": (frozenset({Owner.BOT, Owner.QUEUED}), Owner.PHONE),
}


@dataclass(frozen=True)
class InboundMessage:
    """A message a WhatsApp user sent to a business number."""

    provider: str
    external_id: str
    sender: str
    type: str
    content: dict[str, Any]
    timestamp: float
    sender_name: str | None = None
    context_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    #: Every id the provider gave for the sender, by kind: ``bsuid``, ``wa_id``,
    #: ``username``, ``parent_bsuid``. ``sender`` is the BSUID when there is one.
    identities: dict[str, str] = field(default_factory=dict)
    kind: Literal["message"] = "message"

    @property
    def contact_key(self) -> str:
        """What orders the sender's events: the wa_id whenever the provider gave
        one, else ``sender``. A user first known by wa_id (webhooks without
        BSUIDs) keeps that key once webhooks also carry a BSUID."""
        return f"{self.provider}:{self.identities.get('wa_id') or self.sender}"

    def text(self) -> str:
        """The text a person would read: body, caption, or tapped button/row title."""
        return message_text(self.type, self.content)

    def reply_id(self) -> str | None:
        """The id of a tapped reply button or list row, if any."""
        body = self.content.get("interactive")
        if self.type == "interactive" and isinstance(body, dict):
            reply = self._interactive_reply(body)
            return str(reply["id"]) if reply is not None and "id" in reply else None
        return None

    @staticmethod
    def _interactive_reply(body: dict[str, Any]) -> dict[str, Any] | None:
        return _interactive_reply(body)


def _interactive_reply(body: dict[str, Any]) -> dict[str, Any] | None:
    """The ``button_reply`` (or other) object an interactive message names by its ``type``."""
    chosen = body.get("type")
    reply = body.get(chosen) if isinstance(chosen, str) else None
    return reply if isinstance(reply, dict) else None


def message_text(kind: str, content: Mapping[str, Any]) -> str:
    """The text a person reads in a message of type ``kind`` (the body holding
    the object of that type, received or sent): its text, caption, the button
    or row tapped, an interactive message's body, or a template's name."""
    body = content.get(kind)
    if not isinstance(body, dict):
        return ""
    if kind == "text":
        return str(body.get("body", ""))
    if kind == "interactive":
        reply = _interactive_reply(body)
        if reply is not None:
            return str(reply.get("title", ""))
        inner = body.get("body")
        return str(inner.get("text", "")) if isinstance(inner, dict) else ""
    if kind == "button":
        return str(body.get("text", ""))
    if kind == "template":
        return f"[template {body.get('name', '')}]"
    return str(body.get("caption", ""))


@dataclass(frozen=True)
class EchoMessage:
    """A message the business sent from the WhatsApp Business app on a number
    it shares with the API (coexistence): a person answered from the phone.
    ``recipient`` is the user's address, ``content`` the Cloud API shape of ``type``."""

    provider: str
    external_id: str
    recipient: str
    type: str
    content: dict[str, Any]
    timestamp: float
    #: The user's ids the provider gave, by kind (``wa_id``, ``bsuid``), as for ``InboundMessage``.
    identities: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    kind: Literal["echo"] = "echo"

    @property
    def contact_key(self) -> str:
        """The user's key, the same as their own messages' (``InboundMessage.contact_key``)."""
        return f"{self.provider}:{self.identities.get('wa_id') or self.recipient}"


@dataclass(frozen=True)
class StatusEvent:
    """A delivery status for a message the business sent."""

    provider: str
    external_id: str
    message_id: str
    status: str
    timestamp: float
    recipient: str | None = None
    error_code: str | None = None
    error_title: str | None = None
    pricing_category: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    kind: Literal["status"] = "status"

    @property
    def contact_key(self) -> str:
        return f"{self.provider}:{self.recipient or self.message_id}"


@dataclass(frozen=True)
class PreferenceEvent:
    """A user's marketing-message preference reported by the provider
    (Meta's ``user_preferences``): ``value`` is stop, resume or signup."""

    provider: str
    external_id: str
    user: str
    category: str
    value: str
    timestamp: float
    detail: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    kind: Literal["preference"] = "preference"

    @property
    def contact_key(self) -> str:
        return f"{self.provider}:{self.user}"


@dataclass(frozen=True)
class AccountEvent:
    """News about the business account rather than a conversation: a
    template's status, category or quality, the account's or a number's
    standing. ``field`` is the provider's webhook field (Meta's
    ``message_template_status_update``...), ``event`` its headline value
    (``APPROVED``, ``PAUSED``, ``FLAGGED``...), ``data`` the whole change."""

    provider: str
    external_id: str
    field: str
    event: str
    data: dict[str, Any]
    timestamp: float
    kind: Literal["account"] = "account"

    @property
    def contact_key(self) -> str:
        return f"{self.provider}:account"


@dataclass(frozen=True)
class UnsupportedEvent:
    """A webhook shape wahub does not understand yet, kept whole."""

    provider: str
    external_id: str
    raw: dict[str, Any]
    timestamp: float = 0.0
    kind: Literal["unsupported"] = "unsupported"

    @property
    def contact_key(self) -> str:
        return f"{self.provider}:unsupported"


Event = InboundMessage | EchoMessage | StatusEvent | PreferenceEvent | AccountEvent | UnsupportedEvent

_EVENT_TYPES: dict[str, type[Event]] = {
    "message": InboundMessage,
    "echo": EchoMessage,
    "status": StatusEvent,
    "preference": PreferenceEvent,
    "account": AccountEvent,
    "unsupported": UnsupportedEvent,
}


def event_to_json(event: Event) -> dict[str, Any]:
    """The event's fields as a dict (shallow: its dicts are shared, not copied)."""
    return {f.name: getattr(event, f.name) for f in fields(event)}


def event_from_json(data: dict[str, Any]) -> Event:
    return _EVENT_TYPES[data["kind"]](**data)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to send: ``content`` holds the Cloud API shape of ``type``.

    ``to`` is the contact's address (its BSUID when it has one). A provider
    may send to another id of the same contact (its phone number), unless
    ``keep_address`` says ``to`` is exactly what the sender wrote (an explicit
    REST API send).
    """

    to: str
    type: str
    content: dict[str, Any]
    context_id: str | None = None
    keep_address: bool = False

    @classmethod
    def text(cls, to: str, body: str, *, context_id: str | None = None) -> OutgoingMessage:
        return cls(to=to, type="text", content={"text": {"body": body}}, context_id=context_id)

    @classmethod
    def reply_buttons(cls, to: str, body: str, buttons: list[str], *, context_id: str | None = None) -> OutgoingMessage:
        """Text with up to three tappable reply buttons; each title is also its id."""
        action = {"buttons": [{"type": "reply", "reply": {"id": title, "title": title}} for title in buttons]}
        content = {"interactive": {"type": "button", "body": {"text": body}, "action": action}}
        return cls(to=to, type="interactive", content=content, context_id=context_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "type": self.type,
            **self.content,
            **({"context": {"message_id": self.context_id}} if self.context_id else {}),
        }

    def to_record(self) -> dict[str, Any]:
        """``to_json`` plus what wahub keeps beside it (``keep_address``), as the outbox stores it."""
        return {**self.to_json(), **({"keep_address": True} if self.keep_address else {})}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutgoingMessage:
        """The message of ``to_json`` or ``to_record``."""
        body = dict(data)
        to, kind = str(body.pop("to")), str(body.pop("type"))
        context = body.pop("context", None)
        keep = bool(body.pop("keep_address", False))
        return cls(
            to=to, type=kind, content=body, context_id=context["message_id"] if context else None, keep_address=keep
        )


@dataclass(frozen=True)
class SendResult:
    """What a provider answered to a send."""

    provider_message_id: str
    #: Ids of the recipient the answer reported, by kind (Meta's ``wa_id``,
    #: WhatsApp's own form of the number): kept with the contact, in the
    #: transaction that stores the send.
    identities: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Conversation:
    """A user's conversation with one business number, as routing and hooks see it."""

    id: int
    provider: str
    contact_id: int
    #: The contact's address (where replies go).
    address: str
    owner: Owner
    #: The operator who owns it while ``owner`` is ``assigned``.
    assignee: str | None
    #: When ``owner`` last changed (unix seconds).
    owner_changed_at: float
    #: The contact's language (BCP 47), None until set or detected.
    language: str | None = None
    contact_name: str | None = None
    #: Whether a person set the language (detection then leaves it alone).
    language_set: bool = False


@dataclass(frozen=True)
class OwnershipChange:
    """One change of a conversation's owner, as stored in its history.

    ``change`` is ``queued`` (a person was asked for), ``assigned`` (an
    operator took it or was given it), ``released`` (back to the queue),
    ``resolved`` (back to the bot) or ``phone`` (answered from the business app).
    ``actor`` says who did it: ``bot``, ``rule``, ``ai:<name>``, ``api``,
    ``operator:<name>``, ``phone``, ``system``.
    """

    conversation_id: int
    change: str
    from_owner: Owner
    to_owner: Owner
    actor: str
    reason: str
    at: float
    assignee: str | None = None
    #: The stored event's id, when read back from the history.
    id: int | None = None


#: Every type of event wahub delivers to the ``crm:`` entries, as integrators read it.
EVENT_TYPES = (
    "message.received",
    "message.sent",
    "message.status",
    "conversation.queued",
    "conversation.assigned",
    "conversation.resolved",
    "contact.opted_out",
    "contact.opted_in",
    "contact.updated",
)


@dataclass(frozen=True)
class IntegrationEvent:
    """An event as a ``crm:`` entry receives it: ``id`` (``evt_...``) is the same
    on every attempt and for every entry, ``timestamp`` is ISO 8601 (UTC), and
    ``data`` holds the stable ids of what it is about (``data["contact"]["id"]``,
    ``data["message"]["id"]``, ``data["conversation"]["id"]``...)."""

    id: str
    type: str
    timestamp: str
    data: dict[str, Any]
    #: The contact it is about (its events reach each entry in order), if any.
    contact_id: int | None = None
    #: How many attempts were made before this one.
    attempt: int = 0

    def body(self) -> dict[str, Any]:
        """What goes over the wire: ``{"type", "timestamp", "data"}``."""
        return {"type": self.type, "timestamp": self.timestamp, "data": self.data}
