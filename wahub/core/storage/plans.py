"""Transactions written once, run the fastest way each database allows.

A plan is a generator: it yields ``(statement, parameters)`` and is sent back
the rows of that statement; what it returns is its result. Its statements
are SQLAlchemy's, and whatever it decides between two statements is plain
Python, so one plan serves both databases:

- ``run_plan`` runs it on an async connection, one statement per round trip
  (PostgreSQL);
- ``run_plan_on_sqlite`` runs it straight on the ``sqlite3`` connection, in
  one call on that connection's thread (``Database.run``): no round trip
  between the event loop and the thread per statement, and none of
  SQLAlchemy's cost of executing one, which for the short statements of a
  claim is several times what SQLite takes to run them.

A plan starts its write transaction by yielding ``BEGIN`` (until then it only
reads); on SQLite that is ``BEGIN IMMEDIATE``, an async connection is in its
transaction already. Rows come back as named tuples on SQLite and as
SQLAlchemy rows otherwise: a plan reads them by column label, each value of
its column's type on both (a text statement's as the driver reads it).
Parameters go to SQLite as given: text, numbers, bytes, lists for an
expanding ``IN``; a value SQLAlchemy would convert first (JSON) is not.
"""

from __future__ import annotations

import collections
import functools
import re
import sqlite3
from collections.abc import Callable, Generator, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable

T = TypeVar("T")

#: A plan that returns ``T``; it is sent each statement's rows.
Plan = Generator[tuple[Executable, Mapping[str, Any]], list[Any], T]

#: Where a plan's write transaction starts.
BEGIN = sa.text("BEGIN IMMEDIATE")

# Named parameters: sqlite3 binds them from a dict, as the plans give them.
_SQLITE = sqlite.dialect(paramstyle="named")


async def run_plan(conn: AsyncConnection, plan: Plan[T]) -> T:
    """Run ``plan`` on ``conn``, which is in a transaction already."""
    try:
        statement, parameters = next(plan)
        while True:
            rows: list[Any] = []
            if statement is not BEGIN:
                result = await conn.execute(statement, parameters)
                rows = list(result.all()) if result.returns_rows else []
            statement, parameters = plan.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def run_plan_on_sqlite(connection: sqlite3.Connection, plan: Plan[T]) -> T:
    """Run ``plan`` on ``connection`` (in autocommit mode, on its own thread);
    commit the transaction it began, or roll it back if the plan failed."""
    try:
        try:
            statement, parameters = next(plan)
            while True:
                sql, bound = _sqlite_statement(statement, parameters)
                cursor = connection.execute(sql, bound)
                try:
                    rows = _rows(cursor, _result_processors(statement))
                finally:
                    cursor.close()
                statement, parameters = plan.send(rows)
        except StopIteration as done:
            result: T = done.value
        if connection.in_transaction:
            connection.execute("COMMIT")
        return result
    except BaseException:
        if connection.in_transaction:
            connection.rollback()
        raise


def _sqlite_statement(statement: Executable, parameters: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The SQLite text of ``statement`` and what it binds: its own values, then
    ``parameters``, each list of an expanding parameter (``IN :ids``) one value
    per placeholder."""
    sql, own = _compiled(statement)
    bound = {**own, **parameters}
    lists = [name for name in _expanding(sql) if name in parameters]
    for name in lists:
        bound.update({f"{name}__{n}": value for n, value in enumerate(bound.pop(name), 1)})
    if lists:
        sql = _expanded(sql, tuple((name, len(parameters[name])) for name in lists))
    return sql, bound


@functools.lru_cache(maxsize=512)
def _compiled(statement: Executable) -> tuple[str, Mapping[str, Any]]:
    """A statement's SQLite text and the values of the parameters it binds
    itself, kept per statement object: a plan's statements are built once."""
    compiled = statement.compile(dialect=_SQLITE)  # type: ignore[attr-defined]
    return str(compiled), dict(compiled.params)


#: How SQLAlchemy leaves an expanding parameter in a statement compiled without its values.
_EXPANDING = re.compile(r"__\[POSTCOMPILE_(\w+)\]")


@functools.lru_cache(maxsize=512)
def _expanding(sql: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_EXPANDING.findall(sql)))  # a parameter may be used twice


@functools.lru_cache(maxsize=2048)
def _expanded(sql: str, sizes: tuple[tuple[str, int], ...]) -> str:
    for name, size in sizes:
        # An empty list matches nothing, as SQLAlchemy renders it.
        placeholders = ", ".join(f":{name}__{n}" for n in range(1, size + 1)) or "SELECT 1 WHERE 1 != 1"
        sql = sql.replace(f"__[POSTCOMPILE_{name}]", placeholders)
    return sql


@functools.lru_cache(maxsize=512)
def _result_processors(statement: Executable) -> tuple[Callable[[Any], Any] | None, ...]:
    """How SQLAlchemy turns each column the statement returns into its type's
    value (a JSON column's text into its value, 0 and 1 into booleans);
    nothing for a text statement, whose columns have no types."""
    columns = getattr(statement, "exported_columns", ())
    return tuple(column.type.result_processor(_SQLITE, None) for column in columns)


def _rows(cursor: sqlite3.Cursor, processors: tuple[Callable[[Any], Any] | None, ...]) -> list[Any]:
    if cursor.description is None:
        return []
    row = _row_type(tuple(column[0] for column in cursor.description))
    found = cursor.fetchall()
    if len(processors) != len(cursor.description) or not any(processors):
        return [row._make(values) for values in found]
    return [
        row._make(
            value if process is None else process(value) for process, value in zip(processors, values, strict=True)
        )
        for values in found
    ]


@functools.lru_cache(maxsize=512)
def _row_type(names: tuple[str, ...]) -> Any:
    return collections.namedtuple("Row", names, rename=True)
