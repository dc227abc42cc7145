"""The SQLite connection SQLAlchemy's async engine runs on: one thread hop per statement.

aiosqlite runs each call on the connection's own thread, and SQLAlchemy's
adapter makes four calls per statement: open a cursor, execute, fetch the
rows, close the cursor. Each call is a round trip between the event loop and
that thread, and the round trips, not SQLite, were most of the cost of a
statement. Here a statement's cursor is opened, executed, read to the end and
closed in one call on the thread, and what SQLAlchemy reads afterwards (the
rows, ``description``, ``rowcount``, ``lastrowid``) is kept on the cursor it
holds. Only the connection's thread runs anything on the sqlite3 connection;
the event loop reads no more than whether a transaction is open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiosqlite

T = TypeVar("T")

#: What one statement left: description, rowcount, lastrowid and its rows.
_Outcome = tuple[Any, int, int | None, list[Any]]


def _run(connection: sqlite3.Connection, sql: str, parameters: Any, many: bool) -> _Outcome:
    """Run one statement on the connection's thread and read it to the end."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        elif parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class StatementCursor:
    """The cursor SQLAlchemy's aiosqlite adapter drives, holding the outcome of
    its last statement (read whole: wahub streams no results)."""

    arraysize = 1

    def __init__(self, connection: OneHopConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> StatementCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None

    async def execute(self, sql: str, parameters: Any = None) -> StatementCursor:
        await self._take(sql, parameters, many=False)
        return self

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> StatementCursor:
        await self._take(sql, parameters, many=True)
        return self

    async def _take(self, sql: str, parameters: Any, *, many: bool) -> None:
        connection = self._connection
        outcome: _Outcome = await connection._execute(_run, connection._conn, sql, parameters, many)  # type: ignore[no-untyped-call]
        self.description, self.rowcount, self.lastrowid, self._rows = outcome

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []


class OneHopConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors run each statement in one call on
    its thread, and that ends only a transaction that is open: after reads
    outside of one (``Database.connect``) SQLAlchemy's rollback needs no call."""

    def cursor(self) -> StatementCursor:  # type: ignore[override]
        return StatementCursor(self)

    async def call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """``function(connection)`` on the connection's thread, in one call."""
        return await self._execute(function, self._conn)  # type: ignore[no-any-return, no-untyped-call]

    async def commit(self) -> None:
        if self._conn.in_transaction:
            await super().commit()

    async def rollback(self) -> None:
        if self._conn.in_transaction:
            await super().rollback()


async def connect(path: str) -> OneHopConnection:
    """Open ``path`` on its own (daemon) thread, as SQLAlchemy's ``async_creator``."""
    connection = OneHopConnection(lambda: sqlite3.connect(path), iter_chunk_size=64)
    # As SQLAlchemy does for the connections it opens: an unclosed one must not keep the process alive.
    connection._thread.daemon = True
    await connection  # starts the thread and opens the file there
    return connection
