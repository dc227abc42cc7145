"""Inbox claims on a real SQLite file and a real PostgreSQL: fair between
contacts, in order within one, and unbroken by rows that cannot be read."""

from __future__ import annotations

import sqlite3
import time

import pytest
import sqlalchemy as sa

from tests.helpers import inbox_row
from wahub.core.storage.store import Storage

BUSY, OTHER = "sandbox:15550000001", "sandbox:15559999999"


async def backlog(storage: Storage, contact: str, count: int) -> None:
    for start in range(0, count, 1000):
        await storage.insert_inbox(
            [inbox_row(f"{contact}:{n}", contact) for n in range(start, min(start + 1000, count))]
        )


@pytest.mark.parametrize("limit", [1, 4])
async def test_one_contacts_backlog_never_holds_back_another(storage: Storage, limit: int) -> None:
    await backlog(storage, BUSY, 10_000)
    await storage.insert_inbox([inbox_row("hi", OTHER)])

    first = await storage.claim_inbox(limit, lease_seconds=60)
    second = await storage.claim_inbox(limit, lease_seconds=60)

    claimed = [(r.contact_key, r.payload == {}) for r in first + second]
    assert (OTHER, True) in claimed
    assert [r.contact_key for r in first + second].count(BUSY) == 1  # the busy contact: its oldest row only
    if limit > 1:
        assert {r.contact_key for r in first} == {BUSY, OTHER}


async def test_contacts_take_turns_and_each_keeps_its_order(storage: Storage) -> None:
    contacts = ["sandbox:a", "sandbox:b", "sandbox:c"]
    await storage.insert_inbox([inbox_row(f"{c}:{n}", c) for c in contacts[:1] for n in range(6)])
    await storage.insert_inbox([inbox_row(f"{c}:{n}", c) for c in contacts[1:] for n in range(2)])
    order = []
    while rows := await storage.claim_inbox(1, lease_seconds=60):
        order.append(rows[0])
        await storage.finish_inbox(rows[0])
    keys = [r.contact_key for r in order]
    # Round after round every contact with work gets one row, however long its backlog.
    assert keys[:6] == ["sandbox:a", "sandbox:b", "sandbox:c"] * 2
    assert keys[6:] == ["sandbox:a"] * 4
    for contact in contacts:
        ids = [r.id for r in order if r.contact_key == contact]
        assert ids == sorted(ids)


def status_row(external_id: str, contact: str) -> dict[str, object]:
    return {**inbox_row(external_id, contact), "kind": "status"}


@pytest.mark.parametrize("limit", [1, 4])
async def test_a_users_message_is_claimed_before_a_broadcasts_statuses(storage: Storage, limit: int) -> None:
    # A broadcast's delivery statuses, one contact each, then a user writes in.
    recipients = [f"sandbox:1555{n:07d}" for n in range(3000)]
    for start in range(0, len(recipients), 1000):
        await storage.insert_inbox([status_row(f"s.{c}", c) for c in recipients[start : start + 1000]])
    writer = "sandbox:1555zzzz"  # last in key order: a walk by key alone reaches it last
    await storage.insert_inbox([status_row("s.writer", writer), inbox_row("m.writer", writer)])

    first = await storage.claim_inbox(limit, lease_seconds=60)
    # The writer's status came first, so it runs first; their message is next, before any other status.
    [theirs] = [row for row in first if row.contact_key == writer]
    assert theirs.kind == "status" and len(first) == limit
    await storage.finish_inbox(theirs)
    [message] = [row for row in await storage.claim_inbox(1, lease_seconds=60)]
    assert (message.contact_key, message.kind) == (writer, "message")


