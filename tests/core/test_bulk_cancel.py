"""Cancelling a notification stops the messages a dispatcher holds, on SQLite
and PostgreSQL: the outbox fails them with ``cancelled`` instead of claiming,
deferring or rescheduling them, the dispatcher fails those at hand before their
send, and a message the provider took anyway counts as sent."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from wahub.core.storage.schema import messages
from wahub.core.storage.store import Storage
from wahub.testing import wait_until

from .test_bulk_sends import claim_turns, statuses
from .test_engine import Engine, engine_for
from .test_notifications_api import TEMPLATE, USERS, call, notify
from .test_pacing import template

CANCELLED = ("failed", "cancelled")


async def campaign_messages(storage: Storage, count: int) -> tuple[int, list[int]]:
    """A notification and ``count`` bulk messages of it, queued a minute ago."""
    now = time.time()
    addresses = [f"1555000{n}" for n in range(count)]
    campaign_id, _ = await storage.campaigns.create(
        provider="sandbox", template="t", audience={"to": addresses}, source="api", idempotency_key="n1", now=now
    )
    ids = []
    for address in addresses:
        message_id, _ = await storage.messages.enqueue(
            "sandbox", template(address), idempotency_key=f"n1:{address}", lane=1, now=now - 60
        )
        ids.append(message_id)
    async with storage.db.begin() as conn:
        await conn.execute(messages.update().where(messages.c.id.in_(ids)).values(campaign_id=campaign_id))
    return campaign_id, ids


async def test_held_messages_of_a_cancelled_notification_fail_instead_of_going_back(storage: Storage) -> None:
    campaign_id, _ = await campaign_messages(storage, 3)
    deferred, retried, handed_back = await storage.outbox.claim_outbox(10, 60, ["sandbox"])
    assert await storage.campaigns.cancel(campaign_id, now=time.time())
    # The cancel leaves the messages a dispatcher holds to the dispatcher.
    assert await storage.campaigns.message_counts(campaign_id) == {("queued", None): 3}

    await storage.outbox.defer([(deferred.id, time.time() + 10)])
    assert not await storage.outbox.reschedule(retried.id, retry_at=time.time() + 1, error_code="130429", reason="x")
    await storage.leases.hand_back_outbox([(handed_back.id, handed_back.attempts)])
    assert await storage.outbox.claim_outbox(10, 60, ["sandbox"]) == []

    assert await storage.campaigns.message_counts(campaign_id) == {CANCELLED: 3}
    assert await storage.outbox.cancelled_campaigns([campaign_id, campaign_id + 1]) == {campaign_id}


async def test_a_message_the_provider_took_while_its_notification_was_cancelled_counts_as_sent(
    storage: Storage,
) -> None:
    campaign_id, _ = await campaign_messages(storage, 1)
    [row] = await storage.outbox.claim_outbox(10, 0, ["sandbox"])  # its lease runs out during the send
    assert await storage.campaigns.cancel(campaign_id, now=time.time())
    assert await storage.campaigns.message_counts(campaign_id) == {CANCELLED: 1}

    await storage.outbox.mark_sent([(row.id, "sandbox", "sandbox.1")])

    assert await storage.campaigns.message_counts(campaign_id) == {("sent", None): 1}


@pytest.fixture
async def slow(database_url: str) -> AsyncIterator[Engine]:
    """A number sending one message every two seconds."""
    async for engine in engine_for(database_url, messages_per_second=0.5, pair_limit=None):
        await engine.daemon.hub.storage.policy.upsert_template("fake", TEMPLATE)
        yield engine


async def notification_messages(engine: Engine, notification_id: int, count: int) -> list[int]:
    async def written() -> list[int] | None:
        async with engine.daemon.hub.storage.db.connect() as conn:
            found = (
                await conn.scalars(
                    sa.select(messages.c.id).where(messages.c.campaign_id == notification_id).order_by(messages.c.id)
                )
            ).all()
        return list(found) if len(found) == count else None

    ids: list[int] = await wait_until(written)
    return ids


async def until_final(engine: Engine, ids: list[int]) -> list[str]:
    async def final() -> list[str] | None:
        found = await statuses(engine, ids)
        return found if "queued" not in found else None

    result: list[str] = await wait_until(final)
    return result


async def cancel(engine: Engine, notification_id: int) -> None:
    status, cancelled = await call(engine, "POST", f"/api/v1/notifications/{notification_id}/cancel")
    assert status == 200 and cancelled["state"] == "cancelled"


async def test_cancelling_stops_the_messages_waiting_for_a_pacing_slot(slow: Engine) -> None:
    status, created = await notify(slow, {"language": "en", "to": USERS[:3]})
    assert status == 202
    ids = await notification_messages(slow, created["id"], 3)

    async def first_sent() -> bool:
        return len(slow.server.calls) == 1

    await wait_until(first_sent)
    await cancel(slow, created["id"])
    await claim_turns(slow)  # the dispatcher reads the cancel at each claim

    await until_final(slow, ids)
    counts = await slow.daemon.hub.storage.campaigns.message_counts(created["id"])
    assert counts[CANCELLED] == 2 and sum(counts.values()) == 3
    assert len(slow.server.calls) == 1


async def test_a_send_refused_after_its_notification_was_cancelled_is_not_retried(slow: Engine) -> None:
    slow.server.latency = 1.0
    slow.server.fail_next(1, code=130429, title="Rate limit hit")
    status, created = await notify(slow, {"language": "en", "to": USERS[:1]})
    assert status == 202
    ids = await notification_messages(slow, created["id"], 1)

    async def in_flight() -> bool:
        return len(slow.server.calls) == 1

    await wait_until(in_flight)
    await cancel(slow, created["id"])

    assert await until_final(slow, ids) == ["failed"]
    assert await slow.daemon.hub.storage.campaigns.message_counts(created["id"]) == {CANCELLED: 1}
    await claim_turns(slow)
    assert [call.status for call in slow.server.calls] == [400]
