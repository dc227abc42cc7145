"""A contact's ids (phone number, wa_id, BSUID, username...) as sends use them:
which phone number reaches a contact, and ids a provider reported for one."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from wahub.core.storage.activity import record_contact_activity
from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.policy import _canonical
from wahub.core.storage.schema import contact_identities, contacts

#: Where a contact's language came from: set by a person (kept), or detected (may change).
LANGUAGE_SET, LANGUAGE_DETECTED = "set", "detected"

#: Identity kinds that hold a phone number (in digits).
PHONE_KINDS = ("wa_id", "phone")


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
            contact_id = (await conn.execute(sa.select(self._contact_id(provider, address)))).scalar()
            if contact_id is None:
                return False
            await conn.execute(
                insert_ignore(conn, contact_identities, ["contact_id", "kind", "value"]),
                {"contact_id": contact_id, "kind": kind, "value": value, "created_at": time.time()},
            )
        return True

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
            result = await conn.execute(
                contacts.update().where(contacts.c.id == contact_id).values(**values, updated_at=now)
            )
            if result.rowcount:
                await record_contact_activity(conn, contact_id, now=now)
        return bool(result.rowcount)

    async def detected_language(self, contact_id: int, language: str) -> None:
        """Keep a detected language, unless a person set the contact's language."""
        async with self.db.begin() as conn:
            await conn.execute(
                contacts.update()
                .where(
                    contacts.c.id == contact_id,
                    sa.or_(contacts.c.language_source.is_(None), contacts.c.language_source != LANGUAGE_SET),
                    sa.or_(contacts.c.language.is_(None), contacts.c.language != language),
                )
                .values(language=language, language_source=LANGUAGE_DETECTED, updated_at=time.time())
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
