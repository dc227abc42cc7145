"""The pieces of bulk pacing on their own: the outbox claims conversation
messages before bulk ones and no more bulk ones than asked, the users a number
reached in 24 h are read from the stored messages, and the pacer's bulk rate
falls on throughput errors and climbs back."""

from __future__ import annotations

import asyncio
import time

from wahub.core.models import InboundMessage, OutgoingMessage
from wahub.core.outbound.pacing import FLOOR_RATE, Pacer
from wahub.core.storage.store import Storage


def template(to: str) -> OutgoingMessage:
    return OutgoingMessage(to=to, type="template", content={"template": {"name": "t", "language": {"code": "en"}}})


async def test_conversation_messages_are_claimed_before_older_bulk_ones(storage: Storage) -> None:
    now = time.time()
    for n in range(5):
        await storage.messages.enqueue(
            "sandbox", template(f"1555000{n}"), idempotency_key=f"b{n}", lane=1, now=now - 60
        )
    await storage.messages.enqueue("sandbox", OutgoingMessage.text("15559999", "reply"), idempotency_key="r", now=now)

    first = await storage.outbox.claim_outbox(3, 60, ["sandbox"], bulk={"sandbox": 1})
    assert [(row.lane, row.message.to) for row in first] == [(0, "15559999"), (1, "15550000")]

    rest = await storage.outbox.claim_outbox(10, 60, ["sandbox"])
    assert [(row.lane, row.message.to) for row in rest] == [(1, f"1555000{n}") for n in range(1, 5)]


async def test_users_reached_outside_their_window_are_read_back(storage: Storage) -> None:
    now = time.time()
    record = await storage.messages.record_inbound(
        InboundMessage("sandbox", "in-1", "15550001", "text", {"text": {"body": "hi"}}, now - 60)
    )
    sends = [
        ("15550001", "in the window", now - 30, record.conversation_id),
        ("15550002", "reached an hour ago", now - 3600, None),
        ("15550003", "reached two days ago", now - 2 * 86400, None),
    ]
    for to, key, at, conversation_id in sends:
        await storage.messages.enqueue(
            "sandbox", template(to), idempotency_key=key, now=at, conversation_id=conversation_id
        )
    rows = await storage.outbox.claim_outbox(10, 60, ["sandbox"])
    await storage.outbox.mark_sent([(row.id, "sandbox", f"p{row.id}") for row in rows])

    assert await storage.outbox.reached_users("sandbox", now - 86400) == {"15550002": now - 3600}


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refuse_one_at_a_time(pacer: Pacer, clock: SteppedClock, count: int) -> list[float | None]:
    """``count`` throughput refusals, each of a send that went out after the last refusal."""
    rates = []
    for _ in range(count):
        clock.now += 0.1
        started = clock.now
        clock.now += 0.1
        rates.append(pacer.throttled(started))
    return rates


async def test_the_bulk_rate_halves_to_a_floor_and_recovers() -> None:
    clock = SteppedClock()
    pacer = Pacer(8.0, clock=clock)
    assert refuse_one_at_a_time(pacer, clock, 5) == [4.0, 2.0, 1.0, FLOOR_RATE, FLOOR_RATE]
    assert pacer.bulk_window() == 2
    clock.now += 30  # three quiet steps of 10 s, 0.8/s each
    assert pacer.bulk_rate() == 1.0 + 3 * 0.8
    clock.now += 3600
    assert pacer.bulk_rate() == 8.0


async def test_refusals_of_sends_in_flight_together_halve_the_rate_once() -> None:
    clock = SteppedClock()
    pacer = Pacer(80.0, clock=clock)
    started = [clock.now + n * 0.0125 for n in range(10)]  # ten sends out at 80/s, all refused
    clock.now += 0.5
    assert [pacer.throttled(at) for at in started] == [40.0] * 10
    assert pacer.bulk_rate() == 40.0

    # A send that went out at the halved rate and is refused halves it again.
    later = clock.now + 0.1
    clock.now += 0.2
    assert pacer.throttled(later) == 20.0
    # The recovery counts from the last refusal, halving or not.
    clock.now += 9.9
    assert pacer.throttled(later) == 20.0
    clock.now += 9.9
    assert pacer.bulk_rate() == 20.0
    clock.now += 0.2
    assert pacer.bulk_rate() == 28.0


async def test_a_conversation_send_takes_the_slot_ahead_of_waiting_bulk_sends() -> None:
    pacer = Pacer(1000.0)
    order: list[str] = []

    async def bulk(n: int) -> None:
        await pacer.bulk_slot()
        order.append(f"bulk {n}")

    async def reply() -> None:
        await asyncio.sleep(pacer.reserve())
        order.append("reply")

    bulks = [asyncio.create_task(bulk(n)) for n in range(5)]
    await asyncio.sleep(0)  # the first bulk send takes its slot, the others wait for theirs
    await asyncio.gather(reply(), *bulks)
    assert order == ["bulk 0", "reply", *(f"bulk {n}" for n in range(1, 5))]
