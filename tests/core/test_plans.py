"""Plans (``wahub.core.storage.plans``) on a real SQLite file and a real
PostgreSQL: one transaction, rows read by label, all or nothing."""

from __future__ import annotations

import sqlite3
import time

import pytest
import sqlalchemy as sa

from tests.helpers import inbox_row
from wahub.core.storage.plans import BEGIN, Plan
from wahub.core.storage.schema import inbox
from wahub.core.storage.store import Storage

_PENDING = sa.select(inbox.c.id.label("row_id"), inbox.c.external_id).where(inbox.c.state == "pending")
_DONE = inbox.update().where(inbox.c.id == sa.bindparam("row_id")).values(state="done", processed_at=sa.bindparam("at"))


def finish_all(fail_after: int | None = None) -> Plan[list[str]]:
    """Mark every pending row done, reading before the transaction begins; raise
    after ``fail_after`` rows when given."""
    rows = yield _PENDING, {}
    yield BEGIN, {}
    for done, row in enumerate(rows):
        if done == fail_after:
            raise RuntimeError("the plan failed half-way")
        yield _DONE, {"row_id": row.row_id, "at": time.time()}
    return [row.external_id for row in rows]


async def states(storage: Storage) -> list[str]:
    async with storage.db.connect() as conn:
        return list((await conn.execute(sa.select(inbox.c.state).order_by(inbox.c.id))).scalars())


async def test_a_plan_runs_as_one_transaction_and_reads_rows_by_label(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("a"), inbox_row("b")])
    assert await storage.db.run(finish_all()) == ["a", "b"]
    assert await states(storage) == ["done", "done"]


async def test_a_plan_that_fails_half_way_leaves_nothing_behind(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("a"), inbox_row("b")])
    with pytest.raises(RuntimeError, match="half-way"):
        await storage.db.run(finish_all(fail_after=1))
    assert await states(storage) == ["pending", "pending"]
    # The connection is usable, out of any transaction, for what comes next.
    assert await storage.db.run(finish_all()) == ["a", "b"]


async def test_a_statement_the_database_refuses_rolls_the_plan_back(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("a")])

    def refused() -> Plan[None]:
        [row] = yield _PENDING, {}
        yield BEGIN, {}
        yield _DONE, {"row_id": row.row_id, "at": time.time()}
        yield sa.text("SELECT * FROM no_such_table"), {}

    with pytest.raises((sa.exc.DBAPIError, sqlite3.OperationalError), match="no_such_table"):
        await storage.db.run(refused())
    assert await states(storage) == ["pending"]


async def test_a_list_parameter_binds_each_of_its_values(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row(name) for name in "abcd"])
    names = sa.bindparam("names", expanding=True)  # used twice: both places take the list
    named = sa.select(inbox.c.external_id).where(inbox.c.external_id.in_(names), inbox.c.external_id.in_(names))

    def read(names: list[str]) -> Plan[list[str]]:
        rows = yield named.order_by(inbox.c.id), {"names": names}
        return [row.external_id for row in rows]

    assert await storage.db.run(read(["b", "d", "z"])) == ["b", "d"]
    assert await storage.db.run(read(["c"])) == ["c"]
    assert await storage.db.run(read([])) == []


async def test_values_come_back_of_their_columns_types(storage: Storage) -> None:
    await storage.insert_inbox([{**inbox_row("a"), "payload": {"text": "hi", "n": 1}}])
    waiting = sa.exists().where(inbox.c.state == "pending").label("waiting")
    typed = sa.select(inbox.c.payload, waiting)

    def read() -> Plan[tuple[object, object]]:
        [row] = yield typed, {}
        return row.payload, row.waiting

    payload, waiting = await storage.db.run(read())
    assert payload == {"text": "hi", "n": 1}
    assert waiting is True
