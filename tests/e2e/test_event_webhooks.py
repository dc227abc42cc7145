"""Event webhooks from a whole daemon to a receiver on loopback that verifies
each request with the ``standardwebhooks`` library: every event type, the
WhatsApp side never waiting for a receiver that does not answer, and a
daemon killed with SIGKILL while its receiver was down."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks import Webhook

from tests.e2e.daemon import Daemon, free_port, start_daemon
from tests.helpers import AUTH, TOKEN
from tests.plugins.crm.test_webhook import ANA, BRUNO, ROUTER, SECRET, Receiver, webhook_config, webhook_entry
from wahub.core.conversations.ownership import change_owner
from wahub.core.hub import Hub
from wahub.core.models import EVENT_TYPES
from wahub.core.storage.store import Storage
from wahub.testing import (
    TEST_SECRET,
    running_daemon,
    sandbox_message,
    sandbox_status,
    signed_sandbox_webhook,
    wait_until,
)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = await Receiver().start()
    yield running
    await running.stop()


async def test_every_event_type_reaches_the_receiver_signed(database_url: str, receiver: Receiver) -> None:
    config = webhook_config(database_url, webhook_entry(receiver.url), wahub={"api_tokens": [TOKEN]})
    async with running_daemon(config) as daemon, aiohttp.ClientSession() as http:
        hub = daemon.hub

        async def arrived(event_type: str) -> dict[str, Any]:
            """The first event of ``event_type``, once it arrived."""

            async def found() -> dict[str, Any] | None:
                return next((event for event in receiver.accepted() if event["type"] == event_type), None)

            event: dict[str, Any] = await wait_until(found)
            return event

        await daemon.post_sandbox([sandbox_message("hi", sender=ANA, name="Ana")])
        sent = await arrived("message.sent")
        reply_id = sent["data"]["message"]["provider_message_id"]
        await daemon.post_sandbox([sandbox_status(reply_id, "delivered", recipient=ANA)])
        await daemon.post_sandbox([sandbox_message("human", sender=ANA, name="Ana")])
        queued = await arrived("conversation.queued")
        conversation_id = queued["data"]["conversation"]["id"]
        assert await change_owner(hub, conversation_id, "assigned", actor="api", reason="taken", assignee="rita")
        await arrived("conversation.assigned")
        assert await change_owner(hub, conversation_id, "resolved", actor="api", reason="answered")
        await daemon.post_sandbox([sandbox_message("STOP", sender=ANA, name="Ana")])
        await arrived("contact.opted_out")
        await daemon.post_sandbox([sandbox_message("START", sender=ANA, name="Ana")])
        await arrived("contact.opted_in")
        contact_id = sent["data"]["contact"]["id"]
        path = f"{daemon.url}/api/v1/contacts/{contact_id}"
        async with http.patch(path, json={"name": "Ana Souza", "tags": ["vip"]}, headers=AUTH) as response:
            assert response.status == 200, await response.text()
        updated = await arrived("contact.updated")

        got: dict[str, dict[str, Any]] = {}
        for event in receiver.accepted():
            got.setdefault(event["type"], event)  # the first of each type
        assert set(got) == set(EVENT_TYPES)
    assert receiver.unverified == []
    for taken in receiver.requests:  # each one verifies, exactly as a receiver would
        assert Webhook(SECRET).verify(taken.body, taken.headers)["type"] in EVENT_TYPES
        assert taken.id.startswith("evt_")

    received = got["message.received"]["data"]
    assert (received["message"]["direction"], received["message"]["text"]) == ("in", "hi")
    assert received["contact"]["phone"] == f"+{ANA}" and received["contact"]["name"] == "Ana"
    assert got["message.sent"]["data"]["message"]["direction"] == "out"
    status = got["message.status"]["data"]["message"]
    assert (status["provider_message_id"], status["status"]) == (reply_id, "delivered")
    assigned = got["conversation.assigned"]["data"]
    assert (assigned["conversation"]["assignee"], assigned["change"]["from"], assigned["change"]["to"]) == (
        "rita",
        "queued",
        "assigned",
    )
    assert got["conversation.resolved"]["data"]["change"]["reason"] == "answered"
    assert got["contact.opted_out"]["data"]["consent"]["source"]
    assert got["contact.opted_in"]["data"]["contact"]["id"] == contact_id
    assert (updated["data"]["changed"], updated["data"]["contact"]["name"]) == (["name", "tags"], "Ana Souza")
    for event in receiver.accepted():
        assert set(event) == {"id", "type", "timestamp", "data"} and event["timestamp"].endswith("Z")


async def test_the_reply_goes_out_while_the_receiver_never_answers(database_url: str, receiver: Receiver) -> None:
    receiver.hang = True
    config = webhook_config(database_url, webhook_entry(receiver.url, timeout=5))
    async with running_daemon(config) as daemon:
        hub = daemon.hub
        await daemon.post_sandbox([sandbox_message("hello", sender=ANA)])
        history = await wait_until(lambda: _sent_reply(hub, ANA))
        assert history[-1]["body"]["text"]["body"] == ROUTER["default_reply"]
        # The first event's delivery is still waiting for an answer.
        assert receiver.requests and all(taken.status is None for taken in receiver.requests)
        rows, _ = await hub.storage.deliveries.listing(endpoint="hook", state="delivered")
        assert rows == []


async def _sent_reply(hub: Hub, sender: str) -> list[dict[str, Any]] | None:
    history = await hub.storage.messages.history("sandbox", sender)
    return history if any(row["direction"] == "out" and row["status"] == "sent" for row in history) else None


# -- a daemon killed with SIGKILL ---------------------------------------------------


def write_config(path: Path, database: str, url: str) -> Path:
    config = {
        "wahub": {"database": database, "http": {"port": "!port"}, "log_level": "warning"},
        "providers": [{"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET}],
        "conversations": {"debounce_seconds": 0},
        "router": ROUTER,
        "crm": [webhook_entry(url, timeout=1)],
    }
    # The port comes from WAHUB_PORT, so one file serves both runs.
    path.write_text(json.dumps(config).replace('"!port"', "!env_var WAHUB_PORT"))
    return path


async def _scalar(database_url: str, sql: str) -> int:
    """One number from the daemon's database, read beside the running daemon."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    driver = database_url.replace("sqlite:///", "sqlite+aiosqlite:///").replace(
        "postgresql://", "postgresql+asyncpg://"
    )
    engine = create_async_engine(driver)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(sa.text(sql))).scalar() or 0)
    finally:
        await engine.dispose()


