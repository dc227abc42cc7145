"""The deliveries engine with a backend written in the test: every change
records its events in its own transaction, each contact's events reach a
backend in order, failures are retried on the schedule (a controllable
clock), a 410 disables the entry, and replays deliver again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, ClassVar

import pluggy

import wahub
from wahub.core.crm import CRMBackend
from wahub.core.errors import DeliveryFailed
from wahub.core.models import IntegrationEvent
from wahub.testing import ManualClock, build_config, plugin_manager, running_daemon, sandbox_message, wait_until

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
