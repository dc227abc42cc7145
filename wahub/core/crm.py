"""The contract every CRM, helpdesk and event-webhook backend implements.

A backend is one class per platform, registered through the
``register_crm_backends`` hook, with ``PLATFORM`` (the ``platform:`` value of
a ``crm:`` entry) and ``CONFIG_SCHEMA`` (a voluptuous schema extending
``CRM_SCHEMA_BASE``). The daemon makes one instance per ``crm:`` entry.

Backends never hear of changes directly: every change (a message received,
sent or moving on, a hand-off, a resolve, an opt-out, a contact edited) is
written as an ``IntegrationEvent`` to the ``deliveries`` table in the
transaction that made it, for each entry whose ``events:`` take its type.
The deliverers hand each to ``deliver``, one contact's events in order,
retried with backoff from that table when ``deliver`` raises (or takes
longer than the entry's ``timeout``), so a backend that is down loses
nothing and never slows the WhatsApp side.

``deliver`` by default calls the typed methods (``upsert_contact``,
``on_message``, ``on_handoff``, ``log_conversation``, ``on_event``); a
backend overrides those it needs. They must be idempotent: a crash after a
call and before it is recorded calls it again.
"""

from __future__ import annotations

import abc
import datetime as dt
import difflib
import fnmatch
import json as jsonlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import aiohttp
import voluptuous as vol

from wahub.core.config.validators import ExplainedInvalid, int_between
from wahub.core.errors import DeliveryFailed
from wahub.core.models import EVENT_TYPES, IntegrationEvent, message_text

if TYPE_CHECKING:
    from wahub.core.clock import Clock
    from wahub.core.storage.store import Storage


