"""A contact's ids (phone number, wa_id, BSUID, username...) as sends use them:
which phone number reaches a contact, and ids a provider reported for one;
contacts by id as the REST API reads and sets them, and contacts imported
from a list of phone numbers."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.storage.activity import record_activity, record_contact_activity
from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.events import record_contact_events
from wahub.core.storage.policy import CANONICAL_ADDRESS, _canonical, append_consents, canonical_params
from wahub.core.storage.schema import contact_identities, contacts, conversations

#: Where a contact's language came from: set by a person (kept), or detected (may change).
LANGUAGE_SET, LANGUAGE_DETECTED = "set", "detected"

#: Identity kinds that hold a phone number (in digits).
PHONE_KINDS = ("wa_id", "phone")
#: Contacts written per transaction by an import.
IMPORT_BATCH = 500


@dataclass(frozen=True)
class ImportedContact:
    """One contact of an import, checked: its phone number as WhatsApp's digits
    (the address of a new contact), and what to set; None leaves a field as it is."""

    phone: str
    name: str | None = None
    language: str | None = None
    tags: tuple[str, ...] = ()
    timezone: str | None = None
    #: The evidence of each opt-in the import gives for this contact.
    opt_ins: tuple[dict[str, Any], ...] = ()


@dataclass
class ImportCounts:
    """What an import did: contacts new to wahub, contacts already known, opt-ins recorded."""

    created: int = 0
    updated: int = 0
    opted_in: int = 0


@dataclass
class _Known:
    """A contact an import names that already exists, as it is stored."""

    id: int
    address: str
    values: dict[str, Any] = field(default_factory=dict)


_IDENTITY_KIND: int = contact_identities.c.kind.type.length  # type: ignore[attr-defined]
_IDENTITY_VALUE: int = contact_identities.c.value.type.length  # type: ignore[attr-defined]

#: The id of the contact with (or known by) an address (parameters: ``canonical_params``); built once.
_CONTACT_ID = sa.select(contacts.c.id).where(
    contacts.c.provider == sa.bindparam("provider"), contacts.c.address == CANONICAL_ADDRESS
)


async def add_identities(
    conn: AsyncConnection, provider: str, address: str, identities: Mapping[str, str], *, now: float
) -> bool:
    """In ``conn``'s transaction, keep ``identities`` (kind -> value) as ids of
    the contact with this address or id; False when no contact has it
    (nothing is stored then). A kind or value too long for its column is left out."""
    contact_id = (await conn.execute(_CONTACT_ID, canonical_params(provider, address))).scalar()
    if contact_id is None:
        return False
    rows = [
        {"contact_id": contact_id, "kind": kind, "value": value, "created_at": now}
        for kind, value in identities.items()
        if len(kind) <= _IDENTITY_KIND and len(value) <= _IDENTITY_VALUE
    ]
    if rows:
        await conn.execute(insert_ignore(conn, contact_identities, ["contact_id", "kind", "value"]), rows)
    return True


class ContactStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _contact_id(self, provider: str, address: str) -> sa.ScalarSelect[int]:
        return (
            sa.select(contacts.c.id)
            .where(contacts.c.provider == provider, contacts.c.address == _canonical(provider, address))
            .scalar_subquery()
        )

    async def phone(self, provider: str, address: str) -> str | None:
        """The phone number (digits) that reaches the contact with this address or
        id: the one learnt last. None for a contact without one (a user known
        only by BSUID and username) or an unknown address."""
        query = (
            sa.select(contact_identities.c.value)
            .where(
                contact_identities.c.contact_id == self._contact_id(provider, address),
                contact_identities.c.kind.in_(PHONE_KINDS),
            )
            .order_by(contact_identities.c.id.desc())
        )
        async with self.db.connect() as conn:
            values = (await conn.execute(query)).scalars().all()
        return next((value for value in values if value.isdigit()), None)

    async def add_identity(self, provider: str, address: str, kind: str, value: str) -> bool:
        """Keep ``value`` as an id of kind ``kind`` of the contact with this address
        or id; False when no contact has it (nothing is stored then)."""
        async with self.db.begin() as conn:
            return await add_identities(conn, provider, address, {kind: value}, now=time.time())

    async def identities(self, provider: str, address: str) -> list[tuple[str, str]]:
        """Every ``(kind, value)`` id of the contact with this address or id, oldest first."""
        query = (
            sa.select(contact_identities.c.kind, contact_identities.c.value)
            .where(contact_identities.c.contact_id == self._contact_id(provider, address))
            .order_by(contact_identities.c.id)
        )
        async with self.db.connect() as conn:
            return [(row.kind, row.value) for row in (await conn.execute(query)).all()]

    async def get(self, contact_id: int) -> dict[str, Any] | None:
        """The contact with its ids (``identities``: ``[{kind, value}]``), or None."""
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(contacts).where(contacts.c.id == contact_id))).first()
            if row is None:
                return None
            ids = await conn.execute(
                sa.select(contact_identities.c.kind, contact_identities.c.value)
                .where(contact_identities.c.contact_id == contact_id)
                .order_by(contact_identities.c.id)
            )
            return {**_contact(row), "identities": [{"kind": kind, "value": value} for kind, value in ids]}

    async def search(
        self, query: str | None = None, *, after: int | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Contacts by id, those whose name, address or any id (phone, BSUID,
        username...) contains ``query`` (case-insensitive) when given; returns the
        page and the cursor of the next one (None at the end)."""
        statement = sa.select(contacts)
        if query:
            # The query is text to find, not a pattern: % and _ match themselves.
            escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            matching_ids = sa.select(contact_identities.c.contact_id).where(
                sa.func.lower(contact_identities.c.value).like(pattern, escape="\\")
            )
            statement = statement.where(
                sa.or_(
                    sa.func.lower(contacts.c.name).like(pattern, escape="\\"),
                    sa.func.lower(contacts.c.address).like(pattern, escape="\\"),
                    contacts.c.id.in_(matching_ids),
                )
            )
        if after is not None:
            statement = statement.where(contacts.c.id > after)
        statement = statement.order_by(contacts.c.id).limit(limit + 1)
        async with self.db.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [_contact(row) for row in rows[:limit]], int(rows[limit - 1].id) if len(rows) > limit else None

    async def update(self, contact_id: int, changes: Mapping[str, Any]) -> bool:
        """Set the contact's ``name``, ``language`` (None forgets it: detection
        starts again) and ``tags``; a language given here is kept over detection.
        False when no contact has this id."""
        values: dict[str, Any] = {key: changes[key] for key in ("name", "tags") if key in changes}
        if "language" in changes:
            language = changes["language"]
            values.update(language=language, language_source=LANGUAGE_SET if language else None)
        now = time.time()
        async with self.db.begin() as conn:
            before = (await conn.execute(sa.select(contacts).where(contacts.c.id == contact_id))).first()
            result = await conn.execute(
                contacts.update().where(contacts.c.id == contact_id).values(**values, updated_at=now)
            )
            if result.rowcount:
                await record_contact_activity(conn, contact_id, now=now)
                changed = sorted(
                    key for key, value in values.items() if before is not None and before._mapping[key] != value
                )
                if changed:
                    await record_contact_events(conn, "contact.updated", [contact_id], now=now, changed=changed)
        return bool(result.rowcount)

    async def detected_language(self, contact_id: int, language: str) -> None:
        """Keep a detected language, unless a person set the contact's language."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                contacts.update()
                .where(
                    contacts.c.id == contact_id,
                    sa.or_(contacts.c.language_source.is_(None), contacts.c.language_source != LANGUAGE_SET),
                    sa.or_(contacts.c.language.is_(None), contacts.c.language != language),
                )
                .values(language=language, language_source=LANGUAGE_DETECTED, updated_at=time.time())
            )
            if result.rowcount:
                await record_contact_events(
                    conn, "contact.updated", [contact_id], now=time.time(), changed=["language"]
                )

    async def language_of(self, contact_id: int) -> tuple[str | None, str | None]:
        """The contact's language and where it came from (``set``, ``detected``, or None)."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(contacts.c.language, contacts.c.language_source).where(contacts.c.id == contact_id)
                )
            ).one()
        return row.language, row.language_source

    # -- imports ------------------------------------------------------------

    async def import_contacts(self, provider: str, imported: Sequence[ImportedContact], *, now: float) -> ImportCounts:
        """Create or update the contacts ``imported`` (one per phone number), in
        transactions of ``IMPORT_BATCH``. A number that is already an id of a
        contact (its wa_id, or the phone of a contact now addressed by its
        BSUID) updates that contact. Tags are merged into those it has; a
        language given is kept over detection. Each opt-in is appended to the
        consent ledger (scope ``all``, source ``import``) once: importing the
        same evidence again records nothing."""
        counts = ImportCounts()
        for start in range(0, len(imported), IMPORT_BATCH):
            async with self.db.begin() as conn:
                await self._import_batch(conn, provider, imported[start : start + IMPORT_BATCH], now, counts)
        return counts

    async def _import_batch(
        self, conn: AsyncConnection, provider: str, batch: Sequence[ImportedContact], now: float, counts: ImportCounts
    ) -> None:
        known = await _known_by_phone(conn, provider, [entry.phone for entry in batch])
        updates = [
            {**_merged(known[entry.phone].values, entry), "b_id": known[entry.phone].id, "b_now": now}
            for entry in batch
            if entry.phone in known
        ]
        # News for the crm: entries: the contacts the import changes (and, below, those it creates).
        stored = {found.id: found.values for found in known.values()}
        changed = [
            row["b_id"]
            for row in updates
            if any(
                (row[f"b_{column}"] or None) != (stored[row["b_id"]][column] or None) for column in _IMPORTED_COLUMNS
            )
        ]
        if updates:
            await conn.execute(_IMPORT_UPDATE, updates)
            shown = await conn.execute(
                sa.select(conversations.c.id).where(conversations.c.contact_id.in_([row["b_id"] for row in updates]))
            )
            await record_activity(
                conn, [(conversation_id, "contact", None) for conversation_id in shown.scalars()], now=now
            )
        new = [entry for entry in batch if entry.phone not in known]
        if new:
            await conn.execute(
                insert_ignore(conn, contacts, ["provider", "address"]),
                [
                    {**_imported_values(entry), "provider": provider, "address": entry.phone}
                    | {"created_at": now, "updated_at": now}
                    for entry in new
                ],
            )
            known.update(await _known_by_phone(conn, provider, [entry.phone for entry in new]))
        counts.updated += len(updates)
        counts.created += len(new)
        fresh = [known[entry.phone].id for entry in new]
        await record_contact_events(conn, "contact.updated", [*changed, *fresh], now=now, changed=["import"])
        await conn.execute(
            insert_ignore(conn, contact_identities, ["contact_id", "kind", "value"]),
            [
                {"contact_id": known[entry.phone].id, "kind": "phone", "value": entry.phone, "created_at": now}
                for entry in batch
            ],
        )
        opt_ins = [
            {
                "address": known[entry.phone].address,
                "action": "opt_in",
                "scope": "all",
                "source": "import",
                "evidence": evidence,
                "event_key": _opt_in_key(provider, entry.phone, evidence),
                "occurred_at": now,
            }
            for entry in batch
            for evidence in entry.opt_ins
        ]
        counts.opted_in += await append_consents(conn, provider, opt_ins)


