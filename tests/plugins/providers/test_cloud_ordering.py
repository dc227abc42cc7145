"""One user's events keep their order while Meta moves them to BSUIDs: old
webhooks (wa_id only), new ones (wa_id and BSUID) and BSUID-only ones after
the user hid their phone number, over real HTTP to a real daemon."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wahub import hookimpl
from wahub.core.hub import Hub
from wahub.core.models import InboundMessage
from wahub.testing import RunningDaemon, build_config, plugin_manager, running_daemon, wait_until
from wahub.testing.fake_graph import FakeGraphServer

FIXTURES = Path(__file__).parents[2] / "fixtures" / "cloud"
WA_ID, BSUID = "16505550142", "US.13491208655302741918"


def fixture_value(name: str) -> dict[str, Any]:
    """The ``value`` of the fixture's one change, without the metadata the fake adds itself."""
    body = json.loads((FIXTURES / f"{name}.json").read_text())
    value: dict[str, Any] = copy.deepcopy(body["entry"][0]["changes"][0]["value"])
    value.pop("metadata")
    value.pop("messaging_product", None)
    return value


def webhook(shape: str, text: str) -> dict[str, Any]:
    """A message of the user in one of three shapes: ``old`` (wa_id only),
    ``new`` (wa_id and BSUID), ``hidden`` (BSUID only: the phone number hidden)."""
    value = fixture_value("text" if shape == "old" else "bsuid_with_phone")
    message = value["messages"][0]
    message.update(id=f"wamid.{shape}.{time.monotonic_ns()}", timestamp=str(int(time.time())), text={"body": text})
    if shape == "hidden":
        del message["from"], value["contacts"][0]["wa_id"]
    return value


class Recorder:
    """Sees each message enter and leave the pipeline; the first one waits
    until every webhook is stored, so the others could overtake it."""

    def __init__(self) -> None:
        #: How many webhooks the first recorded message waits for (0: it does not wait).
        self.expected = 0
        self.events: list[tuple[str, str]] = []

    @hookimpl
    async def inbound_message(self, hub: Hub, message: InboundMessage) -> None:
        self.events.append(("enter", message.text()))
        if len(self.events) == 1 and self.expected:
            await wait_until(lambda: self._all_stored(hub), within=20)
        for _ in range(20):  # give another worker every chance to start meanwhile
            await hub.storage.ping()
        self.events.append(("leave", message.text()))

    async def _all_stored(self, hub: Hub) -> bool:
        depth, _ = await hub.storage.inbox_depth()
        return depth >= self.expected


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphServer]:
    server = FakeGraphServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def run_in_daemon(
    graph: FakeGraphServer, database_url: str, warm_up: list[str], shapes: list[str]
) -> list[tuple[str, str]]:
    recorder = Recorder()
    pm = plugin_manager([recorder])
    raw = {"wahub": {"database": database_url, "workers": 4}, "providers": [graph.provider_entry("main")]}
    async with running_daemon(build_config(raw, database=database_url, pm=pm), pm=pm) as daemon:
        graph.attach(daemon.url, "main")
        for n, shape in enumerate(warm_up):
            assert await graph.deliver(webhook(shape, f"warm-up {n}")) == 200
            await wait_until(lambda: _drained(daemon))
        recorder.events.clear()
        recorder.expected = len(shapes)
        bodies = [webhook(shape, f"{n} {shape}") for n, shape in enumerate(shapes)]
        # The first two in one body: one commit, so one claim finds both waiting.
        first, second = bodies[0], bodies.pop(1)
        first["contacts"] += second["contacts"]
        first["messages"] += second["messages"]
        for body in bodies:
            assert await graph.deliver(body) == 200
        await wait_until(lambda: _drained(daemon), within=30)
    return recorder.events


async def _drained(daemon: RunningDaemon) -> bool:
    return (await daemon.hub.storage.inbox_depth())[0] == 0


def one_after_the_other(texts: list[str]) -> list[tuple[str, str]]:
    return [(step, text) for text in texts for step in ("enter", "leave")]


async def test_old_and_new_webhooks_of_one_user_run_one_after_the_other(
    graph: FakeGraphServer, database_url: str
) -> None:
    shapes = ["old", "new", "old", "new", "new", "old"]
    events = await run_in_daemon(graph, database_url, [], shapes)
    assert events == one_after_the_other([f"{n} {shape}" for n, shape in enumerate(shapes)])


@pytest.mark.parametrize("warm_up", [["old", "new"], []], ids=["known-user", "new-user"])
async def test_a_user_who_hides_their_number_keeps_their_order(
    graph: FakeGraphServer, database_url: str, warm_up: list[str]
) -> None:
    # BSUID-only webhooks mix with the others: of a user wahub knows by both
    # ids already, or of one whose first messages (with both ids) still wait.
    shapes = ["new", "hidden", "old", "hidden", "new"]
    events = await run_in_daemon(graph, database_url, warm_up, shapes)
    assert events == one_after_the_other([f"{n} {shape}" for n, shape in enumerate(shapes)])
