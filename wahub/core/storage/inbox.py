"""Inbox rows as stored and the queries about them that hostile stored rows
cannot break: the failed rows an operator lists and puts back, and the
older or newer rows a row's processing waits for (``inbox_claims`` takes
the rows to run).

A SQLite text column may hold bytes that are not UTF-8 (written by an older
version, or by hand). The driver raises when it reads such a value, which
would fail the whole query and so every claim. These queries read text
columns as BLOBs on SQLite and decode each row themselves: a damaged row
fails alone. PostgreSQL cannot store invalid UTF-8, so there they read text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.models import InboxState
from wahub.core.storage.schema import contact_identities, contacts, inbox

#: The identities that make a contact key (see ``InboundMessage.contact_key``).
ORDERING_KINDS = ("wa_id", "bsuid")

#: A contact key as the claim handles it: bytes on SQLite (it may not be UTF-8), text on PostgreSQL.
Key = bytes | str


@dataclass(frozen=True)
class InboxRow:
    id: int
    provider: str
    kind: str
    contact_key: str
    payload: dict[str, Any]
    attempts: int
    #: When the webhook that carried it was stored (unix seconds).
    received_at: float = 0.0
    #: Why the stored row cannot be processed at all (text that is not UTF-8, a
    #: payload that is not a JSON object), or None.
    damage: str | None = None


@dataclass(frozen=True)
class FailedRow:
    """An inbox row that gave up, as an operator sees it."""

    id: int
    provider: str
    kind: str
    contact_key: str
    attempts: int
    error: str
    received_at: float
    failed_at: float | None


def raw(column: sa.ColumnElement[Any], is_sqlite: bool) -> sa.ColumnElement[Any]:
    """``column`` as stored: its bytes on SQLite, so reading it never fails."""
    return sa.cast(column, sa.LargeBinary) if is_sqlite else column


def decoded(value: Any) -> tuple[str, bool]:
    """A stored text value and whether it was valid (bytes that are not UTF-8 are not)."""
    if isinstance(value, bytes):
        try:
            return value.decode(), True
        except UnicodeDecodeError:
            return value.decode(errors="replace"), False
    return ("" if value is None else str(value)), True


def safe_text(text: str) -> str:
    """``text`` as any database stores it: lone surrogates escaped, NUL removed."""
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "")


def _payload(value: Any, problems: list[str]) -> dict[str, Any]:
    if isinstance(value, bytes):
        text, valid = decoded(value)
        if not valid:
            problems.append("payload is not valid UTF-8")
        try:
            value = json.loads(text)
        except ValueError:
            problems.append("payload is not JSON")
            return {}
    if not isinstance(value, dict):
        problems.append(f"payload is a JSON {type(value).__name__}, not an object")
        return {}
    return value


def inbox_row(record: sa.Row[Any]) -> InboxRow:
    """A claimed row, with what makes it unprocessable in ``damage``."""
    problems: list[str] = []
    texts = {}
    for column in ("provider", "kind", "contact_key"):
        texts[column], valid = decoded(getattr(record, column))
        if not valid:
            problems.append(f"{column} is not valid UTF-8")
    payload = _payload(record.payload, problems)
    return InboxRow(
        id=record.id,
        provider=texts["provider"],
        kind=texts["kind"],
        contact_key=texts["contact_key"],
        payload=payload,
        attempts=record.attempts,
        received_at=float(record.received_at),
        damage="; ".join(problems) or None,
    )


async def failed_rows(conn: AsyncConnection, is_sqlite: bool, limit: int) -> list[FailedRow]:
    """The rows that gave up, oldest first."""
    query = (
        sa.select(
            inbox.c.id,
            raw(inbox.c.provider, is_sqlite).label("provider"),
            raw(inbox.c.kind, is_sqlite).label("kind"),
            raw(inbox.c.contact_key, is_sqlite).label("contact_key"),
            inbox.c.attempts,
            raw(inbox.c.error, is_sqlite).label("error"),
            inbox.c.received_at,
            inbox.c.processed_at,
        )
        .where(inbox.c.state == InboxState.FAILED)
        .order_by(inbox.c.id)
        .limit(limit)
    )
    return [
        FailedRow(
            id=row.id,
            provider=decoded(row.provider)[0],
            kind=decoded(row.kind)[0],
            contact_key=decoded(row.contact_key)[0],
            attempts=row.attempts,
            error=decoded(row.error)[0],
            received_at=row.received_at,
            failed_at=row.processed_at,
        )
        for row in await conn.execute(query)
    ]


async def reopen_failed(conn: AsyncConnection, ids: Sequence[int] | None) -> list[int]:
    """Put failed rows (``ids``, or all when None) back to pending with a fresh
    count of attempts; returns the ids reopened."""
    statement = inbox.update().where(inbox.c.state == InboxState.FAILED)
    if ids is not None:
        statement = statement.where(inbox.c.id.in_(list(ids)))
    reopened = statement.values(state=InboxState.PENDING, attempts=0, lease_until=None, processed_at=None, error=None)
    return sorted((await conn.execute(reopened.returning(inbox.c.id))).scalars())


#: An unfinished row of the contact ``:key``, of one of ``:kinds``, after the row ``:after``.
NEWER_ROWS = (
    sa.select(inbox.c.id)
    .where(
        inbox.c.contact_key == sa.bindparam("key"),
        inbox.c.state.in_([InboxState.PENDING, InboxState.PROCESSING]),
        inbox.c.kind.in_(sa.bindparam("kinds", expanding=True)),
        inbox.c.id > sa.bindparam("after"),
    )
    .limit(1)
)

_other = contact_identities.alias("other")
#: The ordering ids of the contacts of ``:provider`` that have one of the ids ``:ids``.
_LINKED = (
    sa.select(_other.c.value)
    .select_from(
        contact_identities.join(contacts, contacts.c.id == contact_identities.c.contact_id).join(
            _other, _other.c.contact_id == contact_identities.c.contact_id
        )
    )
    .where(
        contacts.c.provider == sa.bindparam("provider"),
        contact_identities.c.kind.in_(ORDERING_KINDS),
        contact_identities.c.value.in_(sa.bindparam("ids", expanding=True)),
        _other.c.kind.in_(ORDERING_KINDS),
    )
)


async def sibling_keys(conn: AsyncConnection, provider: str, ids: Sequence[str], own_key: str) -> tuple[set[str], bool]:
    """The other contact keys the user with these ``ids`` (wa_id, BSUID) has
    had: its ids, and those of the contact already linked to any of them
    (a contact first seen with both learns the link), except ``own_key``;
    and whether wahub has a contact with any of these ids."""
    found = set((await conn.execute(_LINKED, {"provider": provider, "ids": list(ids)})).scalars())
    return {f"{provider}:{value}" for value in {*ids, *found}} - {own_key}, bool(found)


async def older_naming_bsuid(conn: AsyncConnection, is_sqlite: bool, row: InboxRow, bsuid: str) -> bool:
    """Whether an older unfinished message of ``row``'s provider, under another
    key, names ``bsuid``: a user with no contact yet whose first messages
    (carrying its wa_id too) still wait. Reads the payloads, so it is only for
    users wahub has not seen."""
    named = inbox.c.payload[("identities", "bsuid")].as_string()
    if is_sqlite:  # json_extract raises on a payload that is not JSON; such a row names nobody
        named = sa.case((sa.func.json_valid(inbox.c.payload) == 1, named), else_=None)
    query = (
        sa.select(inbox.c.id)
        .where(
            inbox.c.state.in_((InboxState.PENDING, InboxState.PROCESSING)),
            inbox.c.provider == row.provider,
            inbox.c.kind == "message",
            inbox.c.id < row.id,
            inbox.c.contact_key != row.contact_key,
            named == bsuid,
        )
        .limit(1)
    )
    return (await conn.execute(query)).first() is not None


async def older_unfinished(conn: AsyncConnection, row_id: int, keys: set[str]) -> bool:
    """Whether a row older than ``row_id`` under one of ``keys`` is pending or in progress."""
    query = (
        sa.select(inbox.c.id)
        .where(
            inbox.c.state.in_((InboxState.PENDING, InboxState.PROCESSING)),
            inbox.c.contact_key.in_(sorted(keys)),
            inbox.c.id < row_id,
        )
        .limit(1)
    )
    return (await conn.execute(query)).first() is not None
