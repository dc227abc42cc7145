"""The deliveries engine with a backend written in the test: each contact's
events reach a backend in order, failures are retried on the schedule (a
controllable clock) and never before a Retry-After, a permanent refusal
lets the next event go, a 410 disables the entry until it is enabled, and a
backend that raises or hangs delays no reply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, ClassVar

import pluggy
import pytest

import wahub
from wahub.core.crm import CRMBackend
from wahub.core.errors import ConfigError, DeliveryFailed
from wahub.core.models import IntegrationEvent
from wahub.core.outbound.deliveries import RETRY_DELAYS, retry_delay
from wahub.testing import (
    ManualClock,
    RunningDaemon,
    build_config,
    plugin_manager,
    running_daemon,
    sandbox_message,
    wait_until,
)

ROUTER = {"rules": [{"match": {"keyword": "human"}, "handoff": "asked"}], "default_reply": "Hello!"}


class Recorder(CRMBackend):
    """Keeps what it was given; fails while ``down`` (with ``failure``)."""

    PLATFORM = "recorder"
    seen: ClassVar[list[IntegrationEvent]] = []
    down: ClassVar[bool] = False
    failure: ClassVar[DeliveryFailed] = DeliveryFailed("down", status=503)

    async def deliver(self, event: IntegrationEvent) -> None:
        if Recorder.down:
            raise Recorder.failure
        Recorder.seen.append(event)


class RecorderPlugin:
    @wahub.hookimpl
    def register_crm_backends(self) -> Iterable[type[CRMBackend]]:
        return [Recorder]


def _pm() -> pluggy.PluginManager:
    return plugin_manager([RecorderPlugin()])


def _config(database_url: str, **entry: Any) -> dict[str, Any]:
    raw = {"router": ROUTER, "crm": [{"platform": "recorder", "name": "rec", **entry}]}
    return build_config(raw, database=database_url, pm=_pm())


async def test_a_message_and_its_reply_reach_the_backend_in_order(database_url: str) -> None:
    Recorder.seen, Recorder.down = [], False
    async with running_daemon(_config(database_url), pm=_pm()) as daemon:
        await daemon.post_sandbox([sandbox_message("hi", message_id="wamid.1")])
        await wait_until(lambda: _types(["message.received", "message.sent"]))
        first = Recorder.seen[0]
        assert first.data["contact"]["phone"] == "+15551234567"
        assert first.data["message"]["text"] == "hi"
        assert first.id.startswith("evt_")


async def _types(wanted: list[str]) -> bool:
    await asyncio.sleep(0)
    return [event.type for event in Recorder.seen][: len(wanted)] == wanted


async def _state(daemon: RunningDaemon) -> list[tuple[str, str, int]]:
    rows, _ = await daemon.hub.storage.deliveries.listing(endpoint="rec")
    return [(row["type"], row["state"], row["attempts"]) for row in reversed(rows)]


async def test_a_failed_delivery_waits_out_the_schedule_then_arrives_once(database_url: str) -> None:
    Recorder.seen, Recorder.down = [], True
    Recorder.failure = DeliveryFailed("down", status=503)
    clock = ManualClock(time.time())
    config = _config(database_url, events=["message.received"])
    async with running_daemon(config, pm=_pm(), clock=clock) as daemon:
        await daemon.post_sandbox([sandbox_message("one", message_id="wamid.1")])
        await daemon.post_sandbox([sandbox_message("two", message_id="wamid.2")])
        await wait_until(lambda: _is(daemon, [("message.received", "pending", 1), ("message.received", "pending", 0)]))
        Recorder.down = False
        clock.advance(3)  # the first retry is due 5 s (give or take 10 %) after the failure
        assert not await _due(daemon)
        clock.advance(3)
        await wait_until(lambda: _is(daemon, [("message.received", "delivered", 2)] * 2, attempts_of_last=1))
        assert [event.data["message"]["text"] for event in Recorder.seen] == ["one", "two"]


async def _is(daemon: RunningDaemon, wanted: list[tuple[str, str, int]], attempts_of_last: int | None = None) -> bool:
    state = await _state(daemon)
    if attempts_of_last is not None:
        wanted = [*wanted[:-1], (wanted[-1][0], wanted[-1][1], attempts_of_last)]
    return state == wanted


async def _due(daemon: RunningDaemon) -> bool:
    """Whether a delivery is due now, by the daemon's clock (a claim here takes it, failing the test)."""
    hub = daemon.hub
    now = hub.clock.time()
    return bool(await hub.storage.deliveries.claim("rec", limit=1, now=now, lease_until=now + 60))


