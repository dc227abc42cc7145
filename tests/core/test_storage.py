"""Storage on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from tests.helpers import inbox_row
from wahub.core.errors import LeaseLost, StorageLocked
from wahub.core.models import InboundMessage, OutgoingMessage, StatusEvent
from wahub.core.storage.engine import MIGRATIONS_DIR, SCHEMA_HEAD
from wahub.core.storage.messages import Refusal
from wahub.core.storage.schema import contacts, conversations, messages, metadata, settings
from wahub.core.storage.store import Storage


def inbound(external_id: str, sender: str = "15551234567", text: str = "hi") -> InboundMessage:
    return InboundMessage(
        provider="sandbox",
        external_id=external_id,
        sender=sender,
        type="text",
        content={"text": {"body": text}},
        timestamp=time.time(),
        sender_name="Ann",
    )


async def test_migrations_create_exactly_the_declared_schema(storage: Storage) -> None:
    def diff(conn: sa.Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with storage.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    await storage.migrate()  # a second start-up applies nothing and fails nothing


def test_the_schema_head_the_daemon_knows_is_the_newest_migration() -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


async def test_a_database_at_the_head_opens_without_loading_alembic(database_url: str) -> None:
    """Alembic and what it loads (about 13 MB) stay out of a daemon whose database
    is up to date; asyncpg out of one on SQLite."""
    opened = (
        "import asyncio, sys\n"
        "from wahub.core.storage.store import Storage\n"
        "async def main():\n"
        f"    await (await Storage.open({database_url!r})).close()\n"
        "asyncio.run(main())\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'alembic', 'mako', 'asyncpg'}))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", opened, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == ("[]" if database_url.startswith("sqlite") else "['asyncpg']")


def upgrade_to(conn: sa.Connection, revision: str) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


async def test_conversations_keep_their_messages_through_the_owner_upgrade(empty_database_url: str) -> None:
    store = await Storage.open(empty_database_url, migrate=False)
    try:
        async with store.db.begin() as conn:
            await conn.run_sync(upgrade_to, "0005")
            times = {"created_at": 1.0, "updated_at": 1.0}
            await conn.execute(contacts.insert().values(id=7, provider="sandbox", address="1555", **times))
            await conn.execute(
                conversations.insert().values(id=3, contact_id=7, provider="sandbox", owner="bot", **times)
            )
            for message_id, direction in ((10, "in"), (11, "out"), (12, "in")):
                await conn.execute(
                    messages.insert().values(
                        id=message_id,
                        provider="sandbox",
                        direction=direction,
                        contact_id=7,
                        conversation_id=3,
                        address="1555",
                        type="text",
                        body={},
                        status="received",
                        **times,
                    )
                )
        await store.migrate()
        async with store.db.connect() as conn:
            linked = (await conn.execute(sa.select(messages.c.conversation_id))).scalars().all()
            upgraded = (await conn.execute(sa.select(conversations))).one()
        # What was received before the upgrade counts as answered: no old message starts a new turn.
        assert linked == [3, 3, 3]
        assert (upgraded.answered_through, upgraded.owner_version, upgraded.owner) == (12, 0, "bot")
    finally:
        await store.close()


async def test_messages_queued_before_origins_were_kept_get_theirs(empty_database_url: str) -> None:
    store = await Storage.open(empty_database_url, migrate=False)
    try:
        async with store.db.begin() as conn:
            await conn.run_sync(upgrade_to, "0003")
            common = {"provider": "sandbox", "address": "1555", "type": "text", "body": {}, "created_at": 1.0}
            for direction, status, key, pmid in (
                ("out", "queued", "reply:sandbox:m1:0", None),
                ("out", "queued", "api:42", None),
                ("in", "received", None, "m1"),
            ):
                await conn.execute(
                    messages.insert().values(
                        **common,
                        direction=direction,
                        status=status,
                        idempotency_key=key,
                        provider_message_id=pmid,
                        updated_at=1.0,
                    )
                )
        await store.migrate()
        async with store.db.connect() as conn:
            rows = (await conn.execute(sa.select(messages.c.origin).order_by(messages.c.id))).scalars().all()
        assert rows == ["reply", "business", None]
    finally:
        await store.close()


async def test_a_transaction_after_reads_still_keeps_all_or_nothing(storage: Storage) -> None:
    """Reads run outside a transaction on SQLite; the writes that follow them still
    commit together or not at all, and a read's rows and counts arrive whole."""
    count = sa.select(sa.func.count()).select_from(settings)
    async with storage.db.connect() as conn:
        assert (await conn.execute(count)).scalar() == 0
    with pytest.raises(RuntimeError):
        async with storage.db.begin() as conn:
            await conn.execute(settings.insert(), [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
            raise RuntimeError("the second step fails")
    async with storage.db.begin() as conn:
        await conn.execute(settings.insert(), [{"key": f"k{n}", "value": str(n)} for n in range(150)])
        changed = await conn.execute(settings.update().where(settings.c.key.like("k1%")).values(value="x"))
        assert changed.rowcount == 61  # k1, k10..k19, k100..k149
    async with storage.db.connect() as conn:
        rows = (await conn.execute(sa.select(settings.c.key, settings.c.value).order_by(settings.c.key))).all()
    assert len(rows) == 150 and ("k1", "x") in rows and ("k2", "2") in rows


async def test_a_read_cancelled_mid_statement_ends_cancelled_and_writes_stay_whole(storage: Storage) -> None:
    """A shutdown cancels a claim's read as it runs: the cancellation goes
    through (it is not turned into a database error the claim loop would
    retry), and the pooled connection's next transaction is a real one."""
    slow = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT count(*) FROM n"
    started = asyncio.Event()

    async def read() -> None:
        async with storage.db.connect() as conn:
            started.set()
            await conn.execute(sa.text(slow))

    task = asyncio.create_task(read())
    await started.wait()
    await asyncio.sleep(0.05)  # into the statement (on either database)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(RuntimeError):
        async with storage.db.begin() as conn:
            await conn.execute(settings.insert(), [{"key": "a", "value": "1"}])
            raise RuntimeError("the second step fails")
    async with storage.db.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(settings))).scalar() == 0


