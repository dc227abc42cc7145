"""Inbox claims: which rows may run now, fairly between contacts and in order
within one, taken in one transaction (a plan, see ``plans``). Text columns
are read as BLOBs on SQLite for the reason ``inbox`` gives.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from wahub.core.models import InboxState
from wahub.core.storage.inbox import Key, raw
from wahub.core.storage.leases import lease_over
from wahub.core.storage.plans import BEGIN, Plan
from wahub.core.storage.schema import inbox

#: Contacts one claim looks at, at most; the next claim goes on from there.
CLAIM_SCAN = 5000
_CLAIM_WINDOW = 500


def claimed_columns(is_sqlite: bool) -> tuple[sa.ColumnElement[Any], ...]:
    """What a claim returns of each row it takes (see ``inbox_row``)."""
    return (
        inbox.c.id,
        raw(inbox.c.provider, is_sqlite).label("provider"),
        raw(inbox.c.kind, is_sqlite).label("kind"),
        raw(inbox.c.contact_key, is_sqlite).label("contact_key"),
        raw(inbox.c.payload, is_sqlite).label("payload"),
        inbox.c.attempts,
        inbox.c.received_at,
    )


@dataclass(frozen=True)
class ClaimStatements:
    """The statements of every claim, built once per database kind: building
    and keying a statement costs more than SQLite takes to run it. Their
    parameters (not named after columns, which SQLAlchemy reserves): ``now``
    (free leases over), ``ids`` and ``lease_end`` (take), ``row_id``,
    ``claim_attempts`` and ``done_at`` (finish)."""

    #: Rows whose worker died (lease over) are pending again.
    free_lapsed: sa.Update
    #: The contact keys with a row in progress.
    busy: sa.Select[Any]
    #: Take the chosen rows that are still pending, returning ``claimed_columns``.
    take: sa.Update
    #: Mark a claimed row done, if it is still under the same claim.
    finish: sa.Update


@functools.cache
def claim_statements(is_sqlite: bool) -> ClaimStatements:
    pending, processing = InboxState.PENDING, InboxState.PROCESSING
    under_claim = sa.and_(
        inbox.c.id == sa.bindparam("row_id"),
        inbox.c.state == processing,
        inbox.c.attempts == sa.bindparam("claim_attempts"),
    )
    return ClaimStatements(
        free_lapsed=inbox.update()
        .where(
            inbox.c.state == processing,
            lease_over(inbox.c.lease_until, sa.bindparam("now"), "sqlite" if is_sqlite else "postgresql"),
        )
        .values(state=pending, lease_until=None),
        busy=sa.select(raw(inbox.c.contact_key, is_sqlite)).where(inbox.c.state == processing),
        take=inbox.update()
        .where(inbox.c.id.in_(sa.bindparam("ids", expanding=True)), inbox.c.state == pending)
        .values(state=processing, lease_until=sa.bindparam("lease_end"), attempts=inbox.c.attempts + 1)
        .returning(*claimed_columns(is_sqlite)),
        finish=inbox.update()
        .where(under_claim)
        .values(state=InboxState.DONE, lease_until=None, processed_at=sa.bindparam("done_at")),
    )


@dataclass(frozen=True)
class Claimed:
    """What a claim took (``claimed_columns`` rows), where the next one goes
    on, and whether it may have left rows to take."""

    rows: list[Any]
    cursor: ClaimCursor
    left: bool


def claim_plan(
    is_sqlite: bool,
    lock: tuple[sa.Executable, Mapping[str, Any]] | None,
    room: ClaimRoom,
    lease_seconds: float,
    now: float,
    start: ClaimCursor,
) -> Plan[Claimed]:
    """Claim what fits in ``room`` (see ``Storage.claim_inbox``), under ``lock``
    (PostgreSQL's claim lock; SQLite's write lock is the transaction's).

    It first reads what there is to take (``CLAIM_PROBE``), and most claims,
    right after a row's end, stop there, without a write transaction."""
    cap = room.slots + room.statuses + 1
    [probe] = yield CLAIM_PROBE, {"now": now, "cap": cap}
    if not (probe.pending or probe.lapsed):
        return Claimed([], start, False)
    # Only this process makes rows of a SQLite file ``processing``, in claims
    # that run one at a time: none at the probe, none now. A PostgreSQL
    # replica's claim may have made some since.
    known_idle = is_sqlite and not probe.processing
    # The count is good for the walks unless lapsed rows are freed into it.
    pending = probe.pending if probe.pending < cap and not probe.lapsed else None
    yield BEGIN, {}
    if lock is not None:
        yield lock
    statements = claim_statements(is_sqlite)
    if probe.lapsed:
        yield statements.free_lapsed, {"now": now}
    blocked: set[Key] = set() if known_idle else {row.contact_key for row in (yield statements.busy, {})}
    chosen, cursor = yield from choose_rows(is_sqlite, blocked, room, now, start, pending)
    if not chosen:
        return Claimed([], cursor, True)
    claimed = yield statements.take, {"ids": chosen, "lease_end": now + lease_seconds}
    return Claimed(claimed, cursor, pending is None or pending > len(claimed))


@functools.cache
def _walk_sql(is_sqlite: bool, first: bool, messages: bool) -> sa.TextClause:
    """Up to ``:count`` contacts with pending rows (with a user's message
    pending, if ``messages``), in key order from ``:after``, each with its
    oldest pending row: one index seek per step, on ``ix_inbox_state_contact_id``
    or on the partial ``ix_inbox_pending_messages`` (whose conditions the
    query spells out as literals, so both databases see they match), however
    many rows a contact has."""
    after = "CAST(:after AS TEXT)" if is_sqlite else ":after"
    key = "CAST(heads.key AS BLOB)" if is_sqlite else "heads.key"
    # SQLite's planner, without statistics, would rather walk the whole index than the partial one.
    indexed = " INDEXED BY ix_inbox_pending_messages" if messages and is_sqlite else ""
    message = " AND kind = 'message'" if messages else ""
    pending = f"SELECT contact_key FROM inbox{indexed} WHERE state = '{InboxState.PENDING}'{message} AND contact_key"
    return sa.text(
        "WITH RECURSIVE walk(key, n) AS ("
        f" SELECT ({pending} {'>=' if first else '>'} {after} ORDER BY contact_key LIMIT 1), 1"
        f" UNION ALL SELECT ({pending} > walk.key ORDER BY contact_key LIMIT 1), n + 1"
        " FROM walk WHERE walk.key IS NOT NULL AND n < :count)"
        # Scalar subqueries, not a join: a join lets PostgreSQL's planner scan the whole inbox.
        f" SELECT {key} AS key, heads.id AS id, (SELECT lease_until FROM inbox WHERE id = heads.id) AS lease_until,"
        " (SELECT kind = 'status' FROM inbox WHERE id = heads.id) AS is_status"
        f" FROM (SELECT walk.key, walk.n, (SELECT id FROM inbox WHERE state = '{InboxState.PENDING}'"
        " AND contact_key = walk.key ORDER BY id LIMIT 1) AS id FROM walk WHERE walk.key IS NOT NULL) AS heads"
        " ORDER BY heads.n"
    )


@dataclass(frozen=True)
class ClaimCursor:
    """Where the next claim's two walks go on (None: from the first contact)."""

    messages: Key | None = None
    contacts: Key | None = None


@dataclass
class ClaimRoom:
    """What a claim may still take: ``slots`` rows, each run on its own, where
    up to ``statuses`` delivery statuses share one slot (they run as one
    batch, ``wahub.core.inbound.steps.statuses``). Without ``statuses`` a status
    takes a slot like any row."""

    slots: int
    statuses: int = 0
    taken_statuses: int = 0
    #: Rows passed over for want of a slot while a batch could still grow.
    passed: int = 0

    def take(self, is_status: bool) -> bool:
        """Make room for a row; False when there is none for it."""
        if is_status and self.statuses > 0:
            if 0 < self.taken_statuses < self.statuses:
                self.taken_statuses += 1
                return True
            if self.taken_statuses == 0 and self.slots > 0:
                self.slots -= 1
                self.taken_statuses = 1
                return True
        elif self.slots > 0:
            self.slots -= 1
            return True
        self.passed += 1
        return False

    @property
    def full(self) -> bool:
        """Nothing more fits, or the batch has looked far enough for more statuses."""
        if self.slots > 0:
            return False
        batch_open = 0 < self.taken_statuses < self.statuses
        return not batch_open or self.passed > self.statuses


def choose_rows(
    is_sqlite: bool,
    blocked: set[Key],
    room: ClaimRoom,
    now: float,
    start: ClaimCursor,
    pending: int | None = None,
) -> Plan[tuple[list[int], ClaimCursor]]:
    """Ids of the rows that may run now, as many as fit in ``room``, and where
    the next claim goes on. ``pending``, when known, is how many rows are
    pending: once the first walk took them all, there is no second.

    The users' messages come first, so that a reply never queues behind the
    delivery statuses of a broadcast: a first walk goes through the contacts
    with a message pending until the slots are taken, a second one, for what
    room is left, through every contact with pending rows. Within each walk
    contacts take turns: it goes in key order from the contact after the one
    the last claim stopped at, round to the beginning. A walk takes each
    contact's oldest pending row (a status received before the message comes
    before it), unless the contact is ``blocked`` (a row in progress) or that
    row waits for its retry time. So a contact's rows keep their order, and
    one with a long backlog, of messages or of anything, gets one row per turn
    like every other contact.
    """
    chosen: list[int] = []
    messages = yield from _walk(is_sqlite, True, blocked, room, now, start.messages, chosen)
    if room.full or (pending is not None and len(chosen) >= pending):
        return chosen, ClaimCursor(messages, start.contacts)
    contacts = yield from _walk(is_sqlite, False, blocked, room, now, start.contacts, chosen)
    return chosen, ClaimCursor(messages, contacts)


def _walk(
    is_sqlite: bool,
    messages: bool,
    blocked: set[Key],
    room: ClaimRoom,
    now: float,
    start: Key | None,
    chosen: list[int],
) -> Plan[Key | None]:
    """Add to ``chosen`` the rows one walk takes (see ``choose_rows``); where it
    stopped. The walk of messages ends once the slots are taken."""
    visited, first, wrapped = 0, start is None, start is None
    after: Key | None = start
    wanted = room.slots if messages else room.slots + room.statuses - room.taken_statuses
    window_size = max(2 * wanted, 8)  # most claims end in the first window; later ones grow
    while visited < CLAIM_SCAN:
        count = min(window_size, CLAIM_SCAN - visited)
        window_size = min(2 * window_size, _CLAIM_WINDOW)
        params = {"after": after if after is not None else (b"" if is_sqlite else ""), "count": count}
        window = yield _walk_sql(is_sqlite, first, messages), params
        for row in window:
            visited += 1
            after, first = row.key, False
            _take(row, blocked, now, room, chosen)
            if room.full or (messages and room.slots == 0):
                return after
        if len(window) < count:  # the last contact: start again from the first, once
            if wrapped:
                return None
            after, first, wrapped = None, True, True
    return after


def _take(row: sa.Row[Any], blocked: set[Key], now: float, room: ClaimRoom, chosen: list[int]) -> None:
    """Choose a contact's oldest pending row, unless the contact has a row in
    progress, that row waits for its retry time, or there is no room for it."""
    if row.key in blocked or (row.lease_until is not None and row.lease_until > now):
        return
    if room.take(bool(row.is_status)):
        blocked.add(row.key)
        chosen.append(row.id)


#: What a claim at ``:now`` may find, read before its write transaction (which
#: most claims after a row's end would otherwise open for nothing): how many
#: rows are pending (counted up to ``:cap``), whether any row is in progress,
#: and whether one of those has its lease run out.
CLAIM_PROBE = sa.select(
    sa.select(sa.func.count())
    .select_from(
        sa.select(inbox.c.id)
        .where(inbox.c.state == InboxState.PENDING)
        .limit(sa.bindparam("cap", type_=sa.Integer))
        .subquery()
    )
    .scalar_subquery()
    .label("pending"),
    sa.exists().where(inbox.c.state == InboxState.PROCESSING).label("processing"),
    sa.exists()
    .where(inbox.c.state == InboxState.PROCESSING, inbox.c.lease_until <= sa.bindparam("now"))
    .label("lapsed"),
)
