"""A contact's ids (phone number, wa_id, BSUID, username...) as sends use them:
which phone number reaches a contact, and ids a provider reported for one."""

from __future__ import annotations

import time

import sqlalchemy as sa

from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.policy import _canonical
from wahub.core.storage.schema import contact_identities, contacts

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