async def test_inbox_skips_redeliveries(storage: Storage) -> None:
    assert await storage.insert_inbox([inbox_row("a"), inbox_row("b")]) == 2
    assert await storage.insert_inbox([inbox_row("b"), inbox_row("c"), inbox_row("c")]) == 1
    assert (await storage.inbox_depth())[0] == 3


async def test_claims_run_one_row_per_contact_in_order(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("a1", "A"), inbox_row("b1", "B"), inbox_row("a2", "A")])
    first = await storage.claim_inbox(10, lease_seconds=60)
    assert sorted(row.contact_key for row in first) == ["A", "B"]
    assert await storage.claim_inbox(10, lease_seconds=60) == []  # A's next row waits for a1
    a1 = next(row for row in first if row.contact_key == "A")
    await storage.finish_inbox(a1)
    second = await storage.claim_inbox(10, lease_seconds=60)
    assert [row.contact_key for row in second] == ["A"]
    assert second[0].id > a1.id


async def test_expired_lease_and_released_claims_run_again(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("a")])
    [claimed] = await storage.claim_inbox(10, lease_seconds=-1)  # lease already over
    [again] = await storage.claim_inbox(10, lease_seconds=60)
    assert again.id == claimed.id and again.attempts == 2
    assert await storage.release_inbox_claims() == 1
    assert len(await storage.claim_inbox(10, lease_seconds=60)) == 1


async def test_failed_row_retries_later_then_gives_up(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("a", "A"), inbox_row("a2", "A")])
    [row] = await storage.claim_inbox(10, lease_seconds=60)
    await storage.retry_inbox(row, "boom", retry_at=time.time() + 3600)
    assert await storage.claim_inbox(10, lease_seconds=60) == []  # not yet, and a2 still waits behind it
    async with storage.engine.begin() as conn:  # let the hour pass
        await conn.execute(sa.text("UPDATE inbox SET lease_until = 0 WHERE state = 'pending'"))
    [again] = await storage.claim_inbox(10, lease_seconds=60)
    assert (again.id, again.attempts) == (row.id, 2)
    await storage.retry_inbox(row, "stale", retry_at=None)  # an outdated claim changes nothing
    assert await storage.claim_inbox(10, lease_seconds=60) == []
    await storage.retry_inbox(again, "boom", retry_at=None)  # give up: a2 may run now
    [next_row] = await storage.claim_inbox(10, lease_seconds=60)
    assert next_row.id != row.id