_IMPORTED_COLUMNS = ("name", "language", "language_source", "tags", "timezone")
_IMPORT_UPDATE = (
    contacts.update()
    .where(contacts.c.id == sa.bindparam("b_id"))
    .values(**{column: sa.bindparam(f"b_{column}") for column in _IMPORTED_COLUMNS}, updated_at=sa.bindparam("b_now"))
)


def _imported_values(entry: ImportedContact) -> dict[str, Any]:
    """The columns of a new contact from an import."""
    return {
        "name": entry.name,
        "language": entry.language,
        "language_source": LANGUAGE_SET if entry.language else None,
        "tags": list(entry.tags),
        "timezone": entry.timezone,
    }


def _merged(stored: Mapping[str, Any], entry: ImportedContact) -> dict[str, Any]:
    """The bound values of ``_IMPORT_UPDATE``: what the import gives over what is stored, tags merged."""
    values = {column: stored[column] for column in _IMPORTED_COLUMNS}
    for column in ("name", "timezone"):
        if getattr(entry, column) is not None:
            values[column] = getattr(entry, column)
    if entry.language is not None:
        values.update(language=entry.language, language_source=LANGUAGE_SET)
    values["tags"] = list(dict.fromkeys([*(stored["tags"] or []), *entry.tags]))
    return {f"b_{column}": value for column, value in values.items()}


