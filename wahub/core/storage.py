"""Database access: engine, migrations and the inbox. All SQL lives in ``core/storage*``.

SQLite (WAL) by default, PostgreSQL through asyncpg, with the same code. On
SQLite one connection serves the process: SQLite admits one writer at a time
anyway, and a single connection queues writers in the event loop instead of
in SQLite's sleeping busy handler.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from wahub.core.models import InboundMessage, OutgoingMessage
from wahub.core.storage_messages import MessageStore, insert_ignore
from wahub.core.storage_schema import inbox, quarantine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every wahub replica.
_MIGRATION_LOCK_ID = 0x77616875
# Rows per INSERT statement: well under SQLite's limit of bound parameters.
_INSERT_CHUNK = 500


@dataclass(frozen=True)
class InboxRow:
    id: int
    provider: str
    kind: str
    contact_key: str
    payload: dict[str, Any]
    attempts: int


def engine_url(url: str) -> str:
    """Map a config URL (``sqlite:///...``, ``postgresql://...``) to an async driver URL."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{path}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # FULL: a commit is on disk before the webhook gets its 200, even on power loss.
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=10000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    driver_url = engine_url(url)
    if driver_url.startswith("sqlite"):
        engine = create_async_engine(driver_url, pool_size=1, max_overflow=0, pool_timeout=120)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(driver_url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _upgrade(connection: Connection) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class Storage:
    """The daemon's database: open with ``await Storage.open(url)``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.messages = MessageStore(engine)

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Storage:
        storage = cls(create_engine(url))
        if migrate:
            await storage.migrate()
        return storage

    async def migrate(self) -> None:
        """Apply pending Alembic migrations; replicas on PostgreSQL take turns."""
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # -- inbox ---------------------------------------------------------------

    async def insert_inbox(self, rows: Sequence[dict[str, Any]]) -> int:
        """Store webhook events in one transaction; duplicates of
        ``(provider, external_id)`` are skipped. Returns how many were new."""
        if not rows:
            return 0
        now = time.time()
        values = [{**row, "received_at": now, "state": "pending", "attempts": 0} for row in rows]
        new = 0
        async with self.engine.begin() as conn:
            # Multi-row VALUES with RETURNING counts the new rows on every driver
            # (executemany row counts are not reliable on asyncpg).
            for start in range(0, len(values), _INSERT_CHUNK):
                chunk = values[start : start + _INSERT_CHUNK]
                statement = insert_ignore(conn, inbox, ["provider", "external_id"]).values(chunk)
                new += len((await conn.execute(statement.returning(inbox.c.id))).all())
        return new

    async def claim_inbox(self, limit: int, lease_seconds: float) -> list[InboxRow]:
        """Claim up to ``limit`` rows that may run now: for each contact only
        its oldest unfinished row, so a contact's events run in order."""
        now = time.time()
        later = inbox.alias("later")
        oldest_open = (
            sa.select(sa.func.min(later.c.id))
            .where(later.c.contact_key == inbox.c.contact_key, later.c.state.in_(("pending", "processing")))
            .scalar_subquery()
        )
        query = (
            sa.select(
                inbox.c.id, inbox.c.provider, inbox.c.kind, inbox.c.contact_key, inbox.c.payload, inbox.c.attempts
            )
            .where(
                inbox.c.state.in_(("pending", "processing")),
                sa.or_(inbox.c.lease_until.is_(None), inbox.c.lease_until <= now),
                inbox.c.id == oldest_open,
            )
            .order_by(inbox.c.id)
            .limit(limit)
        )
        if not self.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=inbox)
        async with self.engine.begin() as conn:
            rows = (await conn.execute(query)).all()
            if rows:
                await conn.execute(
                    inbox.update()
                    .where(inbox.c.id.in_([row.id for row in rows]))
                    .values(state="processing", lease_until=now + lease_seconds, attempts=inbox.c.attempts + 1)
                )
        return [InboxRow(r.id, r.provider, r.kind, r.contact_key, r.payload, r.attempts + 1) for r in rows]

    async def finish_inbox(self, row_id: int, conn: AsyncConnection | None = None) -> None:
        statement = (
            inbox.update().where(inbox.c.id == row_id).values(state="done", lease_until=None, processed_at=time.time())
        )
        if conn is not None:
            await conn.execute(statement)
            return
        async with self.engine.begin() as own:
            await own.execute(statement)

    async def finish_with_replies(
        self,
        row_id: int,
        message: InboundMessage,
        replies: Sequence[OutgoingMessage],
        *,
        contact_id: int,
        conversation_id: int,
    ) -> int:
        """Queue the replies to an inbound message and mark its inbox row done, in
        one transaction. Reply keys derive from the message, so a re-run after a
        crash queues nothing twice. Returns how many replies were new."""
        created = 0
        async with self.engine.begin() as conn:
            for index, reply in enumerate(replies):
                _id, new = await self.messages.enqueue(
                    message.provider,
                    reply,
                    idempotency_key=f"reply:{message.provider}:{message.external_id}:{index}",
                    contact_id=contact_id,
                    conversation_id=conversation_id,
                    conn=conn,
                )
                created += new
            await self.finish_inbox(row_id, conn)
        return created

    async def retry_inbox(self, row_id: int, error: str, *, retry_at: float | None) -> None:
        """Record a failed attempt: run again at ``retry_at``, or give up (``failed``) when None."""
        values: dict[str, Any] = {"error": error[:2000]}
        if retry_at is None:
            values.update(state="failed", lease_until=None, processed_at=time.time())
        else:
            values.update(state="pending", lease_until=retry_at)
        async with self.engine.begin() as conn:
            await conn.execute(inbox.update().where(inbox.c.id == row_id).values(**values))

    async def release_inbox_claims(self) -> int:
        """Make every claimed row runnable again (start-up of a single SQLite process)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                inbox.update().where(inbox.c.state == "processing").values(state="pending", lease_until=None)
            )
        return result.rowcount

    async def inbox_depth(self) -> tuple[int, float]:
        """Unfinished rows and the age in seconds of the oldest."""
        query = sa.select(sa.func.count(), sa.func.min(inbox.c.received_at)).where(
            inbox.c.state.in_(("pending", "processing"))
        )
        async with self.engine.connect() as conn:
            count, oldest = (await conn.execute(query)).one()
        return int(count), (time.time() - oldest) if oldest else 0.0

    async def purge_inbox(self, older_than: float) -> int:
        """Delete finished rows received before ``older_than`` (kept until then for dedupe)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                inbox.delete().where(inbox.c.state.in_(("done", "failed")), inbox.c.received_at < older_than)
            )
        return result.rowcount

    async def quarantine(self, provider: str, reason: str, headers: dict[str, str], body: bytes) -> None:
        """Keep a webhook body that could not be parsed, for inspection."""
        async with self.engine.begin() as conn:
            await conn.execute(
                quarantine.insert().values(
                    provider=provider, reason=reason[:2000], headers=headers, body=body, received_at=time.time()
                )
            )
