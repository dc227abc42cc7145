"""What the send policy reads and writes: the consent ledger, templates, and
each contact's service window, time zone and language."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.models import MessageStatus
from wahub.core.storage.activity import record_message_activity
from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.events import record_contact_events, record_message_events, subscribed
from wahub.core.storage.leases import lease_over
from wahub.core.storage.schema import (
    consent_events,
    contact_identities,
    contacts,
    conversations,
    messages,
    templates,
)


@dataclass(frozen=True)
class ContactContext:
    """A contact as the policy sees it; every field is None for an unknown address."""

    contact_id: int | None = None
    conversation_id: int | None = None
    last_inbound_at: float | None = None
    timezone: str | None = None
    #: BCP 47, as set or detected; None when not known.
    language: str | None = None


@dataclass(frozen=True)
class ConsentState:
    """The latest ``opt_in``/``opt_out`` per scope, or None where the ledger is silent."""

    all: str | None = None
    marketing: str | None = None

    @property
    def opted_out(self) -> bool:
        return self.all == "opt_out"

    @property
    def marketing_allowed(self) -> bool:
        """Marketing needs an opt-in that no later opt-out (of everything or of marketing) undid."""
        return not self.opted_out and self.marketing != "opt_out" and "opt_in" in (self.all, self.marketing)


def consent_state(events: Iterable[Mapping[str, Any]]) -> ConsentState:
    """The state a ledger's events (oldest first, each with ``scope`` and ``action``) leave."""
    latest = {event["scope"]: event["action"] for event in events}
    return ConsentState(all=latest.get("all"), marketing=latest.get("marketing"))


@dataclass(frozen=True)
class Template:
    name: str
    language: str
    category: str
    status: str


@dataclass(frozen=True)
class StoredTemplate(Template):
    """A template as stored, with its components in the provider's listing
    shape (Meta's: ``HEADER``, ``BODY``, ``BUTTONS``); None when not known."""

    components: list[Any] | None = None


def _canonical(provider: str, address: str) -> sa.ColumnElement[str]:
    """In SQL, the address of the contact that has ``address`` as its address or
    as one of its ids (a contact moved to its BSUID is still found by its
    wa_id), else ``address`` itself: the lookups below stay one query each."""
    bare = address.lstrip("+")
    return _canonical_of(provider, list(dict.fromkeys((address, bare))), sa.literal(bare))


def canonical_params(provider: str, address: str) -> dict[str, Any]:
    """The parameters of ``CANONICAL_ADDRESS`` (``:provider`` included) for this address."""
    bare = address.lstrip("+")
    return {"provider": provider, "spellings": list(dict.fromkeys((address, bare))), "bare": bare}


