"""The outbox: hub.send, idempotency and per-recipient order, through a real daemon."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest

from wahub import hookimpl
from wahub.core.models import InboundMessage, OutgoingMessage, SendResult
from wahub.plugins.providers.sandbox.provider import SandboxProvider
from wahub.testing import RunningDaemon, build_config, plugin_manager, running_daemon, wait_until


class RecordingProvider(SandboxProvider):
    """The sandbox, recording the order of sends and taking its time with some."""

    PLATFORM = "recording"
    sent: ClassVar[list[tuple[str, str]]] = []
    #: The first send waits here, so the test can queue the rest meanwhile.
    gate: ClassVar[asyncio.Event]

    async def send(self, message: OutgoingMessage) -> SendResult:
        if not self.sent:
            await self.gate.wait()
        text = message.content["text"]["body"]
        # The first parts take longer to send than the later ones.
        await asyncio.sleep(0.02 if text in ("part 0", "part 1") else 0)
        self.sent.append((message.to, text))
        return await super().send(message)


class Plugin:
    @hookimpl
    def register_providers(self) -> list[type[SandboxProvider]]:
        return [RecordingProvider]


@pytest.fixture
async def daemon(database_url: str) -> AsyncIterator[RunningDaemon]:
    RecordingProvider.sent = []
    RecordingProvider.gate = asyncio.Event()
    pm = plugin_manager([Plugin()])
    raw = {"providers": [{"platform": "recording", "name": "rec", "secret": "x" * 32, "pair_limit": None}]}
    async with running_daemon(build_config(raw, database=database_url, pm=pm), pm=pm) as running:
        for user in ("15550001", "15550002", "15550009"):  # each has written: their service windows are open
            await running.hub.storage.messages.record_inbound(
                InboundMessage("rec", f"in-{user}", user, "text", {"text": {"body": "hi"}}, time.time())
            )
        yield running


async def test_same_idempotency_key_sends_once(daemon: RunningDaemon) -> None:
    RecordingProvider.gate.set()
    first = await daemon.hub.send(OutgoingMessage.text("15550001", "once"), idempotency_key="k1")
    second = await daemon.hub.send(OutgoingMessage.text("15550001", "twice?"), idempotency_key="k1")
    assert first == second

    async def sent() -> bool:
        stored = await daemon.hub.storage.messages.get(first)
        return stored is not None and stored["status"] == "sent"

    await wait_until(sent)
    assert RecordingProvider.sent == [("15550001", "once")]


async def test_one_recipients_messages_go_out_in_order(daemon: RunningDaemon) -> None:
    await daemon.hub.send(OutgoingMessage.text("15550009", "first"), idempotency_key="first")
    for n in range(6):
        for user in ("15550001", "15550002"):
            await daemon.hub.send(OutgoingMessage.text(user, f"part {n}"), idempotency_key=f"{user}:{n}")
    RecordingProvider.gate.set()

    async def all_sent() -> bool:
        return len(RecordingProvider.sent) == 13

    await wait_until(all_sent)
    for user in ("15550001", "15550002"):
        assert [text for to, text in RecordingProvider.sent if to == user] == [f"part {n}" for n in range(6)]
