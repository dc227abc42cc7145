"""The send policy at dispatch and for replies, end to end over real HTTP: quiet
hours hold business messages whose retry or deferral falls inside them, never
replies; a reply the policy refuses is kept as a failed message."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from wahub import hookimpl
from wahub.core.hub import Hub
from wahub.core.models import InboundMessage, OutgoingMessage
from wahub.hookspecs import Route, Turn
from wahub.testing import ManualClock, wait_until

from .test_engine import USER, Engine, _approved, engine_for, template

QUIET_HOURS = 8
RULES = {"rules": [{"match": {"keyword": "hi"}, "reply": "Hello!"}]}


def quiet_hours_ahead() -> tuple[float, dict[str, Any]]:
    """Quiet hours (UTC) of ``QUIET_HOURS`` starting at a full minute one to two
    minutes from now, and their start: a clock set near them stays close to
    the real time that webhooks and statuses carry."""
    start = float((int(time.time()) // 60 + 2) * 60)
    begin = dt.datetime.fromtimestamp(start, dt.UTC)
    end = begin + dt.timedelta(hours=QUIET_HOURS)
    return start, {"start": begin.strftime("%H:%M"), "end": end.strftime("%H:%M"), "timezone": "UTC"}


async def next_attempt_at(engine: Engine, message_id: int) -> float:
    stored = await engine.daemon.hub.storage.messages.get(message_id)
    assert stored is not None
    return float(stored["next_attempt_at"])


async def attempt_failed(engine: Engine, message_id: int) -> dict[str, Any]:
    """The message once an attempt to send it has failed (it keeps the error while it waits)."""

    async def failed() -> dict[str, Any] | None:
        found = await engine.message(message_id)
        return found if found["error"] is not None else None

    result: dict[str, Any] = await wait_until(failed)
    return result


async def due_becomes(engine: Engine, message_id: int, at: float) -> None:
    async def due() -> bool:
        return await next_attempt_at(engine, message_id) == at

    await wait_until(due)


async def outgoing(engine: Engine, count: int) -> list[dict[str, Any]]:
    """The first ``count`` messages wahub stored for ``USER``, as ``GET /api/v1/messages/{id}`` shows them."""
    history = await engine.daemon.hub.storage.messages.history("fake", USER)
    out = [row for row in history if row["direction"] == "out"]
    assert len(out) >= count, out
    return [await engine.message(row["id"]) for row in out[:count]]


async def refusals(engine: Engine, reason: str) -> float:
    async with engine.http.get(f"{engine.daemon.url}/metrics") as response:
        text = await response.text()
    prefix = f'wahub_send_refusals_total{{provider="fake",reason="{reason}"}} '
    return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


async def test_a_retry_falling_in_quiet_hours_goes_out_at_their_end(database_url: str) -> None:
    start, quiet = quiet_hours_ahead()
    clock = ManualClock(start - 0.5)  # the retry's backoff (0.5 to 1 s) ends inside quiet hours
    config = {"policy": {"quiet_hours": quiet}, "router": RULES}
    async for engine in engine_for(database_url, config=config, clock=clock, pair_limit=None):
        await engine.daemon.hub.storage.policy.upsert_template("fake", _approved("order_update", "UTILITY"))
        engine.server.fail_next(1, code=131016, status=503, title="Service unavailable")

        status, body = await engine.send(template("order_update"))
        assert status == 202 and body["status"] == "queued"
        waiting = await attempt_failed(engine, body["id"])
        assert waiting["status"] == "queued" and waiting["error"]["code"] == "131016"
        assert await next_attempt_at(engine, body["id"]) == start + QUIET_HOURS * 3600

        # A minute before the end, a reply to the same contact goes at once; the template still waits.
        clock.set(start + QUIET_HOURS * 3600 - 60)
        await engine.inbound("hi")
        [_template, reply] = await outgoing(engine, 2)
        await engine.status_becomes(reply["id"], "delivered")
        assert (await engine.message(body["id"]))["status"] == "queued"
        assert [c.body["type"] for c in engine.server.calls] == ["template", "text"]

        clock.set(start + QUIET_HOURS * 3600)
        await engine.status_becomes(body["id"], "delivered")
        assert [c.status for c in engine.server.calls if c.body["type"] == "template"] == [503, 200]


async def test_a_message_paced_into_quiet_hours_goes_out_at_their_end(database_url: str) -> None:
    start, quiet = quiet_hours_ahead()
    clock = ManualClock(start - 30)
    config = {"policy": {"quiet_hours": quiet}}
    # One message per minute to a recipient: the second would go 30 s into quiet hours.
    async for engine in engine_for(database_url, config=config, clock=clock, pair_limit={"burst": 1, "every": 60}):
        await engine.daemon.hub.storage.policy.upsert_template("fake", _approved("order_update", "UTILITY"))

        _, first = await engine.send(template("order_update"), key="first")
        _, second = await engine.send(template("order_update"), key="second")
        await engine.status_becomes(first["id"], "delivered")
        await due_becomes(engine, second["id"], start + QUIET_HOURS * 3600)
        assert (await engine.message(second["id"]))["status"] == "queued"
        assert len(engine.server.calls) == 1

        clock.set(start + QUIET_HOURS * 3600)
        await engine.status_becomes(second["id"], "delivered")
        assert len(engine.server.calls) == 2


async def test_replies_are_never_held_by_quiet_hours_even_on_retry(database_url: str) -> None:
    start, quiet = quiet_hours_ahead()
    clock = ManualClock(start + 3600)  # an hour into quiet hours
    config = {"policy": {"quiet_hours": quiet}, "router": RULES}
    async for engine in engine_for(database_url, config=config, clock=clock, pair_limit=None):
        engine.server.fail_next(1, code=131016, status=503, title="Service unavailable")

        await engine.inbound("hi")
        [reply] = await outgoing(engine, 1)
        await attempt_failed(engine, reply["id"])
        assert await next_attempt_at(engine, reply["id"]) <= clock.time() + 1.0  # its backoff, not the quiet hours

        clock.advance(1.0)
        await engine.status_becomes(reply["id"], "delivered")

        await engine.inbound("STOP")  # the opt-out's confirmation is a reply too
        [_, confirmation] = await outgoing(engine, 2)
        delivered = await engine.status_becomes(confirmation["id"], "delivered")
        assert delivered["message"]["text"]["body"].startswith("You are unsubscribed")


async def test_a_reply_refused_by_the_window_is_kept_as_failed(database_url: str) -> None:
    async for engine in engine_for(database_url, config={"router": RULES}, pair_limit=None):
        await engine.inbound("hi", age=25 * 3600)  # delivered a day late: the window has closed

        [reply] = await outgoing(engine, 1)
        assert reply["status"] == "failed" and reply["error"]["code"] == "window_closed"
        assert "25.0 hours ago" in reply["error"]["message"]
        assert reply["message"]["text"]["body"] == "Hello!"
        assert await refusals(engine, "window_closed") == 1
        assert engine.server.calls == []


class OptionsRoute:
    """Answers every message with a text and buttons, one of whose titles is too long."""

    @hookimpl
    def route_message(self, hub: Hub, message: InboundMessage) -> Route:
        async def respond(hub: Hub, turn: Turn) -> list[OutgoingMessage]:
            message = turn.message
            buttons = [
                {"type": "reply", "reply": {"id": "hours", "title": "Opening hours"}},
                {"type": "reply", "reply": {"id": "agent", "title": "Talk to somebody from our team"}},
            ]
            interactive = {"type": "button", "body": {"text": "What would you like?"}, "action": {"buttons": buttons}}
            return [
                OutgoingMessage.text(message.sender, "Let me help."),
                OutgoingMessage(to=message.sender, type="interactive", content={"interactive": interactive}),
            ]

        return Route("options", respond)


async def test_an_invalid_reply_is_kept_as_failed_beside_the_valid_one(database_url: str) -> None:
    async for engine in engine_for(database_url, plugins=(OptionsRoute(),), pair_limit=None):
        await engine.inbound("hello")

        [text, buttons] = await outgoing(engine, 2)
        assert buttons["status"] == "failed" and buttons["error"]["code"] == "invalid_message"
        assert "title" in buttons["error"]["message"]
        assert buttons["message"]["interactive"]["action"]["buttons"][1]["reply"]["id"] == "agent"
        await engine.status_becomes(text["id"], "delivered")
        assert [c.body["type"] for c in engine.server.calls] == ["text"]
        assert await refusals(engine, "invalid_message") == 1
