"""Delivery statuses in batches, on a real SQLite file and a real PostgreSQL:
a campaign's statuses are claimed and applied many to a transaction, each with
the outcome it would have alone, and a row that fails in a batch fails alone."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from tests.core.test_activity import USER, feed, inbound
from tests.helpers import inbox_row
from wahub import hookimpl
from wahub.core.models import OutgoingMessage, StatusEvent
from wahub.core.plugins import build_plugin_manager
from wahub.core.storage.messages import StatusChange
from wahub.core.storage.store import Storage
from wahub.testing import (
    RunningDaemon,
    build_config,
    running_daemon,
    sandbox_status,
    signed_sandbox_webhook,
    wait_until,
)


async def sent(storage: Storage, key: str, provider_message_id: str) -> int:
    """A reply the provider accepted under ``provider_message_id``; its id."""
    conversation_id = (await storage.messages.record_inbound(inbound(f"in.{key}"))).conversation_id
    message_id, _ = await storage.messages.enqueue(
        "sandbox", OutgoingMessage.text(USER, key), idempotency_key=key, conversation_id=conversation_id
    )
    await storage.outbox.mark_sent([(message_id, "sandbox", provider_message_id)])
    return message_id


def status(external_id: str, provider_message_id: str, name: str, **fields: Any) -> StatusEvent:
    return StatusEvent("sandbox", external_id, provider_message_id, name, 1.0, **fields)


async def test_a_batch_moves_each_message_as_its_statuses_would_one_by_one(storage: Storage) -> None:
    first = await sent(storage, "k1", "p1")
    second = await sent(storage, "k2", "p2")
    cursor = await storage.activity.last_id()

    changes = await storage.messages.apply_statuses(
        [
            status("s1", "p1", "delivered"),
            status("s2", "p1", "read"),  # the same message again, later in the batch
            status("s3", "p1", "delivered"),  # behind read
            status("s4", "p2", "failed", error_code="131026", error_title="Message undeliverable"),
            status("s5", "unknown", "read"),
        ]
    )

    assert changes == [
        StatusChange(first, "delivered"),
        StatusChange(first, "read"),
        None,
        StatusChange(second, "failed"),
        None,
    ]
    one, two = await storage.messages.get(first), await storage.messages.get(second)
    assert one is not None and one["status"] == "read" and one["error_code"] is None
    assert two is not None and (two["status"], two["error_code"], two["error_reason"]) == (
        "failed",
        "131026",
        "Message undeliverable",
    )
    # The behind 'delivered' is the same status again: kept once. ('sent' is implied by the rest.)
    assert [h["status"] for h in await storage.messages.status_history("sandbox", "p1")] == [
        "sent",
        "delivered",
        "read",
    ]
    unknown = await storage.messages.status_history("sandbox", "unknown")  # kept for when it is known
    assert [h["status"] for h in unknown] == ["sent", "read"]
    assert [(kind, ref) for _conversation, kind, ref in await feed(storage, cursor)] == [
        ("status", first),
        ("status", first),
        ("status", second),
    ]


def status_row(external_id: str, contact: str) -> dict[str, object]:
    return {**inbox_row(external_id, contact), "kind": "status"}


async def test_a_claim_takes_statuses_as_one_batch_and_the_messages_first(storage: Storage) -> None:
    await storage.insert_inbox([status_row(f"s{n}", f"sandbox:1555000000{n}") for n in range(5)])
    await storage.insert_inbox([inbox_row("m", "sandbox:15559999999")])

    # One slot: the message takes it, as it comes first.
    [message] = await storage.claim_inbox(1, 60, statuses=3)
    assert message.kind == "message"
    # One slot again: three statuses share it.
    batch = await storage.claim_inbox(1, 60, statuses=3)
    assert [row.kind for row in batch] == ["status"] * 3
    # Without statuses, a status takes a slot like any row.
    assert len(await storage.claim_inbox(1, 60)) == 1
    assert len(await storage.claim_inbox(4, 60)) == 1  # the last one
    assert await storage.claim_inbox(4, 60, statuses=3) == []


async def test_a_message_still_gets_a_slot_a_batch_did_not_take(storage: Storage) -> None:
    await storage.insert_inbox([status_row(f"s{n}", f"sandbox:1555000000{n}") for n in range(4)])
    await storage.insert_inbox([inbox_row("m", "sandbox:15559999999")])
    claimed = await storage.claim_inbox(2, 60, statuses=10)
    assert sorted(row.kind for row in claimed) == ["message"] + ["status"] * 4


class StatusObserver:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def status_update(self, hub: Any, status: StatusEvent) -> None:
        self.seen.append(status.external_id)


async def poison(daemon: RunningDaemon, provider_message_id: str) -> None:
    """Make the database refuse the statuses of one message, as a broken disk page might."""
    async with daemon.hub.storage.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.execute(
                sa.text(
                    "CREATE TRIGGER poison BEFORE INSERT ON status_events"
                    f" WHEN NEW.provider_message_id = '{provider_message_id}'"
                    " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
                )
            )
            return
        await conn.execute(
            sa.text(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.provider_message_id = '{provider_message_id}' THEN RAISE EXCEPTION 'poisoned'; END IF;"
                " RETURN NEW; END $$"
            )
        )
        await conn.execute(
            sa.text("CREATE TRIGGER poison BEFORE INSERT ON status_events FOR EACH ROW EXECUTE FUNCTION poison()")
        )


async def inbox_states(daemon: RunningDaemon) -> dict[str, str]:
    async with daemon.hub.storage.engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT external_id, state FROM inbox"))
        return {row.external_id: row.state for row in rows}


async def test_a_status_the_database_refuses_fails_alone_and_the_batch_is_applied(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    observer = StatusObserver()
    pm = build_plugin_manager(load_entry_points=False)
    pm.register(observer)
    async with running_daemon(build_config({}, database=database_url), pm=pm) as daemon:
        await poison(daemon, "wamid.poison")
        events = [sandbox_status(f"wamid.{n}", "delivered", recipient=f"1555000{n:04d}") for n in range(30)]
        events.insert(12, sandbox_status("wamid.poison", "delivered", recipient="15559999999"))
        body, headers = signed_sandbox_webhook(events)
        with caplog.at_level(logging.INFO, logger="wahub.core.inbound.worker"):
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as answer,
            ):
                assert answer.status == 200

            async def the_others_done() -> bool:
                states = await inbox_states(daemon)
                return sum(state == "done" for state in states.values()) == 30

            await wait_until(the_others_done, within=20)
        states = await inbox_states(daemon)
        assert states["wamid.poison:delivered"] != "done"  # retried later, alone
        assert sorted(observer.seen) == sorted(f"wamid.{n}:delivered" for n in range(30))
        assert any("a batch of 31 statuses failed" in record.getMessage() for record in caplog.records)
