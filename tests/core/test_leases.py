"""Leases of claimed rows, on a real SQLite file and a real PostgreSQL: renewed
while the work goes on, handed back when it was cut short, given up when
another claim has the row."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from tests.helpers import inbox_row
from wahub.core.models import OutgoingMessage
from wahub.core.storage.inbox import InboxRow
from wahub.core.storage.leases import database_unreachable
from wahub.core.storage.schema import inbox, messages
from wahub.core.storage.store import Storage
from wahub.core.work.leases import LEASE_SECONDS, Claim, LeaseKeeper


async def lease_of(storage: Storage, table: sa.Table, row_id: int) -> float | None:
    async with storage.engine.connect() as conn:
        lease: float | None = (
            await conn.execute(sa.select(table.c.lease_until).where(table.c.id == row_id))
        ).scalar_one()
        return lease


async def end_lease(storage: Storage, table: sa.Table, row_id: int) -> None:
    async with storage.engine.begin() as conn:
        await conn.execute(table.update().where(table.c.id == row_id).values(lease_until=0))


async def two_claims_kept(storage: Storage) -> tuple[LeaseKeeper, list[Claim], InboxRow, InboxRow]:
    """A keeper of the inbox claims of two contacts' rows, and the claims it gives up."""
    lost: list[Claim] = []
    keeper = LeaseKeeper("inbox", storage.leases.renew_inbox, storage.leases.hand_back_inbox, lost.append)
    await storage.insert_inbox([inbox_row("a", "A"), inbox_row("b", "B")])
    since = time.monotonic()
    a, b = await storage.claim_inbox(10, LEASE_SECONDS)
    keeper.claimed([(a.id, a.attempts), (b.id, b.attempts)], since)
    return keeper, lost, a, b


async def test_a_renewed_inbox_lease_keeps_the_row_from_other_claims(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("a", "A")])
    [row] = await storage.claim_inbox(10, lease_seconds=-1)  # would be over already
    assert await storage.leases.renew_inbox([(row.id, row.attempts)], 60) == {(row.id, row.attempts)}
    assert await storage.claim_inbox(10, lease_seconds=60) == []


async def test_a_claim_taken_over_is_not_renewed(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("a", "A")])
    [first] = await storage.claim_inbox(10, lease_seconds=-1)
    [second] = await storage.claim_inbox(10, lease_seconds=60)  # the first lease ran out
    assert await storage.leases.renew_inbox([(first.id, first.attempts)], 60) == set()
    assert await storage.leases.renew_inbox([(second.id, second.attempts)], 60) == {(second.id, second.attempts)}


async def test_a_claim_whose_row_is_finished_still_holds_until_its_work_ends(storage: Storage) -> None:
    """The hooks after a row's commit (an automatic assignment after a hand-off)
    are not cut off by a heartbeat that falls between the commit and their end."""
    keeper, lost, a, b = await two_claims_kept(storage)
    await storage.finish_inbox(a)  # committed; its work has not told the keeper yet
    await end_lease(storage, inbox, b.id)
    [b_again] = await storage.claim_inbox(10, LEASE_SECONDS)  # another process's claim
    await storage.finish_inbox(b_again)  # finished by the other claim: not this one's

    await keeper.beat()
    assert lost == [(b.id, b.attempts)]
    assert keeper.holds((a.id, a.attempts))


async def test_an_inbox_row_handed_back_runs_again_at_once(storage: Storage) -> None:
    await storage.insert_inbox([inbox_row("a", "A")])
    [row] = await storage.claim_inbox(10, lease_seconds=60)
    await storage.leases.hand_back_inbox([(row.id, row.attempts)])
    [again] = await storage.claim_inbox(10, lease_seconds=60)
    assert (again.id, again.attempts) == (row.id, row.attempts + 1)


async def test_outbox_leases_are_renewed_until_sent_and_handed_back_when_cut_short(storage: Storage) -> None:
    message_id, _ = await storage.messages.enqueue("sandbox", OutgoingMessage.text("1555", "x"), idempotency_key="k")
    [row] = await storage.outbox.claim_outbox(10, -1, ["sandbox"])
    claim = (row.id, row.attempts)
    assert await storage.leases.renew_outbox([claim], 60) == {claim}
    assert await storage.outbox.claim_outbox(10, 60, ["sandbox"]) == []

    await storage.leases.hand_back_outbox([claim])
    [again] = await storage.outbox.claim_outbox(10, 60, ["sandbox"])
    assert again.id == message_id

    await storage.outbox.mark_sent([(again.id, "sandbox", "wamid.1")])
    assert await storage.leases.renew_outbox([(again.id, again.attempts)], 60) == set()
    assert await lease_of(storage, messages, message_id) is None


async def test_the_keeper_renews_work_in_progress_and_gives_up_work_taken_over(storage: Storage) -> None:
    keeper, lost, a, b = await two_claims_kept(storage)
    await end_lease(storage, inbox, b.id)
    [b_again] = await storage.claim_inbox(10, LEASE_SECONDS)  # another process's claim
    assert b_again.id == b.id

    renewing = time.time()
    await keeper.beat()
    assert lost == [(b.id, b.attempts)]
    assert keeper.holds((a.id, a.attempts)) and not keeper.holds((b.id, b.attempts))
    lease = await lease_of(storage, inbox, a.id)
    assert lease is not None and lease >= renewing + LEASE_SECONDS


async def test_the_keeper_gives_up_lapsed_work_unless_pinned(storage: Storage) -> None:
    lost: list[Claim] = []
    keeper = LeaseKeeper("outbox", storage.leases.renew_outbox, storage.leases.hand_back_outbox, lost.append)
    for key in ("sending", "waiting"):
        await storage.messages.enqueue("sandbox", OutgoingMessage.text("1555", key), idempotency_key=key)
    sending, waiting = await storage.outbox.claim_outbox(10, LEASE_SECONDS, ["sandbox"])
    # Their renewals failed for longer than the lease: neither lease surely holds any more.
    keeper.claimed([(sending.id, sending.attempts), (waiting.id, waiting.attempts)], time.monotonic() - 60)
    keeper.pin((sending.id, sending.attempts))  # the provider accepted it: the claim must stay

    await keeper.beat()
    assert lost == [(waiting.id, waiting.attempts)]
    assert keeper.holds((sending.id, sending.attempts))


async def test_the_keeper_hands_back_work_cut_short(storage: Storage) -> None:
    keeper = LeaseKeeper("inbox", storage.leases.renew_inbox, storage.leases.hand_back_inbox, lambda claim: None)
    await storage.insert_inbox([inbox_row("a", "A")])
    since = time.monotonic()
    [row] = await storage.claim_inbox(10, LEASE_SECONDS)
    keeper.claimed([(row.id, row.attempts)], since)
    keeper.hand_back((row.id, row.attempts))
    assert await storage.claim_inbox(10, LEASE_SECONDS) == []  # not before the heartbeat
    await keeper.beat()
    [again] = await storage.claim_inbox(10, LEASE_SECONDS)
    assert again.id == row.id


async def test_a_refused_query_is_not_taken_for_an_unreachable_database(storage: Storage) -> None:
    with pytest.raises(sa.exc.DBAPIError) as refused:
        async with storage.engine.connect() as conn:
            await conn.execute(sa.text("SELECT * FROM no_such_table"))
    assert not database_unreachable(refused.value)
    # A refused connection is the database's only when a storage call raised it.
    assert database_unreachable(ConnectionRefusedError(111, "Connect call failed"), from_storage=True)
    assert not database_unreachable(ConnectionRefusedError(111, "Connect call failed"))
