"""The sandbox plays the business's phone: an ``echo`` frame on the chat socket,
or an ``echo`` webhook event, is what a person at the business sent the user
from the WhatsApp Business app. Against a real daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from wahub.core.models import EchoMessage, event_from_json
from wahub.core.storage.schema import inbox, messages
from wahub.plugins.providers.sandbox.frames import echo_event, receipt_events, shown_event
from wahub.testing import (
    RunningDaemon,
    build_config,
    running_daemon,
    sandbox_echo,
    sandbox_message,
    signed_sandbox_webhook,
    wait_until,
)

USER = "15551234567"
TEXT = "I'll call you in five minutes"


@pytest.fixture
async def daemon(sqlite_url: str) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(build_config({"router": {"default_reply": "ok"}}, database=sqlite_url)) as running:
        yield running


async def inbox_rows(daemon: RunningDaemon) -> list[dict[str, Any]]:
    async with daemon.hub.storage.engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(sa.select(inbox).order_by(inbox.c.id))]


async def drained(daemon: RunningDaemon) -> bool:
    return (await daemon.hub.storage.inbox_depth())[0] == 0


async def test_an_echo_frame_is_posted_as_the_businesss_echo_and_shown_as_its_message(daemon: RunningDaemon) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{daemon.url}/sandbox/ws?user={USER}") as ws,
    ):
        assert (await ws.receive_json())["type"] == "history"
        await ws.send_json({"type": "echo", "text": TEXT, "ref": "phone-1"})
        shown = await ws.receive_json()
        accepted = await ws.receive_json()
    message = shown["message"]
    assert shown["type"] == "message"
    assert (message["direction"], message["text"], message["from_phone"]) == ("out", TEXT, True)
    assert message["id"].startswith("sbx.echo.")
    assert accepted == {"type": "accepted", "ref": "phone-1", "id": message["id"]}
    await wait_until(lambda: drained(daemon))
    (row,) = await inbox_rows(daemon)
    assert (row["kind"], row["contact_key"], row["external_id"]) == ("echo", f"sandbox:{USER}", message["id"])
    echo = event_from_json(row["payload"])
    assert isinstance(echo, EchoMessage)
    assert (echo.recipient, echo.type, echo.content) == (USER, "text", {"text": {"body": TEXT}})


async def test_an_echo_frame_without_text_is_refused_with_its_reason(daemon: RunningDaemon) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{daemon.url}/sandbox/ws?user={USER}") as ws,
    ):
        assert (await ws.receive_json())["type"] == "history"
        await ws.send_json({"type": "echo", "text": "   ", "ref": "r"})
        assert await ws.receive_json() == {
            "type": "error",
            "message": "an echo frame needs 'text': the message, as a string",
            "ref": "r",
        }
        await ws.send_json({"type": "echo", "text": "x" * 4097})
        assert await ws.receive_json() == {"type": "error", "message": "a message is at most 4096 characters"}
    assert await inbox_rows(daemon) == []


async def test_an_echo_webhook_is_stored_behind_the_users_message_which_the_bot_leaves_to_the_person(
    daemon: RunningDaemon,
) -> None:
    events = [sandbox_message("Are you open?", sender=USER), sandbox_echo("Yes, until six", recipient=USER)]
    body, headers = signed_sandbox_webhook(events)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as response,
    ):
        assert (response.status, await response.json()) == (200, {"ok": True, "events": 2})
    await wait_until(lambda: drained(daemon))
    message_row, echo_row = await inbox_rows(daemon)
    assert (message_row["kind"], echo_row["kind"]) == ("message", "echo")
    assert message_row["contact_key"] == echo_row["contact_key"] == f"sandbox:{USER}"
    async with daemon.hub.storage.engine.connect() as conn:
        query = sa.select(messages.c.body, messages.c.origin).where(messages.c.direction == "out")
        sent = (await conn.execute(query)).all()
    # A person answered from the business app right behind the user: the bot stays out of it.
    assert [(body["text"]["body"], origin) for body, origin in sent] == [("Yes, until six", "phone")]
    (conversation,) = (await daemon.hub.storage.conversations.list()).items
    assert conversation["owner"] == "phone"


def test_an_echo_event_and_its_frame_say_who_sent_it() -> None:
    event = echo_event(USER, {"type": "echo", "text": "See you soon", "context": "sbx.in.1"})
    assert event is not None
    assert (event["type"], event["to"], event["message"]["context"]) == ("echo", USER, {"id": "sbx.in.1"})
    shown = shown_event(event)
    assert (shown["direction"], shown["status"], shown["text"], shown["from_phone"]) == (
        "out",
        "sent",
        "See you soon",
        True,
    )
    mine = shown_event(sandbox_message("hi", sender=USER))
    assert (mine["direction"], mine["status"], "from_phone" in mine) == ("in", "received", False)
    assert echo_event(USER, {"type": "echo", "text": ["not", "text"]}) is None
    # The page's receipts for an echo report nothing: wahub did not send it.
    assert receipt_events(USER, {"type": "seen", "ids": [event["id"]]}) == []
