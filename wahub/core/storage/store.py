"""The daemon's database (``Storage``) and the inbox queries. All SQL lives in
this package: the engine, its connections and migrations in ``engine``, each
table family in a module of its own (``messages``, ``outbox``, ``contacts``...).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from wahub.core.config.sections import MEDIA_SCHEMA
from wahub.core.errors import LeaseLost
from wahub.core.models import InboundMessage, InboxState, OutgoingMessage
from wahub.core.storage.activity import ActivityStore
from wahub.core.storage.campaigns import CampaignStore
from wahub.core.storage.contacts import ContactStore
from wahub.core.storage.conversations import (
    ConversationStore,
    Finished,
    Transition,
    TurnEnd,
    dropped_reply,
    owner_if_changed,
)
from wahub.core.storage.deliveries import DeliveryStore
from wahub.core.storage.desk import DeskStore
from wahub.core.storage.engine import (
    Database,
    SqliteInboxWriter,
    apply_migrations,
    create_engine,
    insert_ignore,
    lock_sqlite_file,
)
from wahub.core.storage.inbox import (
    NEWER_ROWS,
    ORDERING_KINDS,
    FailedRow,
    failed_rows,
    inbox_row,
    older_naming_bsuid,
    older_unfinished,
    reopen_failed,
    safe_text,
    sibling_keys,
)
from wahub.core.storage.inbox import (
    InboxRow as InboxRow,  # re-exported: the row type of claim_inbox
)
from wahub.core.storage.inbox_claims import ClaimCursor, ClaimRoom, claim_plan, claim_statements
from wahub.core.storage.leases import LeaseStore
from wahub.core.storage.media import MediaStore
from wahub.core.storage.messages import MessageStore, Refusal
from wahub.core.storage.operators import OperatorStore
from wahub.core.storage.outbox import OutboxStore
from wahub.core.storage.policy import PolicyStore
from wahub.core.storage.schedules import ScheduleStore
from wahub.core.storage.schema import conversations, inbox, quarantine
from wahub.core.storage.settings import SettingsStore

_LOGGER = logging.getLogger(__name__)

# Held (per transaction) by inbox claims and by whatever re-opens a row, so that
# on PostgreSQL one replica's claim sees no row re-opened half-way through.
_CLAIM_LOCK_ID = 0x77616876
_CLAIM_LOCK = sa.text("SELECT pg_advisory_xact_lock(:id)")


#: The conversation ``:conversation`` has its messages answered up to ``:answered`` (built once).
_ANSWERED_THROUGH = (
    conversations.update()
    .where(
        conversations.c.id == sa.bindparam("conversation"),
        sa.or_(conversations.c.answered_through.is_(None), conversations.c.answered_through < sa.bindparam("answered")),
    )
    .values(answered_through=sa.bindparam("answered"))
)


class Storage:
    """The daemon's database: open with ``await Storage.open(url)``."""

    def __init__(self, engine: AsyncEngine, media_config: Mapping[str, Any] | None = None) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.db = Database(engine)
        self.messages = MessageStore(self.db)
        self.outbox = OutboxStore(self.db)
        self.policy = PolicyStore(self.db)
        self.contacts = ContactStore(self.db)
        self.conversations = ConversationStore(self.db)
        self.leases = LeaseStore(self.db, self._claim_lock)
        self.operators = OperatorStore(self.db)
        self.activity = ActivityStore(self.db)
        self.desk = DeskStore(self.db)
        self.campaigns = CampaignStore(self.db)
        self.schedules = ScheduleStore(self.db)
        self.deliveries = DeliveryStore(self.db)
        self.settings = SettingsStore(self.db)
        self.media = MediaStore(self.db, media_config if media_config is not None else MEDIA_SCHEMA({}))
        self._sqlite_inbox = SqliteInboxWriter(str(engine.url.database), self.db.lock) if self.is_sqlite else None
        self._file_lock: IO[bytes] | None = None
        #: The contact the last claim of this process stopped at: the next one goes on after it.
        self._claim_after = ClaimCursor()
        #: Whether the last inbox claim left pending rows (or could not tell):
        #: only then may a row's end let another row run.
        self.claim_left_rows = True

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True, media: Mapping[str, Any] | None = None) -> Storage:
        """``media`` is the ``wahub.media`` configuration (default: its schema's defaults)."""
        engine = create_engine(url)
        lock = lock_sqlite_file(str(engine.url.database)) if engine.dialect.name == "sqlite" else None
        storage = cls(engine, media)
        storage._file_lock = lock
        try:
            if migrate:
                await storage.migrate()
            if storage._sqlite_inbox is not None:
                await storage._sqlite_inbox.open()
        except BaseException:
            await storage.close()
            raise
        return storage

    async def migrate(self) -> None:
        """Apply pending Alembic migrations; replicas on PostgreSQL take turns."""
        applied, revision = await apply_migrations(self.db)
        # Logged once committed: a migration that failed or rolled back is not "applied".
        for name, description in applied:
            _LOGGER.info("database: applied migration %s (%s)", name, description)
        if not applied:
            _LOGGER.info("database schema is up to date at revision %s", revision)

    async def close(self) -> None:
        if self._sqlite_inbox is not None:
            await self._sqlite_inbox.close()
        await self.engine.dispose()
        if self._file_lock is not None:
            self._file_lock.close()

    async def ping(self) -> None:
        async with self.db.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # -- inbox ---------------------------------------------------------------

    async def insert_inbox(self, rows: Sequence[dict[str, Any]]) -> int:
        """Store webhook events in one transaction; duplicates of
        ``(provider, external_id)`` are skipped. Returns how many were new."""
        if not rows:
            return 0
        now = time.time()
        if self._sqlite_inbox is not None:
            return await self._sqlite_inbox.insert(rows, now)
        values = [{**row, "received_at": now, "state": InboxState.PENDING, "attempts": 0} for row in rows]
        async with self.db.begin() as conn:
            # Claims take this lock exclusively: they never run past a lower id
            # that another replica has taken but not yet committed.
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock_shared(:id)"), {"id": _CLAIM_LOCK_ID})
            # executemany with RETURNING: SQLAlchemy batches it into few statements
            # and counts exactly the new rows on both databases.
            statement = insert_ignore(conn, inbox, ["provider", "external_id"]).returning(inbox.c.id)
            return len((await conn.execute(statement, values)).all())

    async def claim_inbox(self, limit: int, lease_seconds: float, *, statuses: int = 0) -> list[InboxRow]:
        """Claim up to ``limit`` rows that may run now: a row runs only when no
        older row of its contact is unfinished, so a contact's events run in order.
        With ``statuses``, up to that many delivery statuses count as one of
        the ``limit`` rows (they run as one batch).

        The users' messages come first, then contacts take turns (see
        ``inbox_claims.choose_rows``): a backlog of statuses never holds back a
        message, and one contact's backlog never holds back the others by more
        than a claim. A contact is
        blocked by a row in progress, or by its oldest pending row waiting for
        its retry time. A row whose stored text cannot be read is returned with
        ``damage`` set, so that it fails alone.
        """
        lock = None if self.is_sqlite else (_CLAIM_LOCK, {"id": _CLAIM_LOCK_ID})
        room = ClaimRoom(limit, statuses)
        claimed = await self.db.run(
            claim_plan(self.is_sqlite, lock, room, lease_seconds, time.time(), self._claim_after)
        )
        self._claim_after, self.claim_left_rows = claimed.cursor, claimed.left
        return sorted((inbox_row(row) for row in claimed.rows), key=lambda row: row.id)

    async def _claim_lock(self, conn: AsyncConnection) -> None:
        # On SQLite the transaction already holds the database's write lock.
        if not self.is_sqlite:
            await conn.execute(_CLAIM_LOCK, {"id": _CLAIM_LOCK_ID})

    async def finish_inbox(self, row: InboxRow, conn: AsyncConnection | None = None) -> None:
        """Mark ``row`` done. Raises LeaseLost when the row was claimed again since
        (its lease ran out): then the newer claim's outcome stands."""
        statement = claim_statements(self.is_sqlite).finish
        params = {"row_id": row.id, "claim_attempts": row.attempts, "done_at": time.time()}
        if conn is not None:
            if (await conn.execute(statement, params)).rowcount != 1:
                raise LeaseLost(row.id)
            return
        async with self.db.begin() as own:
            await self.finish_inbox(row, own)

    async def finish_inbox_rows(self, rows: Sequence[InboxRow]) -> list[InboxRow]:
        """Mark ``rows`` done in one transaction; returns those claimed again
        since (their lease ran out), whose newer claim's outcome stands."""
        claims = [(row.id, row.attempts) for row in rows]
        statement = (
            inbox.update()
            .where(
                sa.tuple_(inbox.c.id, inbox.c.attempts).in_(claims),
                inbox.c.state == InboxState.PROCESSING,
            )
            .values(state=InboxState.DONE, lease_until=None, processed_at=time.time())
            .returning(inbox.c.id)
        )
        async with self.db.begin() as conn:
            finished = set((await conn.execute(statement)).scalars())
        return [row for row in rows if row.id not in finished]

    async def finish_with_replies(
        self,
        row: InboxRow,
        message: InboundMessage,
        replies: Sequence[OutgoingMessage | Refusal],
        *,
        contact_id: int,
        conversation_id: int,
        now: float | None = None,
        turn: TurnEnd | None = None,
        answered_through: int | None = None,
    ) -> Finished:
        """Queue the replies to an inbound message and mark its inbox row done, in
        one transaction; a reply the policy refused is stored ``failed`` with its
        reason instead, never sent. Reply keys derive from the message, so a
        re-run after a crash stores nothing twice.

        With ``turn`` the replies are the bot's: they are queued only if the bot
        still owns the conversation under the version the turn started with;
        otherwise each is kept ``failed`` with ``owner_changed`` (dropped), and
        the turn's hand-off, if any, is not made. ``answered_through`` (or the
        turn's) records the last inbound message answered or seen by a person."""
        now = time.time() if now is None else now
        change = None
        async with self.db.begin() as conn:
            taken_by = None if turn is None else await owner_if_changed(conn, conversation_id, turn)
            dropped = taken_by is not None
            if taken_by is not None:
                replies = [dropped_reply(reply, taken_by) for reply in replies]
            created = await self._queue_replies(conn, message, replies, contact_id, conversation_id, now)
            if turn is not None and turn.handoff is not None and not dropped:
                key = f"handoff:{message.provider}:{message.external_id}"
                handoff = Transition("queued", *turn.handoff, event_key=key)
                change = await self.conversations.change_owner(conversation_id, handoff, now=now, conn=conn)
            answered = turn.answered_through if turn is not None else answered_through
            if answered is not None:
                await conn.execute(_ANSWERED_THROUGH, {"conversation": conversation_id, "answered": answered})
            await self.finish_inbox(row, conn)
        return Finished(created, change, dropped)

    async def _queue_replies(
        self,
        conn: AsyncConnection,
        message: InboundMessage,
        replies: Sequence[OutgoingMessage | Refusal],
        contact_id: int,
        conversation_id: int,
        now: float,
    ) -> int:
        """Queue the replies (a refusal kept failed instead); how many were newly queued."""
        created = 0
        for index, reply in enumerate(replies):
            refused = reply if isinstance(reply, Refusal) else None
            _id, new = await self.messages.enqueue(
                message.provider,
                reply.message if isinstance(reply, Refusal) else reply,
                idempotency_key=f"reply:{message.provider}:{message.external_id}:{index}",
                contact_id=contact_id,
                conversation_id=conversation_id,
                origin="reply",
                refused=refused,
                now=now,
                conn=conn,
            )
            created += new and refused is None
        return created

    async def retry_inbox(self, row: InboxRow, error: str, *, retry_at: float | None) -> None:
        """Record a failed attempt: run again at ``retry_at``, or give up (``failed``) when None."""
        values: dict[str, Any] = {"error": safe_text(error)[:2000]}
        if retry_at is None:
            values.update(state=InboxState.FAILED, lease_until=None, processed_at=time.time())
        else:
            values.update(state=InboxState.PENDING, lease_until=retry_at)
        async with self.db.begin() as conn:
            if retry_at is not None:
                await self._claim_lock(conn)
            fenced = inbox.c.id == row.id, inbox.c.state == InboxState.PROCESSING, inbox.c.attempts == row.attempts
            await conn.execute(inbox.update().where(*fenced).values(**values))

    async def inbox_waits_for_sibling(self, row: InboxRow, identities: Mapping[str, str]) -> bool:
        """Whether an older row of the same user is unfinished under another
        contact key (the user's wa_id or BSUID, see ``InboundMessage.contact_key``)."""
        ids = [identities[kind] for kind in ORDERING_KINDS if kind in identities]
        if not ids:
            return False
        async with self.db.connect() as conn:
            keys, known = await sibling_keys(conn, row.provider, ids, row.contact_key)
            if keys and await older_unfinished(conn, row.id, keys):
                return True
            bsuid = identities.get("bsuid")
            return not known and bsuid is not None and await older_naming_bsuid(conn, self.is_sqlite, row, bsuid)

    async def newer_row_waiting(self, row: InboxRow, kinds: Sequence[str]) -> bool:
        """Whether a later event of one of ``kinds`` (a message, the business's
        answer from its app) of the row's contact is stored and not yet finished."""
        params = {"key": row.contact_key, "kinds": list(kinds), "after": row.id}
        async with self.db.connect() as conn:
            return (await conn.execute(NEWER_ROWS, params)).first() is not None

    async def defer_inbox(self, row: InboxRow, until: float) -> None:
        """Give a claimed row back, to run at ``until``; the attempt does not count."""
        async with self.db.begin() as conn:
            await self._claim_lock(conn)
            fenced = inbox.c.id == row.id, inbox.c.state == InboxState.PROCESSING, inbox.c.attempts == row.attempts
            values = {"state": InboxState.PENDING, "lease_until": until, "attempts": inbox.c.attempts - 1}
            if (await conn.execute(inbox.update().where(*fenced).values(**values))).rowcount != 1:
                raise LeaseLost(row.id)

    async def release_inbox_claims(self) -> int:
        """Make every claimed row runnable again (start-up of a single SQLite process)."""
        async with self.db.begin() as conn:
            await self._claim_lock(conn)
            result = await conn.execute(
                inbox.update()
                .where(inbox.c.state == InboxState.PROCESSING)
                .values(state=InboxState.PENDING, lease_until=None)
            )
        return result.rowcount

    async def failed_inbox(self, limit: int = 100) -> list[FailedRow]:
        """Inbox rows that gave up (state ``failed``), oldest first."""
        async with self.db.connect() as conn:
            return await failed_rows(conn, self.is_sqlite, limit)

    async def retry_failed_inbox(self, ids: Sequence[int] | None = None) -> list[int]:
        """Put failed rows (these ``ids``, or every one) back to pending with a
        fresh count of attempts. Returns the ids put back; ids of rows that are
        not failed are left alone."""
        async with self.db.begin() as conn:
            await self._claim_lock(conn)
            return await reopen_failed(conn, ids)

    async def inbox_failed_count(self) -> int:
        async with self.db.connect() as conn:
            query = sa.select(sa.func.count()).select_from(inbox).where(inbox.c.state == InboxState.FAILED)
            return int((await conn.execute(query)).scalar_one())

    async def inbox_depth(self) -> tuple[int, float]:
        """Unfinished rows and the age in seconds of the oldest."""
        query = sa.select(sa.func.count(), sa.func.min(inbox.c.received_at)).where(
            inbox.c.state.in_((InboxState.PENDING, InboxState.PROCESSING))
        )
        async with self.db.connect() as conn:
            count, oldest = (await conn.execute(query)).one()
        return int(count), (time.time() - oldest) if oldest else 0.0

    async def purge_inbox(self, older_than: float) -> int:
        """Delete finished rows received before ``older_than`` (kept until then for dedupe)."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                inbox.delete().where(
                    inbox.c.state.in_((InboxState.DONE, InboxState.FAILED)), inbox.c.received_at < older_than
                )
            )
        return result.rowcount

    async def quarantine(self, provider: str, reason: str, headers: dict[str, str], body: bytes) -> None:
        """Keep a webhook body that could not be parsed, for inspection."""
        await self.quarantine_many(provider, headers, [(reason, body)])

    async def quarantine_many(
        self, provider: str, headers: Mapping[str, str], items: Sequence[tuple[str, bytes]]
    ) -> None:
        """Keep webhook bodies or items of them (each with its reason) that could
        not be stored as events, in one transaction. Bodies are kept byte for
        byte; text in reasons or headers that no database takes is escaped."""
        if not items:
            return
        kept = {safe_text(key): safe_text(value) for key, value in headers.items()}
        now = time.time()
        rows = [
            {
                "provider": provider,
                "reason": safe_text(reason[:2000]),
                "headers": kept,
                "body": body,
                "received_at": now,
            }
            for reason, body in items
        ]
        async with self.db.begin() as conn:
            await conn.execute(quarantine.insert(), rows)
