"""The database engine and its connections: engine creation, SQLite pragmas,
the file lock, the SQLite inbox writer, migrations, and the transactions every
store runs in (``Database``, ``insert_ignore``).

SQLite (WAL) by default, PostgreSQL through asyncpg, with the same code. On
SQLite the inbox has its own connection in its own thread: a group commit is
one INSERT statement there instead of a thread hop per statement, which is
what keeps webhook intake fast. Every other query shares
one pooled connection. All SQLite transactions begin IMMEDIATE, so the two
connections queue for the write lock instead of failing on a lock upgrade.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from wahub.core.errors import StorageLocked
from wahub.core.models import InboxState
from wahub.core.storage import sqlite_connection
from wahub.core.storage.plans import Plan, run_plan, run_plan_on_sqlite
from wahub.core.storage.schema import inbox

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every wahub replica.
_MIGRATION_LOCK_ID = 0x77616875


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


_SQLITE_PRAGMAS = ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=10000")
# The inbox commit is fsynced before the webhook gets its 200 (FULL). Every
# other write derives from the inbox and is re-derived after a crash; in WAL
# mode it reaches the disk with the next inbox commit's fsync at the latest.
_INBOX_SYNC, _DERIVED_SYNC = "synchronous=FULL", "synchronous=NORMAL"


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _sqlite_connected(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event, not the driver, open transactions.
    dbapi_connection.isolation_level = None
    # SQLite's own lower() folds ASCII only: searching for "мария" must find "Мария", as on PostgreSQL.
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
    cursor = dbapi_connection.cursor()
    for pragma in (*_SQLITE_PRAGMAS, _DERIVED_SYNC):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # Reads need no transaction: every writer in the process queues on
    # ``Database.lock``, so nothing changes while they run.
    if not conn.info.get(READ_ONLY):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# hide_parameters: errors are logged and kept in inbox.error; their bound values
# would carry phone numbers and message text.
def create_engine(url: str) -> AsyncEngine:
    driver_url = engine_url(url)
    if driver_url.startswith("sqlite"):
        path = driver_url.removeprefix("sqlite+aiosqlite:///")
        engine = create_async_engine(
            driver_url,
            async_creator=functools.partial(sqlite_connection.connect, path),
            pool_size=1,
            max_overflow=0,
            pool_timeout=120,
            hide_parameters=True,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_connected)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(driver_url, pool_size=10, max_overflow=10, pool_pre_ping=True, hide_parameters=True)


def lock_sqlite_file(path: str) -> IO[bytes]:
    """Hold ``<path>.lock`` for the life of the process: a second daemon on the same
    file would re-run and re-send the first one's work in progress."""
    handle = open(f"{path}.lock", "wb")  # noqa: SIM115 - held open until Storage.close
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StorageLocked(
            f"another wahub process uses {path}: one daemon per SQLite file (use PostgreSQL for several)"
        ) from None
    return handle