def event_patterns(patterns: list[str]) -> list[str]:
    """Event type globs (``message.*``), each matching at least one type."""
    for pattern in patterns:
        if not fnmatch.filter(EVENT_TYPES, pattern):
            families = sorted({f"{kind.split('.')[0]}.*" for kind in EVENT_TYPES})
            close = difflib.get_close_matches(pattern, [*EVENT_TYPES, *families], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; the types are: {', '.join(EVENT_TYPES)}"
            raise ExplainedInvalid(f"{pattern!r} matches no event type{hint}")
    return patterns


#: Keys every ``crm:`` entry has; a backend's CONFIG_SCHEMA extends this.
CRM_SCHEMA_BASE = vol.Schema(
    {
        vol.Required("platform"): str,
        vol.Required("name"): vol.All(
            str, vol.Match(r"^[a-z0-9][a-z0-9_-]*$", msg="use lowercase letters, digits, '-' and '_'")
        ),
        # The event types it takes (globs such as `message.*`); none: the backend's own choice.
        vol.Optional("events"): vol.All([str], vol.Length(min=1), lambda value: event_patterns(value)),
        # Seconds one delivery may take before it counts as failed (and is retried).
        vol.Optional("timeout", default=15): int_between(1, 120),
        # Deliveries in flight at once (each to a different contact).
        vol.Optional("concurrency", default=4): int_between(1, 32),
    }
)


class CRMHost(Protocol):
    """What a CRM backend may use of the running daemon (``wahub.core.hub.Hub`` is one)."""

    config: dict[str, Any]
    http: aiohttp.ClientSession
    clock: Clock
    storage: Storage


@dataclass(frozen=True)
class CRMContact:
    """A contact as events carry it: ``phone`` in E.164, None for a contact known only by BSUID."""

    id: int
    provider: str
    address: str
    phone: str | None = None
    name: str | None = None
    language: str | None = None
    tags: tuple[str, ...] = ()

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> CRMContact:
        return cls(
            id=int(data["id"]),
            provider=data["provider"],
            address=data["address"],
            phone=data.get("phone"),
            name=data.get("name"),
            language=data.get("language"),
            tags=tuple(data.get("tags") or ()),
        )


@dataclass(frozen=True)
class CRMMessage:
    """A message received (``direction`` ``in``) or sent (``out``) as events carry it."""

    id: int
    direction: str
    type: str
    text: str
    body: Mapping[str, Any]
    origin: str | None
    conversation_id: int | None
    created_at: str
    contact: CRMContact

    @classmethod
    def from_event(cls, event: IntegrationEvent) -> CRMMessage:
        data = event.data["message"]
        return cls(
            id=int(data["id"]),
            direction=data["direction"],
            type=data["type"],
            text=data.get("text") or "",
            body=data.get("body") or {},
            origin=data.get("origin"),
            conversation_id=data.get("conversation_id"),
            created_at=data["created_at"],
            contact=CRMContact.from_data(event.data["contact"]),
        )


@dataclass(frozen=True)
class CRMConversation:
    """A change of a conversation's owner as events carry it: ``change`` is
    ``queued`` (a hand-off), ``assigned`` or ``resolved``."""

    id: int
    provider: str
    change: str
    actor: str
    reason: str
    at: str
    assignee: str | None
    contact: CRMContact
    #: The stored change's id: stable, a key for what the change makes elsewhere (a note, a ticket).
    change_id: int = 0

    @classmethod
    def from_event(cls, event: IntegrationEvent) -> CRMConversation:
        conversation, change = event.data["conversation"], event.data["change"]
        return cls(
            id=int(conversation["id"]),
            provider=conversation["provider"],
            change=change["change"],
            actor=change["actor"],
            reason=change.get("reason") or "",
            at=change["at"],
            assignee=conversation.get("assignee"),
            contact=CRMContact.from_data(event.data["contact"]),
            change_id=int(change["id"]),
        )


@dataclass(frozen=True)
class TranscriptLine:
    """One message of a transcript: when (unix seconds), who wrote it
    (``contact``, ``bot``, ``operator``, ``phone``...), and its text."""

    at: float
    who: str
    text: str


def render_transcript(lines: Iterable[TranscriptLine], *, contact_name: str | None = None) -> str:
    """A transcript as plain text, a line per message: ``[2026-12-01 09:30 UTC] Ana: text``."""
    rendered = []
    for line in lines:
        stamp = dt.datetime.fromtimestamp(line.at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        who = (contact_name or "Contact") if line.who == "contact" else line.who.capitalize()
        rendered.append(f"[{stamp}] {who}: {line.text}")
    return "\n".join(rendered)


class CRMBackend(abc.ABC):
    """Base class of a ``crm:`` backend (event webhooks, HubSpot, Zendesk, Chatwoot...)."""

    PLATFORM: ClassVar[str]
    CONFIG_SCHEMA: ClassVar[vol.Schema] = CRM_SCHEMA_BASE
    #: The event types (globs) it takes when its entry sets no ``events:``.
    EVENTS: ClassVar[tuple[str, ...]] = ("*",)

    def __init__(self, host: CRMHost, config: Mapping[str, Any]) -> None:
        self.host = host
        self.config = config
        self.name: str = config["name"]
        self.events: tuple[str, ...] = tuple(config.get("events") or self.EVENTS)

    async def start(self) -> None:
        """Open what the backend needs (called once at start-up)."""
        return None

    async def stop(self) -> None:
        """Release what ``start`` opened."""
        return None

    def routes(self) -> Iterable[Any]:
        """aiohttp route definitions the backend serves (a helpdesk's webhook,
        by convention under ``/crm/<name>/``); none by default."""
        return ()

    async def deliver(self, event: IntegrationEvent) -> None:
        """Take one event; raise ``DeliveryFailed`` (or anything) to have it
        retried. By default it calls the typed method for the event's type."""
        if event.type in ("message.received", "message.sent") and event.data.get("contact"):
            await self.on_message(CRMMessage.from_event(event))
        elif event.type == "conversation.queued" and event.data.get("contact"):
            await self.on_handoff(CRMConversation.from_event(event))
        elif event.type == "conversation.resolved" and event.data.get("contact"):
            await self.log_conversation(CRMConversation.from_event(event))
        elif event.type.startswith("contact.") and event.data.get("contact"):
            await self.upsert_contact(CRMContact.from_data(event.data["contact"]), event=event)
        else:
            await self.on_event(event)

    # -- the typed methods -----------------------------------------------------------

    async def upsert_contact(self, contact: CRMContact, *, event: IntegrationEvent | None = None) -> None:
        """Create or update the contact in the other system (a ``contact.*``
        event, or the first message of a contact not linked yet)."""
        return None

    async def on_message(self, message: CRMMessage) -> None:
        """A message received or sent; by default the contact is upserted once
        (until it is linked, see ``link``)."""
        if await self.linked("contact", message.contact.id) is None:
            await self.upsert_contact(message.contact)

    async def on_handoff(self, conversation: CRMConversation) -> None:
        """A person was asked for (a ticket, a note...)."""
        return None

    async def log_conversation(self, conversation: CRMConversation) -> None:
        """The conversation was resolved: log its transcript (see ``transcript``)."""
        return None

    async def on_event(self, event: IntegrationEvent) -> None:
        """Any other event the entry takes (statuses, assignments)."""
        return None

    # -- helpers -----------------------------------------------------------------

    async def link(self, kind: str, local_id: str | int, remote_id: str, *, data: Any = None) -> None:
        """Remember that wahub's ``kind`` record ``local_id`` is ``remote_id`` in the
        other system (``contact`` links also show in the contact's ids)."""
        await self.host.storage.deliveries.link(
            self.name, kind, local_id, remote_id, data=data, now=self.host.clock.time()
        )

    async def linked(self, kind: str, local_id: str | int) -> str | None:
        """The other system's id of wahub's ``kind`` record ``local_id``, if linked."""
        found = await self.host.storage.deliveries.linked(self.name, kind, local_id)
        return None if found is None else found[0]

    async def linked_to(self, kind: str, remote_id: str) -> str | None:
        """wahub's id of the ``kind`` record the other system knows as ``remote_id``."""
        return await self.host.storage.deliveries.linked_to(self.name, kind, remote_id)

    async def transcript(
        self, conversation_id: int, *, since: float = 0.0, until: float | None = None
    ) -> list[TranscriptLine]:
        """The conversation's messages from ``since`` to ``until`` (unix seconds),
        oldest first, refused and dropped ones left out."""
        storage = self.host.storage
        rows: list[dict[str, Any]] = []
        before = None
        while True:
            page = await storage.conversations.messages(conversation_id, before=before, limit=200)
            fresh = [row for row in page.items if row["created_at"] >= since]
            rows.extend(row for row in fresh if until is None or row["created_at"] <= until)
            if page.next_after is None or len(fresh) < len(page.items):
                break
            before = page.next_after
        lines = []
        for row in reversed(rows):
            if row["direction"] == "out" and row.get("error_code"):
                continue
            body = row.get("body") or {}
            text = message_text(row["type"], body) or f"[{row['type']}]"
            who = "contact" if row["direction"] == "in" else (row.get("origin") or "bot")
            lines.append(TranscriptLine(float(row["created_at"]), _speaker(who), text))
        return lines

    async def session_transcript(self, conversation: CRMConversation) -> list[TranscriptLine]:
        """The messages of the session a change ends or hands off: since the
        resolve before it (or the conversation's start) up to the change."""
        changes = await self.host.storage.conversations.events(conversation.id)
        mine = next((change for change in changes if change.id == conversation.change_id), None)
        if mine is None or mine.id is None:
            return await self.transcript(conversation.id)
        earlier = [c.at for c in changes if c.id is not None and c.id < mine.id and c.change == "resolved"]
        return await self.transcript(conversation.id, since=earlier[-1] if earlier else 0.0, until=mine.at)


def _speaker(origin: str) -> str:
    return {"business": "bot", "reply": "bot"}.get(origin, origin)


@dataclass(frozen=True)
class Answer:
    """An answer of another system's API: status, the JSON body (``{}`` when
    there is none or it is not an object), the raw text and the headers."""

    status: int
    body: dict[str, Any]
    text: str
    headers: Mapping[str, str]


async def request_json(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    params: Mapping[str, str] | None = None,
    expect: tuple[int, ...] = (),
) -> Answer:
    """One call to another system's JSON API: a 2xx answer, or one whose status
    is in ``expect``, is returned; any other answer, a connection failure or a
    time-out of the session raises the ``DeliveryFailed`` it means (see ``http_failure``),
    ``what`` naming the system and the call in its reason."""
    try:
        async with http.request(
            method, url, headers=headers, json=json, params=params, allow_redirects=False
        ) as response:
            status, text, answer_headers = response.status, await response.text(), response.headers
    except TimeoutError as exc:
        raise DeliveryFailed(f"{what}: no answer in time") from exc
    except aiohttp.ClientError as exc:
        raise DeliveryFailed(f"{what}: cannot be reached ({exc or type(exc).__name__})") from exc
    try:
        parsed = jsonlib.loads(text) if text else {}
    except ValueError:
        parsed = {}
    answer = Answer(status, parsed if isinstance(parsed, dict) else {}, text, answer_headers)
    if 200 <= status < 300 or status in expect:
        return answer
    raise http_failure(status, text, answer_headers, what=what)


def http_failure(status: int, text: str, headers: Mapping[str, str], *, what: str) -> DeliveryFailed:
    """What an HTTP error answer from another system means for a delivery:
    429 and 5xx (and 408) are retried, honouring ``Retry-After``; 410 is gone;
    401 and 403 are retried (credentials get fixed); other 4xx are given up."""
    retry_after = retry_after_seconds(headers.get("Retry-After"))
    reason = f"{what} answered {status}: {text[:300]}"
    if status == 410:
        return DeliveryFailed(reason, status=status, gone=True)
    if status in (408, 429) or status >= 500 or status in (401, 403):
        return DeliveryFailed(reason, status=status, retry_after=retry_after)
    return DeliveryFailed(reason, status=status, permanent=True)


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header's delay in seconds (a number or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