async def test_retry_after_is_honoured_and_a_permanent_refusal_lets_the_next_event_go(database_url: str) -> None:
    Recorder.seen, Recorder.down = [], True
    Recorder.failure = DeliveryFailed("slow down", status=429, retry_after=120)
    clock = ManualClock(time.time())
    async with running_daemon(_config(database_url, events=["message.received"]), pm=_pm(), clock=clock) as daemon:
        await daemon.post_sandbox([sandbox_message("one", message_id="wamid.1")])
        await wait_until(lambda: _is(daemon, [("message.received", "pending", 1)]))
        Recorder.failure = DeliveryFailed("refused", status=400, permanent=True)
        clock.advance(60)
        assert not await _due(daemon)
        clock.advance(61)
        await wait_until(lambda: _is(daemon, [("message.received", "failed", 2)]))
        Recorder.down = False
        await daemon.post_sandbox([sandbox_message("two", message_id="wamid.2")])
        await wait_until(lambda: _is(daemon, [("message.received", "failed", 2), ("message.received", "delivered", 1)]))


async def test_gone_disables_the_entry_until_it_is_enabled(database_url: str) -> None:
    Recorder.seen, Recorder.down = [], True
    Recorder.failure = DeliveryFailed("410 Gone", status=410, gone=True)
    async with running_daemon(_config(database_url, events=["message.received"]), pm=_pm()) as daemon:
        await daemon.post_sandbox([sandbox_message("one", message_id="wamid.1")])
        storage = daemon.hub.storage
        await wait_until(lambda: storage.deliveries.disabled("rec"))
        Recorder.down = False
        await daemon.post_sandbox([sandbox_message("two", message_id="wamid.2")])
        await wait_until(lambda: _is(daemon, [("message.received", "pending", 1), ("message.received", "pending", 0)]))
        assert not await _due(daemon)
        await storage.deliveries.enable("rec", now=time.time())
        await wait_until(lambda: _types(["message.received", "message.received"]))
        assert [event.data["message"]["text"] for event in Recorder.seen] == ["one", "two"]


class Broken(Recorder):
    """Raises something other than ``DeliveryFailed``, or never answers."""

    PLATFORM = "broken"
    hang: ClassVar[bool] = False

    async def deliver(self, event: IntegrationEvent) -> None:
        if Broken.hang:
            await asyncio.Event().wait()
        raise KeyError("a bug")


class BrokenPlugin:
    @wahub.hookimpl
    def register_crm_backends(self) -> Iterable[type[CRMBackend]]:
        return [Broken]


@pytest.mark.parametrize("hang", [False, True], ids=["raises", "hangs"])
async def test_a_backend_that_raises_or_hangs_never_delays_a_reply(
    database_url: str, hang: bool, caplog: pytest.LogCaptureFixture
) -> None:
    Broken.hang = hang
    pm = plugin_manager([BrokenPlugin()])
    raw = {"router": ROUTER, "crm": [{"platform": "broken", "name": "rec", "timeout": 1}]}
    async with running_daemon(build_config(raw, database=database_url, pm=pm), pm=pm) as daemon:
        await daemon.post_sandbox([sandbox_message("hi", message_id="wamid.1")])
        await wait_until(lambda: _replied(daemon))
        await wait_until(lambda: _retried(daemon))
        (row,) = [row for row in (await daemon.hub.storage.deliveries.listing(endpoint="rec"))[0] if row["attempts"]]
        assert row["last_error"] == ("no answer within 1 s" if hang else "KeyError: 'a bug'")


async def _replied(daemon: RunningDaemon) -> bool:
    page = await daemon.hub.storage.conversations.list(limit=1)
    if not page.items:
        return False
    messages = await daemon.hub.storage.conversations.messages(page.items[0]["id"])
    return any(row["direction"] == "out" and row["status"] == "sent" for row in messages.items)


async def _retried(daemon: RunningDaemon) -> bool:
    return any(attempts for _, _, attempts in await _state(daemon))


def test_the_schedule_runs_out_after_a_day_and_honours_retry_after() -> None:
    assert retry_delay(1, None) == pytest.approx(5, rel=0.11)
    assert retry_delay(3, None) == pytest.approx(1800, rel=0.11)
    assert retry_delay(1, 600) == 600
    assert retry_delay(2, 10**9) == 86400
    assert sum(RETRY_DELAYS) >= 86400
    assert retry_delay(len(RETRY_DELAYS), None) is not None
    assert retry_delay(len(RETRY_DELAYS) + 1, None) is None


def test_a_filter_matching_no_event_type_is_a_config_error(database_url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(database_url, events=["mesage.*"])
    assert "'mesage.*' matches no event type (did you mean" in str(caught.value)