async def test_replies_are_queued_once_per_inbound_message(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("m1")])
    [row] = await storage.claim_inbox(1, lease_seconds=60)
    record = await storage.messages.record_inbound(inbound("m1"))
    assert await storage.messages.record_inbound(inbound("m1")) == record
    reply = OutgoingMessage.text("15551234567", "Hello")
    args = {"contact_id": record.contact_id, "conversation_id": record.conversation_id}
    assert (await storage.finish_with_replies(row, inbound("m1"), [reply], **args)).created == 1
    with pytest.raises(LeaseLost):  # done already: a second finish is refused, nothing is queued twice
        await storage.finish_with_replies(row, inbound("m1"), [reply], **args)
    queued = await storage.outbox.claim_outbox(10, 60, ["sandbox"])
    assert [q.message for q in queued] == [reply]
    assert queued[0].last_inbound_at is not None  # the service window travels with the claim


async def test_a_refused_reply_is_stored_once_with_its_rows_completion(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("m1")])
    [stale] = await storage.claim_inbox(1, lease_seconds=0)  # its worker stalls past the lease
    [row] = await storage.claim_inbox(1, lease_seconds=60)
    record = await storage.messages.record_inbound(inbound("m1"))
    args = {"contact_id": record.contact_id, "conversation_id": record.conversation_id}
    reply = OutgoingMessage.text("15551234567", "Hello")
    refused = Refusal(OutgoingMessage.text("15551234567", "x" * 5000), "invalid_message", "text.body is too long")

    assert (await storage.finish_with_replies(row, inbound("m1"), [refused, reply], **args)).created == 1
    with pytest.raises(LeaseLost):  # the stale run stores nothing: not its refusal either
        await storage.finish_with_replies(stale, inbound("m1"), [refused, reply], **args)

    out = [m for m in await storage.messages.history("sandbox", "15551234567") if m["direction"] == "out"]
    assert [(m["status"], m["error_code"], m["error_reason"]) for m in out] == [
        ("failed", "invalid_message", "text.body is too long"),
        ("queued", None, None),
    ]
    queued = await storage.outbox.claim_outbox(10, 60, ["sandbox"])
    assert [q.message for q in queued] == [reply]  # the refused one is never dispatched
    assert queued[0].origin == "reply"


async def test_statuses_only_move_forward(storage: Storage) -> None:
    message_id, _ = await storage.messages.enqueue("sandbox", OutgoingMessage.text("1555", "x"), idempotency_key="k")
    [row] = await storage.outbox.claim_outbox(10, 60, ["sandbox"])
    # 'delivered' arrives before the provider's answer to the send:
    early = StatusEvent(provider="sandbox", external_id="e1", message_id="p1", status="delivered", timestamp=1.0)
    assert await storage.messages.apply_status(early) is None
    await storage.outbox.mark_sent([(row.id, "sandbox", "p1")])
    assert (await storage.messages.get(message_id) or {})["status"] == "delivered"
    read = StatusEvent(provider="sandbox", external_id="e2", message_id="p1", status="read", timestamp=2.0)
    assert (await storage.messages.apply_status(read)).status == "read"  # type: ignore[union-attr]
    late = StatusEvent(provider="sandbox", external_id="e3", message_id="p1", status="delivered", timestamp=1.5)
    assert await storage.messages.apply_status(late) is None
    stored = await storage.messages.get(message_id)
    assert stored is not None and stored["status"] == "read"
    history = await storage.messages.status_history("sandbox", "p1")
    # The late duplicate is not kept twice; the sent that 'delivered' implies is shown, marked.
    assert [(h["status"], h["timestamp"], h["implied"]) for h in history] == [
        ("sent", 1.0, True),
        ("delivered", 1.0, False),
        ("read", 2.0, False),
    ]