async def test_kill_9_with_the_receiver_down_loses_no_event(database_url: str, tmp_path: Path) -> None:
    hook_port, port = free_port(), free_port()
    config = write_config(tmp_path / "config.yaml", database_url, f"http://127.0.0.1:{hook_port}/hook")
    receiver = Receiver()
    daemon = start_daemon(config, tmp_path, port)
    restarted: Daemon | None = None
    try:
        daemon.wait_healthy(within=30)
        async with aiohttp.ClientSession() as http:
            for n in range(3):
                for sender in (ANA, BRUNO):
                    body, headers = signed_sandbox_webhook([sandbox_message(f"message {n}", sender=sender)])
                    async with http.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as response:
                        assert response.status == 200
        # Nothing listens at the receiver's port: the first attempts fail; kill before the retries.
        await wait_until(lambda: _scalar(database_url, "SELECT count(*) FROM deliveries WHERE attempts > 0"))
        daemon.kill()
        assert await _scalar(database_url, "SELECT count(*) FROM deliveries WHERE state = 'delivered'") == 0

        await receiver.start(port=hook_port)
        restarted = start_daemon(config, tmp_path, port)
        # In a thread: the receiver answers from this process's event loop meanwhile.
        await asyncio.to_thread(restarted.wait_healthy, 30)
        unfinished = "SELECT count(*) FROM deliveries WHERE state != 'delivered'"

        async def all_delivered() -> bool:
            ids = {event["id"] for event in receiver.accepted()}
            return len(ids) >= 12 and await _scalar(database_url, unfinished) == 0

        await wait_until(all_delivered, within=90)
        assert restarted.terminate() == 0
    finally:
        for process in (daemon, restarted):
            if process is not None and process.process.poll() is None:
                process.kill()
        await receiver.stop()

    storage = await Storage.open(database_url)
    try:
        rows, _ = await storage.deliveries.listing(endpoint="hook", limit=500)
    finally:
        await storage.close()
    expected = [(row["event_id"], row["contact_id"]) for row in reversed(rows)]
    accepted = receiver.accepted()
    assert set(Counter(event["id"] for event in accepted)) == {event_id for event_id, _ in expected}
    first_arrivals = list(dict.fromkeys(event["id"] for event in accepted))
    for contact_id in {contact for _, contact in expected}:
        in_order = [event_id for event_id, contact in expected if contact == contact_id]
        assert [event_id for event_id in first_arrivals if event_id in in_order] == in_order
    texts = Counter(
        (event["data"]["contact"]["address"], event["data"]["message"]["text"])
        for event in accepted
        if event["type"] == "message.received"
    )
    assert set(texts) == {(sender, f"message {n}") for n in range(3) for sender in (ANA, BRUNO)}
    assert receiver.unverified == []