async def test_users_writing_take_turns_however_many_messages_one_sends(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row(f"a{n}", "sandbox:a") for n in range(5)])
    await storage.insert_inbox([status_row(f"s{n}", f"sandbox:0{n}") for n in range(5)])
    await storage.insert_inbox([inbox_row("b0", "sandbox:b"), inbox_row("c0", "sandbox:c")])
    order = []
    while rows := await storage.claim_inbox(1, lease_seconds=60):
        order.append((rows[0].contact_key, rows[0].kind))
        await storage.finish_inbox(rows[0])
    # Each writer's turn comes round before the statuses; a's backlog waits its turns.
    assert [key for key, _ in order[:3]] == ["sandbox:a", "sandbox:b", "sandbox:c"]
    assert order[3:7] == [("sandbox:a", "message")] * 4
    assert sorted(order[7:]) == [(f"sandbox:0{n}", "status") for n in range(5)]


async def test_a_contact_waits_for_its_row_in_progress_or_waiting_to_retry(storage: Storage) -> None:
    await storage.insert_inbox(
        [inbox_row("a1", "sandbox:a"), inbox_row("a2", "sandbox:a"), inbox_row("b1", "sandbox:b")]
    )
    [a1, b1] = await storage.claim_inbox(4, lease_seconds=60)
    assert await storage.claim_inbox(4, lease_seconds=60) == []  # a2 waits for a1
    await storage.retry_inbox(a1, "boom", retry_at=time.time() + 3600)
    await storage.finish_inbox(b1)
    assert await storage.claim_inbox(4, lease_seconds=60) == []  # a1 waits for its retry; a2 behind it


def _write_raw(path: str, statement: str, *params: object) -> None:
    """Write to the SQLite file as any other program could, bypassing wahub."""
    db = sqlite3.connect(path)
    try:
        db.execute(statement, params)
        db.commit()
    finally:
        db.close()


# The bytes a lone surrogate becomes when text is encoded without checks: not UTF-8.
NOT_UTF8 = b"sandbox:\xed\xa0\x80"


async def test_a_row_whose_text_is_not_utf8_fails_alone_on_sqlite(sqlite_url: str) -> None:
    storage = await Storage.open(sqlite_url)
    try:
        await storage.insert_inbox([inbox_row("before", "sandbox:1")])
        path = sqlite_url.removeprefix("sqlite:///")
        _write_raw(
            path,
            "INSERT INTO inbox (provider, external_id, kind, contact_key, payload, state, attempts, received_at)"
            " VALUES ('sandbox', 'bad', 'message', CAST(? AS TEXT), CAST(? AS TEXT), 'pending', 0, ?)",
            NOT_UTF8,
            b'{"kind": "message", "sender": "\xed\xa0\x80"}',
            time.time(),
        )
        await storage.insert_inbox([inbox_row("after", "sandbox:2")])

        claimed = await storage.claim_inbox(10, lease_seconds=60)

        assert [r.damage for r in claimed] == [
            None,
            "contact_key is not valid UTF-8; payload is not valid UTF-8",
            None,
        ]
        bad = claimed[1]
        assert bad.contact_key == "sandbox:\ufffd\ufffd\ufffd"
        # A bad row in progress does not break the next claim either.
        await storage.insert_inbox([inbox_row("later", "sandbox:3")])
        assert [r.contact_key for r in await storage.claim_inbox(10, lease_seconds=60)] == ["sandbox:3"]
        await storage.retry_inbox(bad, f"Unprocessable: {bad.damage} (from {bad.contact_key})", retry_at=None)
        [failed] = await storage.failed_inbox()
        assert (failed.id, failed.contact_key, failed.attempts) == (bad.id, "sandbox:\ufffd\ufffd\ufffd", 1)
    finally:
        await storage.close()


async def test_an_error_with_a_lone_surrogate_is_stored_readably(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("a", "sandbox:a")])
    [claimed] = await storage.claim_inbox(1, lease_seconds=60)
    await storage.retry_inbox(claimed, "UnicodeEncodeError: '\ud800' and a NUL \x00", retry_at=None)
    [failed] = await storage.failed_inbox()
    assert failed.error == "UnicodeEncodeError: '\\ud800' and a NUL "


