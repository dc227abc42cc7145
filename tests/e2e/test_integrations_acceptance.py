"""Integrations, as their users meet them: one daemon with an event webhook,
HubSpot, Zendesk and Chatwoot, all down for the whole of a busy spell, answers
every WhatsApp user at once; when they come back, each gets everything, once.

Where each acceptance point of the integrations is proved (all over real HTTP
to the fakes in ``wahub.testing``, on SQLite and PostgreSQL):

- Every event type reaches a receiver that verifies it with
  ``standardwebhooks``' ``Webhook.verify``: ``tests/e2e/test_event_webhooks.py::
  test_every_event_type_reaches_the_receiver_signed``; a receiver down for 10
  minutes (manual clock) gets every event once, in order per contact:
  ``tests/plugins/crm/test_webhook.py::test_a_receiver_down_ten_minutes_gets_every_event_once_in_order``;
  ``kill -9`` between a change and its delivery loses nothing:
  ``tests/e2e/test_event_webhooks.py::test_kill_9_with_the_receiver_down_loses_no_event``;
  both secrets during rotation, and a wrong secret seen as forged:
  ``test_webhook.py::test_every_secret_signs_so_a_receiver_knowing_either_verifies``.
- HubSpot: a new contact appears once (a second message, a restart, a search
  that lags): ``tests/plugins/crm/test_hubspot.py::test_a_new_contact_is_created_once_though_search_never_finds_it``;
  a resolved conversation's transcript is a note on it:
  ``test_hubspot.py::test_a_resolved_conversation_is_a_note_on_the_contact_once``.
- Zendesk: hand-off creates one ticket and the next message is a comment:
  ``tests/plugins/crm/test_zendesk.py::test_a_handoff_opens_one_ticket_and_the_users_next_message_is_a_comment``;
  an agent reply (signed webhook) reaches the user once:
  ``test_zendesk.py::test_an_agents_reply_reaches_the_user_once``; a forged one
  is refused 401: ``test_zendesk.py::test_an_unsigned_or_stale_webhook_is_refused_and_nothing_is_done``;
  solving resolves: ``test_zendesk.py::test_solving_the_ticket_resolves_the_conversation``.
- Chatwoot: a user message appears in the inbox, the bot's answer is never
  sent back: ``tests/plugins/crm/test_chatwoot.py::test_the_user_is_incoming_and_the_bot_outgoing_and_never_sent_back``;
  an agent reply reaches the user once:
  ``test_chatwoot.py::test_an_agent_reply_reaches_the_user_once_even_delivered_twice``;
  no echo loop after 20 messages: ``test_chatwoot.py::test_no_echo_loop_in_twenty_messages_back_and_forth``.
- A CRM down for the whole test does not delay a single WhatsApp reply: this
  module, with all four down at once (and each backend's own test).
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from wahub.testing import (
    TEST_SECRET,
    ManualClock,
    RunningDaemon,
    build_config,
    running_daemon,
    sandbox_message,
    wait_until,
)
from wahub.testing.fake_chatwoot import FakeChatwoot
from wahub.testing.fake_hubspot import FakeHubSpot
from wahub.testing.fake_zendesk import FakeZendesk

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, base64
HUBSPOT_TOKEN = "pat-na1-acceptance-token"
USERS = [f"1555000{n:04d}" for n in range(6)]
ROUTER = {"rules": [{"match": {"keyword": "human"}, "handoff": "A person will answer."}], "default_reply": "Hello!"}
ENTRIES = ("hook", "hubspot", "zendesk", "chatwoot")


class Receiver:
    """An integrator's endpoint: verifies each event with ``standardwebhooks``, keeps each id once."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.forged = 0
        self.app = web.Application()
        self.app.router.add_post("/events", self.take)

    async def take(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = Webhook(SECRET).verify(body, dict(request.headers))
        except Exception:  # noqa: BLE001 - anything but a verified event counts as forged
            self.forged += 1
            return web.Response(status=400)
        self.events.setdefault(request.headers["webhook-id"], event)
        return web.Response(status=204)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeHubSpot, FakeZendesk, FakeChatwoot]]:
    hubspot = await FakeHubSpot(token=HUBSPOT_TOKEN).start()
    zendesk = await FakeZendesk().start()
    chatwoot = await FakeChatwoot().start()
    yield hubspot, zendesk, chatwoot
    for fake in (hubspot, zendesk, chatwoot):
        await fake.close()


