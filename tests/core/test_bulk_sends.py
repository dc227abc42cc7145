"""Bulk sends (lane 1) through a fake provider over real HTTP, on SQLite and
PostgreSQL: replies go ahead of them, they stay within the number's messaging
limit (those beyond it wait in the queue, unclaimed, and never hold back a
reply), slow down when the provider reports its throughput exceeded, and wait
out quiet hours like any business message."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from wahub.core.models import OutgoingMessage
from wahub.core.outbound.dispatcher import DISPATCHER_STATE, Dispatcher
from wahub.core.outbound.limits import DAY_SECONDS
from wahub.core.runtime.app import command_hub
from wahub.core.storage.leadership import dispatch_role
from wahub.testing import ManualClock, build_config, plugin_manager, wait_until
from wahub.testing import fake_provider as fake_plugin
from wahub.testing.fake_provider import FakeProviderServer

from .test_engine import USER, Engine, _approved, engine_for, template
from .test_engine_policy import QUIET_HOURS, due_becomes, quiet_hours_ahead

BULK_TEMPLATE = {"name": "spring_sale", "language": {"code": "en"}}


def bulk_user(n: int) -> str:
    return f"1555{n:07d}"


async def queue_bulk(engine: Engine, users: Iterable[str], *, tag: str = "a", now: float | None = None) -> list[int]:
    """Queue one bulk template to each user in one transaction, as a campaign does."""
    storage = engine.daemon.hub.storage
    ids = []
    async with storage.db.begin() as conn:
        for user in users:
            message = OutgoingMessage(to=user, type="template", content={"template": BULK_TEMPLATE})
            message_id, _ = await storage.messages.enqueue(
                "fake", message, idempotency_key=f"bulk:{tag}:{user}", lane=1, now=now, conn=conn
            )
            ids.append(message_id)
    engine.daemon.hub.outbox_ready.set()
    return ids


def dispatcher_of(engine: Engine) -> Dispatcher:
    dispatcher: Dispatcher = engine.daemon.hub.state[DISPATCHER_STATE]
    return dispatcher


async def metric(engine: Engine, line_prefix: str) -> float | None:
    async with engine.http.get(f"{engine.daemon.url}/metrics") as response:
        text = await response.text()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_prefix + " ")]
    return values[0] if values else None


def throttled(why: str) -> str:
    return f'wahub_bulk_throttled_total{{provider="fake",why="{why}"}}'


async def statuses(engine: Engine, ids: list[int]) -> list[str]:
    found = [await engine.daemon.hub.storage.messages.get(message_id) for message_id in ids]
    return [row["status"] if row is not None else "missing" for row in found]


async def until_sent(engine: Engine, ids: list[int], *, within: float = 30) -> None:
    async def sent() -> bool:
        return all(s in ("sent", "delivered") for s in await statuses(engine, ids))

    await wait_until(sent, within=within)


async def until_calls(engine: Engine, count: int) -> None:
    async def received() -> bool:
        return len(engine.server.calls) >= count

    await wait_until(received)


async def position_of(engine: Engine, user: str) -> int:
    """The 1-based position of the first call to ``user`` the fake received, once it came."""

    async def found() -> int | None:
        calls = [c.body["to"] for c in engine.server.calls]
        return calls.index(user) + 1 if user in calls else None

    position: int = await wait_until(found)
    return position


async def waiting(engine: Engine, ids: list[int], due: float) -> list[int]:
    """The messages of ``ids`` still queued as they were written: unleased and
    still due at ``due`` (never claimed and put back)."""
    found = []
    for message_id in ids:
        row = await engine.daemon.hub.storage.messages.get(message_id)
        if row is None or row["status"] != "queued" or row["lease_until"] is not None:
            continue
        if row["next_attempt_at"] == due and row["attempts"] == 0:
            found.append(message_id)
    return found


async def claim_turns(engine: Engine, count: int = 2) -> None:
    """Wake the dispatcher and wait until it has claimed ``count`` more times
    (the first may have started before)."""
    for _ in range(count):
        await claim_turn(engine)


async def claim_turn(engine: Engine) -> None:
    loop = dispatcher_of(engine).claims
    before = loop.turned_at

    async def turned() -> bool:
        return loop.turned_at > before

    engine.daemon.hub.outbox_ready.set()
    await wait_until(turned)


async def until_counted(engine: Engine, why: str, value: float) -> None:
    async def counted() -> bool:
        return await metric(engine, throttled(why)) == value

    await wait_until(counted)


@pytest.fixture
async def paced(database_url: str) -> AsyncIterator[Engine]:
    """A number sending 20 messages per second, without a pair limit."""
    async for engine in engine_for(database_url, pair_limit=None, messages_per_second=20):
        yield engine


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture
async def limited(database_url: str, clock: ManualClock) -> AsyncIterator[Engine]:
    """A number that may reach 50 users per 24 h, on a clock the test moves."""
    async for engine in engine_for(database_url, clock=clock, pair_limit=None, messaging_limit=50):
        yield engine


async def test_a_reply_goes_ahead_of_hundreds_of_queued_bulk_sends(paced: Engine) -> None:
    await paced.daemon.hub.storage.policy.upsert_template("fake", _approved("order_update", "UTILITY"))
    window = dispatcher_of(paced).pacers["fake"].bulk_window()
    await queue_bulk(paced, [bulk_user(n) for n in range(500)])
    await until_calls(paced, 40)

    bulk_started_before = len(paced.server.calls)
    status, _ = await paced.send(template("order_update"))
    assert status == 202
    position = await position_of(paced, USER)

    # Bulk sends that started after the reply was queued and before it: at most
    # the bulk rows the number keeps at hand, never the hundreds still queued.
    overtaking = position - 1 - bulk_started_before
    assert 0 <= overtaking <= window, (overtaking, window)
    assert position < 500 - window


async def test_bulk_sends_stay_within_the_messaging_limit(limited: Engine, clock: ManualClock) -> None:
    start = clock.time()
    users = [bulk_user(n) for n in range(60)]
    ids = await queue_bulk(limited, users, now=start)

    async def fifty_sent_ten_waiting() -> bool:
        sent = [s for s in await statuses(limited, ids) if s in ("sent", "delivered")]
        return len(sent) == 50 and len(await waiting(limited, ids, start)) == 10

    await wait_until(fifty_sent_ten_waiting, within=30)
    # While the limit is full, claims leave the ten alone: nothing is claimed and put back.
    await claim_turns(limited)
    assert len(await waiting(limited, ids, start)) == 10
    assert len(limited.server.calls) == 50
    assert await metric(limited, throttled("messaging_limit")) == 10
    assert await metric(limited, 'wahub_messaging_limit_headroom{provider="fake"}') == 0

    # Users reached in the last 24 h are no new users: they are not held.
    reached = sorted({c.body["to"] for c in limited.server.calls})[:3]
    await until_sent(limited, await queue_bulk(limited, reached, tag="again", now=start))
    assert len(limited.server.calls) == 53

    # Once the first users roll out of the 24 h, the held sends go.
    clock.set(start + DAY_SECONDS + 60)
    await until_sent(limited, ids)
    first_sends: dict[str, Any] = {}
    for call in limited.server.accepted():
        first_sends.setdefault(call.body["to"], call)
    assert sorted(first_sends) == users
    assert len(limited.server.calls) == 63


async def test_throughput_errors_slow_bulk_sends_down_then_they_recover(paced: Engine) -> None:
    pacer = dispatcher_of(paced).pacers["fake"]
    # Each answer takes long enough for the first sends to be in flight together.
    paced.server.latency = 0.5
    paced.server.fail_next(3, code=130429, title="Rate limit hit")
    await until_sent(paced, await queue_bulk(paced, [bulk_user(n) for n in range(20)]))

    assert await metric(paced, throttled("throughput")) == 3
    assert pacer.slowed is not None
    rate, since = pacer.slowed
    assert rate == 10.0  # halved once from 20/s: the three refused sends went out together
    assert pacer.bulk_interval(since) == 0.1
    assert pacer.bulk_rate(since + 9.9) == 10.0
    assert pacer.bulk_rate(since + 10) == 12.0  # +10% of the configured rate per quiet 10 s
    assert pacer.bulk_rate(since + 80) == 20.0  # never past messages_per_second
    # Conversation sends keep the configured spacing.
    assert pacer.interval == 1 / 20


async def test_a_pair_rate_error_holds_only_that_recipient(paced: Engine) -> None:
    pacer = dispatcher_of(paced).pacers["fake"]
    paced.server.fail_next(1, code=131056, title="Pair rate limit hit")
    await until_sent(paced, await queue_bulk(paced, [bulk_user(n) for n in range(10)]))

    assert await metric(paced, throttled("pair_rate")) == 1
    assert await metric(paced, throttled("throughput")) is None
    assert pacer.slowed is None
    refused = paced.server.calls[0].body["to"]
    assert [c.status for c in paced.server.calls if c.body["to"] == refused] == [400, 200]
    others = [c for c in paced.server.calls if c.body["to"] != refused]
    assert len(others) == 9 and all(c.status == 200 for c in others)


async def test_a_bulk_message_waits_out_quiet_hours_like_a_business_one(database_url: str) -> None:
    start, quiet = quiet_hours_ahead()
    clock = ManualClock(start + 3600)  # an hour into quiet hours
    end = start + QUIET_HOURS * 3600
    async for engine in engine_for(database_url, config={"policy": {"quiet_hours": quiet}}, clock=clock):
        [bulk] = await queue_bulk(engine, [bulk_user(1)], now=clock.time())
        await due_becomes(engine, bulk, end)
        assert (await statuses(engine, [bulk])) == ["queued"]
        assert engine.server.calls == []

        clock.set(end)
        await engine.status_becomes(bulk, "delivered")
        assert len(engine.server.calls) == 1


async def test_a_bulk_send_waiting_for_the_limit_never_holds_back_that_users_replies(
    database_url: str, clock: ManualClock
) -> None:
    start = clock.time()
    async for engine in engine_for(database_url, clock=clock, pair_limit=None, messaging_limit=1):
        await engine.daemon.hub.storage.policy.upsert_template("fake", _approved("order_update", "UTILITY"))
        await until_sent(engine, await queue_bulk(engine, [bulk_user(1)], now=start))
        [bulk] = await queue_bulk(engine, [USER], now=start)
        await claim_turns(engine)
        assert await waiting(engine, [bulk], start) == [bulk]

        status, body = await engine.send(template("order_update"))
        assert status == 202
        await engine.status_becomes(body["id"], "delivered")
        # The reply reached the user, so the bulk send needs no room in the limit any more.
        await until_sent(engine, [bulk])
        assert [c.body["template"]["name"] for c in engine.server.calls if c.body["to"] == USER] == [
            "order_update",
            BULK_TEMPLATE["name"],
        ]


async def test_when_users_roll_out_only_as_many_bulk_sends_are_claimed_as_there_is_room(
    database_url: str, clock: ManualClock
) -> None:
    start = clock.time()
    async for engine in engine_for(database_url, clock=clock, pair_limit=None, messaging_limit=2):
        await until_sent(engine, await queue_bulk(engine, [bulk_user(0)], now=start))
        clock.set(start + 10)
        await until_sent(engine, await queue_bulk(engine, [bulk_user(1)], tag="b", now=start + 10))
        later = await queue_bulk(engine, [bulk_user(n) for n in range(2, 7)], tag="c", now=start + 10)
        await until_counted(engine, "messaging_limit", 5)
        assert len(await waiting(engine, later, start + 10)) == 5

        clock.set(start + DAY_SECONDS + 1)  # the first user rolls out: room for one
        await until_calls(engine, 3)
        await claim_turns(engine)
        assert len(engine.server.calls) == 3
        assert len(await waiting(engine, later, start + 10)) == 4
        # Each waiting send is counted once, however many claims left it waiting.
        assert await metric(engine, throttled("messaging_limit")) == 5
        assert await metric(engine, 'wahub_messaging_limit_headroom{provider="fake"}') == 0


async def test_the_headroom_shows_as_soon_as_the_dispatcher_takes_a_number_over(database_url: str) -> None:
    server = await FakeProviderServer().start()
    pm = plugin_manager([fake_plugin])
    config = build_config({"providers": [server.provider_entry(messaging_limit=50)]}, database=database_url, pm=pm)
    try:
        async with command_hub(config, pm) as hub:
            await Dispatcher(hub).acquired(dispatch_role("fake"))  # no claim made yet
            headroom = hub.metrics.registry.get_sample_value("wahub_messaging_limit_headroom", {"provider": "fake"})
            assert headroom == 50
    finally:
        await server.close()