def _canonical_of(provider: Any, spellings: Any, bare: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    known_by = (
        sa.select(contacts.c.address)
        .join(contact_identities, contact_identities.c.contact_id == contacts.c.id)
        .where(contacts.c.provider == provider, contact_identities.c.value.in_(spellings))
        .order_by(contacts.c.id)
        .limit(1)
        .scalar_subquery()
    )
    own = (
        sa.select(contacts.c.address)
        .where(contacts.c.provider == provider, contacts.c.address.in_(spellings))
        .order_by(contacts.c.id)
        .limit(1)
        .scalar_subquery()
    )
    # An address no contact has is kept as WhatsApp writes numbers, without "+":
    # an opt-out recorded for 15551234567 also stops a send to +15551234567.
    return sa.func.coalesce(own, known_by, bare)


#: ``_canonical`` built once, for statements built once: its parameters are ``canonical_params``.
CANONICAL_ADDRESS = _canonical_of(
    sa.bindparam("provider"), sa.bindparam("spellings", expanding=True), sa.bindparam("bare", type_=sa.String)
)


async def append_consents(conn: AsyncConnection, provider: str, events: Sequence[Mapping[str, Any]]) -> int:
    """Append ledger events (each with the contact's current ``address``,
    ``action``, ``scope``, ``source``, ``evidence``, ``occurred_at`` and an
    ``event_key``) in the caller's transaction, as one insert (a contacts
    import records its opt-ins with the contacts they are about). Keys already
    recorded are skipped; returns how many events were new."""
    keys = [event["event_key"] for event in events]
    if not keys:
        return 0
    recorded = set(
        (
            await conn.execute(sa.select(consent_events.c.event_key).where(consent_events.c.event_key.in_(keys)))
        ).scalars()
    )
    fresh = {event["event_key"]: event for event in events if event["event_key"] not in recorded}
    if fresh:
        now = time.time()
        inserted = await conn.execute(
            insert_ignore(conn, consent_events, ["event_key"]).returning(consent_events.c.event_key),
            [{**event, "provider": provider, "created_at": now} for event in fresh.values()],
        )
        # Only what this insert added: a concurrent import of the same evidence records no second event.
        for key in inserted.scalars().all():
            await _consent_event(conn, provider, fresh[key]["address"], fresh[key], now=now)
    return len(fresh)


async def _consent_event(
    conn: AsyncConnection, provider: str, address: Any, event: Mapping[str, Any], *, now: float
) -> None:
    """A ``contact.opted_out`` or ``contact.opted_in`` event for a consent just recorded."""
    event_type = "contact.opted_out" if event["action"] == "opt_out" else "contact.opted_in"
    if not subscribed(conn, event_type):
        return
    found = await conn.execute(
        sa.select(contacts.c.id).where(contacts.c.provider == provider, contacts.c.address == address)
    )
    consent = {"scope": event["scope"], "source": event["source"]}
    await record_contact_events(conn, event_type, found.scalars(), now=now, consent=consent)


#: The error code of a queued message withdrawn because its contact opted out.
WITHDRAWN_CODE = "opted_out"


async def _withdraw_queued(conn: AsyncConnection, provider: str, address: str, scope: str, *, now: float) -> list[int]:
    """Fail the contact's queued business-initiated messages (every one for an
    opt-out of everything, its marketing templates for a marketing opt-out),
    in the transaction that records the opt-out: a notification or reminder
    queued earlier, waiting for quiet hours or a pacing slot, never goes after
    a STOP. Messages a dispatcher holds are in flight and already sent or not;
    replies and the contact's own conversation are not touched."""
    contact = sa.select(contacts.c.id).where(
        contacts.c.provider == provider, contacts.c.address == _canonical(provider, address)
    )
    free = sa.or_(messages.c.lease_until.is_(None), lease_over(messages.c.lease_until, time.time(), conn.dialect.name))
    query = sa.select(messages.c.id, messages.c.type, messages.c.body).where(
        messages.c.provider == provider,
        messages.c.status == MessageStatus.QUEUED,
        messages.c.origin == "business",
        sa.or_(
            messages.c.contact_id.in_(contact.scalar_subquery()),
            messages.c.address.in_(sorted({address, address.lstrip("+"), "+" + address.lstrip("+")})),
        ),
        free,
    )
    rows = (await conn.execute(query)).all()
    if scope == "marketing":
        names = {row.body["template"]["name"] for row in rows if row.type == "template"}
        marketing = set(
            (
                await conn.execute(
                    sa.select(templates.c.name).where(
                        templates.c.provider == provider,
                        templates.c.name.in_(names),
                        templates.c.category == "MARKETING",
                    )
                )
            ).scalars()
        )
        rows = [row for row in rows if row.type == "template" and row.body["template"]["name"] in marketing]
    withdrawn = [int(row.id) for row in rows]
    if withdrawn:
        what = "marketing messages" if scope == "marketing" else "messages from this business"
        await conn.execute(
            messages.update()
            .where(messages.c.id.in_(withdrawn), messages.c.status == MessageStatus.QUEUED)
            .values(
                status=MessageStatus.FAILED,
                error_code=WITHDRAWN_CODE,
                error_reason=f"the contact opted out of {what} before it was sent",
                lease_until=None,
                updated_at=now,
            )
        )
        await record_message_activity(conn, "status", withdrawn, now=now)
        await record_message_events(conn, "message.status", withdrawn, now=now)
    return withdrawn


#: A contact by ``:provider`` and (canonical) ``:address``, with its conversation; built once.
_CONTACT_CONTEXT = (
    sa.select(
        contacts.c.id,
        contacts.c.timezone,
        contacts.c.language,
        conversations.c.id.label("cid"),
        conversations.c.last_inbound_at,
    )
    .select_from(contacts.outerjoin(conversations, conversations.c.contact_id == contacts.c.id))
    .where(contacts.c.provider == sa.bindparam("provider"), contacts.c.address == CANONICAL_ADDRESS)
)


class PolicyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def contact(self, provider: str, address: str) -> ContactContext:
        """The contact with this address, or known by it (a wa_id or phone of a
        contact now addressed by its BSUID)."""
        async with self.db.connect() as conn:
            row = (await conn.execute(_CONTACT_CONTEXT, canonical_params(provider, address))).first()
        if row is None:
            return ContactContext()
        return ContactContext(row.id, row.cid, row.last_inbound_at, row.timezone, row.language)

    async def set_timezone(self, provider: str, address: str, timezone: str | None) -> bool:
        """Set a known contact's time zone; False when there is no such contact."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                contacts.update()
                .where(contacts.c.provider == provider, contacts.c.address == _canonical(provider, address))
                .values(timezone=timezone, updated_at=time.time())
            )
        return result.rowcount > 0

    # -- consent ledger ------------------------------------------------------

    async def record_consent(
        self,
        provider: str,
        address: str,
        *,
        action: str,
        scope: str,
        source: str,
        evidence: dict[str, Any],
        occurred_at: float,
        event_key: str | None = None,
    ) -> bool:
        """Append to the ledger; an ``event_key`` already recorded is skipped. Returns whether it was new.

        The ledger is kept under the contact's current address, whichever of its ids ``address`` is."""
        now = time.time()
        values = {
            "provider": provider,
            "address": _canonical(provider, address),
            "action": action,
            "scope": scope,
            "source": source,
            "evidence": evidence,
            "event_key": event_key,
            "occurred_at": occurred_at,
            "created_at": now,
        }
        async with self.db.begin() as conn:
            result = await conn.execute(insert_ignore(conn, consent_events, ["event_key"]).values(**values))
            if result.rowcount and action == "opt_out":
                await _withdraw_queued(conn, provider, address, scope, now=now)
            if result.rowcount:
                await _consent_event(conn, provider, values["address"], values, now=now)
        return result.rowcount > 0

    async def consent(self, provider: str, address: str) -> ConsentState:
        query = (
            sa.select(consent_events.c.scope, consent_events.c.action)
            .where(consent_events.c.provider == provider, consent_events.c.address == _canonical(provider, address))
            .order_by(consent_events.c.occurred_at, consent_events.c.id)
        )
        async with self.db.connect() as conn:
            return consent_state([dict(row) for row in (await conn.execute(query)).mappings()])

    async def ledger(self, provider: str, address: str) -> list[dict[str, Any]]:
        """Every consent event of a contact, oldest first."""
        query = (
            sa.select(consent_events)
            .where(consent_events.c.provider == provider, consent_events.c.address == _canonical(provider, address))
            .order_by(consent_events.c.occurred_at, consent_events.c.id)
        )
        async with self.db.connect() as conn:
            return [dict(row._mapping) for row in (await conn.execute(query)).all()]

    # -- templates -----------------------------------------------------------

    async def upsert_template(self, provider: str, template: Template, **details: Any) -> None:
        """Store a template; ``details`` sets more columns (``components``,
        ``external_id``, ``quality``) where not None."""
        async with self.db.begin() as conn:
            await self._upsert_template(conn, provider, template, details)

    @staticmethod
    async def _upsert_template(
        conn: AsyncConnection, provider: str, template: Template, details: Mapping[str, Any]
    ) -> None:
        key = (
            templates.c.provider == provider,
            templates.c.name == template.name,
            templates.c.language == template.language,
        )
        values = {"category": template.category, "status": template.status, "updated_at": time.time()}
        values.update({column: value for column, value in details.items() if value is not None})
        updated = await conn.execute(templates.update().where(*key).values(**values))
        if updated.rowcount == 0:
            await conn.execute(
                insert_ignore(conn, templates, ["provider", "name", "language"]),
                {"provider": provider, "name": template.name, "language": template.language, **values},
            )

    async def replace_templates(
        self, provider: str, listed: list[tuple[Template, dict[str, Any]]], *, listed_since: float
    ) -> dict[str, int]:
        """Make the provider's templates ``listed`` (each with its ``details``, as
        for ``upsert_template``), in one transaction, where nothing newer is
        known: a row changed after ``listed_since`` (when the listing began; by a
        status webhook, a create) is kept as it is. Returns how many were added,
        updated and removed."""
        async with self.db.begin() as conn:
            rows = await conn.execute(
                sa.select(templates.c.name, templates.c.language, templates.c.updated_at).where(
                    templates.c.provider == provider
                )
            )
            before = {(row.name, row.language): row.updated_at for row in rows}
            fresh = [entry for entry in listed if before.get((entry[0].name, entry[0].language), 0.0) <= listed_since]
            for template, details in fresh:
                await self._upsert_template(conn, provider, template, details)
            listed_keys = {(template.name, template.language) for template, _ in listed}
            gone = [key for key, updated in before.items() if key not in listed_keys and updated <= listed_since]
            for name, language in gone:
                await conn.execute(
                    templates.delete().where(
                        templates.c.provider == provider, templates.c.name == name, templates.c.language == language
                    )
                )
        added = len(listed_keys - before.keys())
        return {"added": added, "updated": len(fresh) - added, "removed": len(gone)}

    async def update_template(self, provider: str, name: str, language: str, **changes: str | None) -> bool:
        """Change a stored template's ``status``, ``category`` or ``quality``
        (None leaves one as it is); False when it is not stored."""
        values: dict[str, Any] = {key: value for key, value in changes.items() if value is not None}
        values["updated_at"] = time.time()
        async with self.db.begin() as conn:
            result = await conn.execute(
                templates.update()
                .where(templates.c.provider == provider, templates.c.name == name, templates.c.language == language)
                .values(**values)
            )
        return result.rowcount > 0

    async def delete_templates(self, provider: str, name: str, language: str | None = None) -> int:
        """Remove a stored template in every language, or only in ``language``; how many rows went."""
        query = templates.delete().where(templates.c.provider == provider, templates.c.name == name)
        if language is not None:
            query = query.where(templates.c.language == language)
        async with self.db.begin() as conn:
            result = await conn.execute(query)
        return result.rowcount

    async def templates(self, provider: str) -> list[dict[str, Any]]:
        """Every stored template of the provider, by name and language."""
        query = (
            sa.select(templates)
            .where(templates.c.provider == provider)
            .order_by(templates.c.name, templates.c.language)
        )
        async with self.db.connect() as conn:
            return [dict(row._mapping) for row in (await conn.execute(query)).all()]

    async def template(self, provider: str, name: str, language: str) -> tuple[StoredTemplate | None, bool]:
        """The template with its components (None when unknown) and whether the
        provider has any template stored."""
        columns = (templates.c.name, templates.c.language, templates.c.category, templates.c.status)
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(*columns, templates.c.components).where(
                        templates.c.provider == provider, templates.c.name == name, templates.c.language == language
                    )
                )
            ).first()
            if row is not None:
                components = row.components if isinstance(row.components, list) else None
                return StoredTemplate(row.name, row.language, row.category, row.status, components), True
            known = (
                await conn.execute(sa.select(templates.c.id).where(templates.c.provider == provider).limit(1))
            ).first()
        return None, known is not None

    async def template_languages(self, provider: str, name: str) -> dict[str, str]:
        """The languages the provider's template ``name`` is stored in, each with
        its status, by language code as the provider writes it (``pt_BR``)."""
        query = (
            sa.select(templates.c.language, templates.c.status)
            .where(templates.c.provider == provider, templates.c.name == name)
            .order_by(templates.c.language)
        )
        async with self.db.connect() as conn:
            return {row.language: row.status for row in (await conn.execute(query)).all()}