def _config(database_url: str, port: int, hubspot: FakeHubSpot, zendesk: FakeZendesk, chatwoot: FakeChatwoot) -> Any:
    crm = [
        {"platform": "webhook", "name": "hook", "url": f"http://127.0.0.1:{port}/events", "secret": SECRET}
        | {"allow_private": True},
        {"platform": "hubspot", "name": "hubspot", "token": HUBSPOT_TOKEN, "api_base": hubspot.url},
        {"platform": "zendesk", "name": "zendesk", "api_base": zendesk.url, "email": zendesk.email}
        | {"api_token": zendesk.api_token, "webhook_secret": zendesk.webhook_secret},
        {"platform": "chatwoot", "name": "chatwoot", "api_base": chatwoot.api_base, "token": chatwoot.token}
        | {"account_id": chatwoot.account_id, "inbox_id": chatwoot.inbox_id, "webhook_secret": chatwoot.webhook_secret},
    ]
    raw = {
        "router": ROUTER,
        "providers": [{"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET, "pair_limit": None}],
        "crm": [{**entry, "timeout": 2} for entry in crm],
    }
    return build_config(raw, database=database_url)


async def test_every_integration_down_delays_no_reply_and_gets_everything_once_back(
    database_url: str, fakes: tuple[FakeHubSpot, FakeZendesk, FakeChatwoot]
) -> None:
    hubspot, zendesk, chatwoot = fakes
    hubspot.down, chatwoot.down = True, True
    zendesk.hold()  # Zendesk takes requests and never answers
    port = free_port()  # nothing listens there yet: the integrator's service is down
    clock = ManualClock(time.time() + 60)
    async with running_daemon(_config(database_url, port, *fakes), clock=clock) as daemon:
        chatwoot.webhook_url = f"{daemon.url}/crm/chatwoot/webhook"
        zendesk.webhook_url = f"{daemon.url}/crm/zendesk/webhook"
        for round_ in range(2):
            for user in USERS:
                await daemon.post_sandbox(
                    [sandbox_message(f"hi {round_}", sender=user, message_id=f"w.{user}.{round_}")]
                )
        await daemon.post_sandbox([sandbox_message("human", sender=USERS[0], message_id="w.handoff")])
        # Every user is answered while every integration is down.
        await wait_until(lambda: _answered(daemon), within=30)
        counts = await daemon.hub.storage.deliveries.endpoints()
        for name in ("hook", "hubspot", "chatwoot"):  # each has a call to make for every event it takes
            assert counts[name]["delivered"] == 0
        # Zendesk takes messages only for a ticket: the hand-off, which opens it, waits.
        await wait_until(lambda: _pending(daemon, "zendesk"))
        assert await _pending(daemon, "zendesk") == ["conversation.queued"]
        assert not hubspot.contacts and not zendesk.tickets and not chatwoot.conversations

        receiver = Receiver()
        runner, _ = await _serve_on(receiver.app, port)
        try:
            hubspot.down, chatwoot.down = False, False
            zendesk.release()
            clock.advance(4 * 3600)  # past every backoff so far
            await wait_until(lambda: _all_delivered(daemon), within=60)
        finally:
            await runner.cleanup()

        # The integrator: every event once, each contact's in order, none forged.
        assert receiver.forged == 0
        sent = await _recorded_ids(daemon, "hook")
        assert sorted(receiver.events) == sorted(sent)
        # HubSpot: one contact per user; Zendesk: one ticket, for the hand-off; Chatwoot: each conversation.
        assert sorted(record.properties["phone"] for record in hubspot.contacts.values()) == [
            "+" + user for user in USERS
        ]
        assert len(zendesk.tickets) == 1
        assert len(chatwoot.conversations) == len(USERS)


async def _serve_on(app: web.Application, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def _answered(daemon: RunningDaemon) -> bool:
    for user in USERS:
        rows = await daemon.hub.storage.messages.history("sandbox", user, limit=50)
        replies = [row for row in rows if row["direction"] == "out" and row["status"] != "queued"]
        if len(replies) < (1 if user == USERS[0] else 2):
            return False
    return True


async def _pending(daemon: RunningDaemon, endpoint: str) -> list[str]:
    pending, _ = await daemon.hub.storage.deliveries.listing(endpoint=endpoint, state="pending")
    return [row["type"] for row in pending]


async def _all_delivered(daemon: RunningDaemon) -> bool:
    counts = await daemon.hub.storage.deliveries.endpoints()
    return all(counts[name]["pending"] == 0 and counts[name]["failed"] == 0 for name in ENTRIES)


async def _recorded_ids(daemon: RunningDaemon, endpoint: str) -> list[str]:
    rows, after = await daemon.hub.storage.deliveries.listing(endpoint=endpoint, limit=500)
    assert after is None
    return [row["event_id"] for row in rows]