async def test_an_early_failed_status_keeps_its_code(storage: Storage) -> None:
    message_id, _ = await storage.messages.enqueue("sandbox", OutgoingMessage.text("1555", "x"), idempotency_key="k")
    [row] = await storage.outbox.claim_outbox(10, 60, ["sandbox"])
    failed = StatusEvent(
        provider="sandbox",
        external_id="f",
        message_id="p2",
        status="failed",
        timestamp=1.0,
        error_code="131026",
        error_title="Message undeliverable",
    )
    await storage.messages.apply_status(failed)
    assert await storage.outbox.mark_sent([(row.id, "sandbox", "p2")]) == {row.id: "131026"}
    stored = await storage.messages.get(message_id)
    assert stored is not None
    assert (stored["status"], stored["error_code"], stored["error_reason"]) == (
        "failed",
        "131026",
        "Message undeliverable",
    )


async def test_idempotency_key_returns_the_first_message(storage: Storage) -> None:
    first = await storage.messages.enqueue("sandbox", OutgoingMessage.text("1", "a"), idempotency_key="same")
    second = await storage.messages.enqueue("sandbox", OutgoingMessage.text("1", "b"), idempotency_key="same")
    assert first == (first[0], True) and second == (first[0], False)


async def test_quarantine_keeps_the_raw_body(storage: Storage) -> None:
    await storage.quarantine("sandbox", "not JSON", {"Content-Type": "text/plain"}, b"\xffgarbage")
    async with storage.engine.connect() as conn:
        body = (await conn.execute(sa.text("SELECT body FROM quarantine"))).scalar_one()
    assert bytes(body) == b"\xffgarbage"


@pytest.mark.postgres
async def test_two_processes_claiming_keep_each_contact_in_order(postgres_url: str) -> None:
    """Two daemons on one database (two engines) claim and finish concurrently."""
    storage = await Storage.open(postgres_url)
    other = await Storage.open(postgres_url)
    contacts = [f"C{i}" for i in range(5)]
    await storage.insert_inbox([inbox_row(f"e{n}", contacts[n % 5]) for n in range(100)])
    running: set[str] = set()
    order: dict[str, list[int]] = {contact: [] for contact in contacts}

    async def worker(store: Storage) -> None:
        while True:
            rows = await store.claim_inbox(3, lease_seconds=60)
            if not rows:
                if (await store.inbox_depth())[0] == 0:
                    return
                await asyncio.sleep(0.001)
                continue
            for row in rows:
                assert row.contact_key not in running, f"two rows of {row.contact_key} at once"
                running.add(row.contact_key)
                order[row.contact_key].append(row.id)
            await asyncio.sleep(0)  # let the other process claim meanwhile
            for row in rows:
                running.discard(row.contact_key)
                await store.finish_inbox(row)

    try:
        await asyncio.gather(worker(storage), worker(other), worker(storage), worker(other))
    finally:
        await other.close()
        await storage.close()
    for ids in order.values():
        assert ids == sorted(ids) and len(ids) == 20


async def test_a_sqlite_file_serves_one_daemon(sqlite_url: str) -> None:
    first = await Storage.open(sqlite_url)
    try:
        with pytest.raises(StorageLocked, match=r"another wahub process uses .*wahub\.db"):
            await Storage.open(sqlite_url)
    finally:
        await first.close()
    second = await Storage.open(sqlite_url)  # free again once the first is closed
    await second.close()


async def test_migrations_applied_are_logged_then_an_up_to_date_schema(
    empty_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wahub.core.storage.store")
    first = await Storage.open(empty_database_url)
    await first.close()
    applied = [r.getMessage() for r in caplog.records if r.name == "wahub.core.storage.store"]
    assert applied[:3] == [
        "database: applied migration 0001 (initial schema)",
        "database: applied migration 0002 (policy: consent ledger, templates, contact time zones)",
        "database: applied migration 0003 (media: stored inbound files and the provider ids of uploaded ones; "
        "template quality)",
    ]
    head = applied[-1].split()[3]  # the newest revision, whatever migrations come later
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "wahub.core.storage.store")

    caplog.clear()
    second = await Storage.open(empty_database_url)
    await second.close()
    assert [r.getMessage() for r in caplog.records if r.name == "wahub.core.storage.store"] == [
        f"database schema is up to date at revision {head}"
    ]