async def _known_by_phone(conn: AsyncConnection, provider: str, phones: list[str]) -> dict[str, _Known]:
    """The existing contacts of ``phones``: addressed by the number, else having
    it as a phone id (the oldest such contact), by number."""
    columns = (contacts.c.id, contacts.c.address, *(contacts.c[column] for column in _IMPORTED_COLUMNS))
    found: dict[str, _Known] = {}
    by_id = (
        sa.select(contact_identities.c.value, *columns)
        .join(contacts, contacts.c.id == contact_identities.c.contact_id)
        .where(
            contacts.c.provider == provider,
            contact_identities.c.kind.in_(PHONE_KINDS),
            contact_identities.c.value.in_(phones),
        )
        .order_by(contacts.c.id.desc())
    )
    for row in await conn.execute(by_id):  # the oldest contact written last wins
        found[row.value] = _known(row)
    own = sa.select(*columns).where(contacts.c.provider == provider, contacts.c.address.in_(phones))
    for row in await conn.execute(own):
        found[row.address] = _known(row)
    return found


def _known(row: Any) -> _Known:
    return _Known(int(row.id), row.address, {column: row._mapping[column] for column in _IMPORTED_COLUMNS})


def _opt_in_key(provider: str, phone: str, evidence: Mapping[str, Any]) -> str:
    """The same evidence for the same number always makes the same key: a second import records nothing."""
    digest = hashlib.sha256(json.dumps(evidence, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"import:{provider}:{phone}:{digest[:32]}"


def _contact(row: Any) -> dict[str, Any]:
    return {
        "id": int(row.id),
        "provider": row.provider,
        "address": row.address,
        "name": row.name,
        "language": row.language,
        "language_source": row.language_source,
        "tags": list(row.tags or []),
        "timezone": row.timezone,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