async def test_a_payload_that_is_not_an_object_is_damage_not_a_claim_failure(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("list", "sandbox:a"), inbox_row("fine", "sandbox:b")])
    async with storage.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE inbox SET payload = :p WHERE external_id = 'list'"), {"p": "[1, 2]"})
    claimed = await storage.claim_inbox(10, lease_seconds=60)
    assert [r.damage for r in claimed] == ["payload is a JSON list, not an object", None]


async def test_failed_rows_are_listed_and_put_back(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("a", "sandbox:a"), inbox_row("b", "sandbox:b"), inbox_row("c", "sandbox:c")])
    claimed = await storage.claim_inbox(10, lease_seconds=60)
    for each in claimed[:2]:
        await storage.retry_inbox(each, "TypeError: boom", retry_at=None)
    assert [f.id for f in await storage.failed_inbox()] == [claimed[0].id, claimed[1].id]
    assert await storage.inbox_failed_count() == 2

    # Only failed rows come back; an id in progress or unknown is left alone.
    assert await storage.retry_failed_inbox([claimed[0].id, claimed[2].id, 999_999]) == [claimed[0].id]
    assert await storage.retry_failed_inbox() == [claimed[1].id]
    assert await storage.failed_inbox() == []
    again = await storage.claim_inbox(10, lease_seconds=60)
    assert [(r.id, r.attempts) for r in again] == [(claimed[0].id, 1), (claimed[1].id, 1)]


async def test_an_event_of_a_new_user_waits_for_their_older_event_under_the_other_id(storage: Storage) -> None:
    def message(external_id: str, key: str, identities: dict[str, str]) -> dict[str, object]:
        payload = {"kind": "message", "identities": identities}
        return {**inbox_row(external_id, key), "provider": "main", "payload": payload}

    both = {"wa_id": "16505550142", "bsuid": "US.1349"}
    await storage.insert_inbox(
        [
            message("with-phone", "main:16505550142", both),
            message("other-user", "main:US.7777", {"bsuid": "US.7777"}),
            message("phone-hidden", "main:US.1349", {"bsuid": "US.1349"}),
        ]
    )
    if storage.is_sqlite:  # a row that is not even JSON must not break the search
        async with storage.engine.begin() as conn:
            await conn.execute(sa.text("UPDATE inbox SET payload = 'not json' WHERE external_id = 'other-user'"))
    with_phone, other, hidden = await storage.claim_inbox(10, lease_seconds=60)

    assert await storage.inbox_waits_for_sibling(hidden, {"bsuid": "US.1349"})
    assert not await storage.inbox_waits_for_sibling(with_phone, both)  # the older one runs
    assert not await storage.inbox_waits_for_sibling(other, {"bsuid": "US.7777"})
    await storage.finish_inbox(with_phone)
    assert not await storage.inbox_waits_for_sibling(hidden, {"bsuid": "US.1349"})

    await storage.defer_inbox(hidden, until=0)  # back in the queue; the attempt does not count
    [again] = await storage.claim_inbox(10, lease_seconds=60)
    assert (again.id, again.attempts) == (hidden.id, 1)


async def test_a_claim_with_nothing_to_take_does_not_wait_for_the_write_lock(sqlite_url: str) -> None:
    """The claims after each row's end and each send mostly find nothing: they
    read first, and leave the database's one write lock to the writers."""
    storage = await Storage.open(sqlite_url)
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock meanwhile
        assert await storage.claim_inbox(4, lease_seconds=60, statuses=50) == []
        assert await storage.outbox.claim_outbox(4, 60, ["sandbox"]) == []
        other.execute("ROLLBACK")
        await storage.insert_inbox([inbox_row("a", OTHER)])
        [row] = await storage.claim_inbox(4, lease_seconds=60)
        assert row.contact_key == OTHER
    finally:
        other.close()
        await storage.close()