class SqliteInboxWriter:
    """The inbox's own SQLite connection, used from one dedicated thread.

    A whole group commit is one statement: the batch travels as a single JSON
    array that SQLite unpacks itself (``json_each``). The thread then holds
    Python's GIL once per statement rather than once per row, so the event
    loop keeps serving requests while the commit runs.
    """

    COLUMNS = ("provider", "external_id", "kind", "contact_key", "payload", "received_at")

    def __init__(self, path: str, lock: asyncio.Lock) -> None:
        self._lock = lock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wahub-inbox-writer")
        self._path = path
        self._db: sqlite3.Connection | None = None
        fields = ", ".join(
            f"json_extract(value, '$[{i}]')" if column != "payload" else f"json(json_extract(value, '$[{i}]'))"
            for i, column in enumerate(self.COLUMNS)
        )
        # "WHERE true" tells SQLite's parser that ON CONFLICT belongs to the INSERT.
        self._sql = (
            f"INSERT INTO {inbox.name} ({', '.join(self.COLUMNS)}, state, attempts) "
            f"SELECT {fields}, '{InboxState.PENDING}', 0 FROM json_each(?) WHERE true "
            "ON CONFLICT (provider, external_id) DO NOTHING"
        )

    async def _run(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        for pragma in (*_SQLITE_PRAGMAS, _INBOX_SYNC):
            self._db.execute(f"PRAGMA {pragma}")

    async def insert(self, rows: Sequence[dict[str, Any]], received_at: float) -> int:
        batch = json.dumps([[*(row[c] for c in self.COLUMNS[:-1]), received_at] for row in rows])
        async with self._lock:
            return int(await self._run(self._insert, batch))

    def _insert(self, batch: str) -> int:
        assert self._db is not None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            count = self._db.execute(self._sql, (batch,)).rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return count

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
        self._executor.shutdown(wait=True)


#: The newest migration's revision (a test holds it to Alembic's head): a
#: database already at it is opened without loading Alembic (about 13 MB).
SCHEMA_HEAD = "0011"


def _upgrade(connection: Connection) -> tuple[list[tuple[str, str]], str | None]:
    """Apply pending migrations; return those applied ``(revision, description)``
    and the revision the schema is at."""
    if _revisions(connection) == [SCHEMA_HEAD]:
        return [], SCHEMA_HEAD
    # Imported here: only a new database, or one of an older version, needs them.
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from alembic.runtime.migration import MigrationContext

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    applied: list[tuple[str, str]] = config.attributes.get("applied", [])
    return applied, MigrationContext.configure(connection).get_current_revision()


def _revisions(connection: Connection) -> list[str]:
    """The revisions Alembic recorded the schema at (none for a new database)."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return []
    return list(connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


async def apply_migrations(db: Database) -> tuple[list[tuple[str, str]], str | None]:
    """Apply pending Alembic migrations in one transaction; replicas on
    PostgreSQL take turns. Returns those applied and the schema's revision."""
    async with db.begin() as conn:
        if conn.dialect.name != "sqlite":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        return await conn.run_sync(_upgrade)


#: Keys of a connection's ``info``: the transaction's subscriptions, and whether
#: it recorded deliveries (``wahub.core.storage.events`` reads and sets them).
SUBSCRIPTIONS, RECORDED = "wahub.subscriptions", "wahub.deliveries_recorded"
#: Key of a connection's ``info`` while ``Database.connect`` lends it out: its
#: statements only read, so on SQLite they run outside a transaction.
READ_ONLY = "wahub.read_only"


class Database:
    """Transactions on the pooled connection(s).

    On SQLite, ``lock`` is also taken by the inbox writer's own connection, so
    the process's writers queue here, in order, instead of sleeping in
    SQLite's busy handler.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.lock = asyncio.Lock()
        self._serialize = engine.dialect.name == "sqlite"
        #: The ``crm:`` entries' ``wahub.core.storage.events.Subscription`` items;
        #: every transaction carries them, so a change records its events.
        self.subscriptions: tuple[Any, ...] = ()
        #: Called after a commit that recorded deliveries (wakes the deliverers).
        self.on_deliveries: Callable[[], None] = lambda: None

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self._locked(), self.engine.begin() as conn:
            conn.info[SUBSCRIPTIONS] = self.subscriptions
            conn.info.pop(RECORDED, None)
            yield conn
            recorded = conn.info.pop(RECORDED, False)
        if recorded:
            self.on_deliveries()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection to read with (what it writes is rolled back, or on SQLite
        not held together by a transaction: write in ``begin``)."""
        async with self._locked(), self.engine.connect() as conn:
            # The pooled connection's dict, kept: once a cancelled statement
            # has broken the connection, reading ``conn.info`` raises instead.
            info = conn.info
            info[READ_ONLY] = True
            try:
                yield conn
            finally:
                info.pop(READ_ONLY, None)

    async def run(self, plan: Plan[T]) -> T:
        """Run ``plan`` (see ``wahub.core.storage.plans``) as one transaction: on
        SQLite in one call on the connection's thread, holding ``lock``."""
        if not self._serialize:
            async with self.begin() as conn:
                return await run_plan(conn, plan)
        async with self.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert isinstance(driver, sqlite_connection.OneHopConnection)
            return await driver.call(functools.partial(run_plan_on_sqlite, plan=plan))

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        if self._serialize:
            async with self.lock:
                yield
        else:
            yield


def insert_ignore(conn: AsyncConnection, table: sa.Table, conflict: list[str]) -> Any:
    """``INSERT ... ON CONFLICT (conflict) DO NOTHING`` in the connection's dialect."""
    return _insert_ignore(conn.dialect.name, table, tuple(conflict))


@functools.cache
def _insert_ignore(dialect: str, table: sa.Table, conflict: tuple[str, ...]) -> Any:
    # Built once: statements are immutable, and building one costs more than SQLite takes to run it.
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    return insert(table).on_conflict_do_nothing(index_elements=list(conflict))
