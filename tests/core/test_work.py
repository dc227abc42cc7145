"""The shared pieces of long-running work: stopping within a shutdown stage's
grace, the claim loop of the inbox and the outbox, and the backoff."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

import pytest

from tests.helpers import inbox_row
from wahub.core.models import InboxState, MessageStatus
from wahub.core.storage.inbox import InboxRow
from wahub.core.storage.leases import database_unreachable
from wahub.core.storage.schema import inbox as inbox_table
from wahub.core.storage.store import Storage
from wahub.core.work.backoff import backoff
from wahub.core.work.leases import LEASE_SECONDS, LeaseKeeper
from wahub.core.work.lifecycle import SHUTDOWN_GRACE, within_grace
from wahub.core.work.loop import ClaimLoop
from wahub.testing import wait_until

# -- within_grace --------------------------------------------------------------


def ended() -> asyncio.Task[bool]:
    """A task that is done as soon as the loop runs it."""
    done = asyncio.Event()
    done.set()
    return asyncio.create_task(done.wait())


def never() -> asyncio.Task[bool]:
    """A task that ends only when cancelled."""
    return asyncio.create_task(asyncio.Event().wait())


async def test_work_ending_within_its_grace_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    task = ended()
    assert await within_grace("background", [task], on_timeout_message="late")
    assert task.done() and not task.cancelled()
    assert await within_grace("providers", ended(), on_timeout_message="late")
    assert await within_grace("background", [], on_timeout_message="late")  # nothing to wait for
    assert "late" not in caplog.text


async def test_tasks_outliving_their_stage_are_cancelled_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    quick, slow = ended(), never()
    with caplog.at_level(logging.WARNING):
        in_time = await within_grace("plugins", [quick, slow], on_timeout_message="still running after %(grace).1f s")
    assert not in_time
    assert quick.done() and not quick.cancelled()
    assert slow.cancelled()
    # The stage's own grace was waited for.
    assert f"still running after {SHUTDOWN_GRACE['plugins']:.1f} s" in caplog.text


async def test_an_awaitable_outliving_its_grace_is_cut_off_with_the_tasks_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = never()
    with caplog.at_level(logging.WARNING):
        in_time = await within_grace(
            "sends", asyncio.Event().wait(), grace=0.05, on_timeout_message="sends cut off", cancel=[worker]
        )
    assert not in_time
    assert worker.cancelled()
    [record] = [record for record in caplog.records if record.getMessage() == "sends cut off"]
    assert record.levelno == logging.WARNING


async def test_no_grace_left_cuts_off_at_once(caplog: pytest.LogCaptureFixture) -> None:
    slow = never()
    with caplog.at_level(logging.WARNING):
        assert not await within_grace("inbox", [slow], grace=-1.0, on_timeout_message="cut after %(grace).1f s")
    assert slow.cancelled()
    assert "cut after 0.0 s" in caplog.text  # a grace already spent waits for nothing


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(attempt, base=1.0, cap=300.0) for attempt in range(1, 10)] == [
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        64.0,
        128.0,
        256.0,
        300.0,
    ]
    assert backoff(2, base=0.25, cap=1.0) == 1.0
    assert backoff(1, base=0.25, cap=1.0) == 0.5
    assert backoff(10_000, base=0.5, cap=600.0) == 600.0  # no overflow however many attempts


def test_backoff_jitter_takes_off_at_most_its_share() -> None:
    delays = [backoff(4, base=0.5, cap=600.0, jitter=0.5) for _ in range(500)]
    assert all(4.0 <= delay <= 8.0 for delay in delays)
    assert max(delays) - min(delays) > 1.0  # it does vary
    capped = [backoff(40, base=0.5, cap=600.0, jitter=0.5) for _ in range(200)]
    assert all(300.0 <= delay <= 600.0 for delay in capped)


# -- ClaimLoop ---------------------------------------------------------------------


class Inbox:
    """A claim loop over a real inbox, whose database can be made unreachable."""

    def __init__(self, storage: Storage, *, poll: float) -> None:
        self.storage = storage
        self.wake = asyncio.Event()
        self.started: list[InboxRow] = []
        self.claims = 0
        self.reported: list[Exception] = []
        #: The error each claim meets instead of the database, if any.
        self.outage: Exception | None = None
        self._claimed = asyncio.Event()
        self.leases = LeaseKeeper(
            "inbox", storage.leases.renew_inbox, storage.leases.hand_back_inbox, lambda claim: None
        )
        self.loop = ClaimLoop(
            "inbox events",
            capacity=lambda: (10, poll),
            claim=self.claim,
            start=self.started.extend,
            leases=self.leases,
            wake=self.wake,
            poll=poll,
            unreachable=functools.partial(database_unreachable, from_storage=True),
            report=self.reported.append,
            logger=logging.getLogger("tests.claims"),
        )

    async def claim(self, count: int) -> list[InboxRow]:
        self.claims += 1
        try:
            if self.outage is not None:
                raise self.outage
            return await self.storage.claim_inbox(count, LEASE_SECONDS)
        finally:
            self._claimed.set()

    async def parked(self) -> None:
        """Wait for the claim under way to end. The loop has nothing to await
        between a claim that got fewer rows than it asked for and its wait for
        the event, so it is waiting by the time this returns."""
        await asyncio.wait_for(self._claimed.wait(), 5.0)
        self._claimed.clear()


async def until(check: Callable[[], bool]) -> None:
    async def met() -> bool:
        return check()

    await wait_until(met, within=5.0, every=0.01)


async def test_the_loop_wakes_on_its_event_not_its_poll(storage: Storage) -> None:
    inbox = Inbox(storage, poll=30.0)
    task = inbox.loop.start_task("test-claims")
    await inbox.parked()  # the first claim found nothing
    await storage.insert_inbox([inbox_row("a", "A"), inbox_row("b", "B")])
    assert (inbox.claims, inbox.started) == (1, [])  # without the event, the next claim waits for the poll
    inbox.wake.set()
    await until(lambda: len(inbox.started) == 2)
    assert {row.attempts for row in inbox.started} == {1}
    assert all(inbox.leases.holds((row.id, row.attempts)) for row in inbox.started)
    assert not inbox.loop.failing
    inbox.loop.stop()
    await asyncio.wait_for(task, 1.0)


async def test_the_loop_backs_off_while_the_database_is_unreachable(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox(storage, poll=30.0)
    await storage.insert_inbox([inbox_row("a", "A")])
    inbox.outage = ConnectionRefusedError(111, "Connect call failed")
    with caplog.at_level(logging.INFO, logger="tests.claims"):
        task = inbox.loop.start_task("test-claims")
        await inbox.parked()
        assert inbox.loop.database_away and inbox.loop.failing
        assert inbox.claims == 1  # no retry before the poll interval (or an event)
        inbox.wake.set()
        await inbox.parked()
        assert inbox.claims == 2 and inbox.loop.database_away
        assert len(inbox.reported) == 1  # reported once for the whole outage
        unreachable = [r for r in caplog.records if "the database is unreachable" in r.getMessage()]
        assert len(unreachable) == 1  # logged once too
        inbox.outage = None
        inbox.wake.set()
        await until(lambda: len(inbox.started) == 1)
    assert not inbox.loop.database_away and not inbox.loop.failing
    assert "claiming inbox events again" in caplog.text
    inbox.loop.stop()
    await asyncio.wait_for(task, 1.0)


async def test_a_refused_claim_is_logged_each_time_with_its_traceback(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox(storage, poll=0.05)  # tried again after each poll interval, with no event
    inbox.outage = ValueError("a bad query")
    with caplog.at_level(logging.ERROR, logger="tests.claims"):
        task = inbox.loop.start_task("test-claims")
        await until(lambda: inbox.claims >= 3)
    refused = [r for r in caplog.records if r.getMessage() == "cannot claim inbox events; trying again"]
    assert len(refused) >= 2 and all(r.exc_info is not None for r in refused)
    assert len(inbox.reported) >= 2  # not an outage: each failure is reported
    assert inbox.loop.failing and not inbox.loop.database_away
    inbox.loop.stop()
    await asyncio.wait_for(task, 1.0)


async def test_the_loop_stops_at_shutdown_without_claiming_again(storage: Storage) -> None:
    inbox = Inbox(storage, poll=30.0)
    task = inbox.loop.start_task("test-claims")
    await inbox.parked()
    inbox.loop.stop()  # wakes the loop, which then ends
    await asyncio.wait_for(task, 1.0)
    await storage.insert_inbox([inbox_row("a", "A")])
    inbox.wake.set()
    assert inbox.claims == 1 and inbox.started == []


async def test_nothing_to_claim_for_makes_no_claim_and_waits(storage: Storage) -> None:
    asked: list[int] = []
    wake = asyncio.Event()
    answered = asyncio.Event()

    async def claim(count: int) -> list[InboxRow] | None:
        asked.append(count)
        answered.set()
        return None  # e.g. no provider to dispatch for

    loop: ClaimLoop[InboxRow] = ClaimLoop(
        "queued messages",
        capacity=lambda: (64, 30.0),
        claim=claim,
        start=lambda rows: None,
        leases=LeaseKeeper("outbox", storage.leases.renew_outbox, storage.leases.hand_back_outbox, lambda c: None),
        wake=wake,
        poll=30.0,
        unreachable=lambda exc: False,
        report=lambda exc: None,
        logger=logging.getLogger("tests.claims"),
    )
    task = loop.start_task("test-claims")
    await asyncio.wait_for(answered.wait(), 5.0)
    answered.clear()
    assert asked == [64]  # asked once; it then waits for the event
    wake.set()
    await asyncio.wait_for(answered.wait(), 5.0)
    assert asked == [64, 64]
    loop.stop()
    await asyncio.wait_for(task, 1.0)


# -- states ------------------------------------------------------------------------


async def test_states_are_stored_as_their_plain_strings(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("a", "A")])
    [row] = await storage.claim_inbox(10, LEASE_SECONDS)
    await storage.finish_inbox(row)
    async with storage.engine.connect() as conn:
        state = (await conn.execute(inbox_table.select().with_only_columns(inbox_table.c.state))).scalar_one()
    assert type(state) is str and state == InboxState.DONE and InboxState.DONE.value == "done"
    assert [str(status) for status in MessageStatus] == ["received", "queued", "sent", "delivered", "read", "failed"]
