"""Chatwoot as an external inbox, over real HTTP: the daemon on one socket,
the fake Chatwoot on another, each calling the other (the API one way, the
signed inbox webhooks back), on SQLite and PostgreSQL. The fake fires a
webhook for every message, wahub's own included, before it answers the post
that made it: the echo loop every test has to survive."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from tests.helpers import AUTH, TOKEN
from wahub.core.clock import Clock
from wahub.core.crm import CRMContact, CRMMessage
from wahub.core.errors import ConfigError
from wahub.plugins.crm.chatwoot import chatwoot_content
from wahub.testing import (
    TEST_SECRET,
    ManualClock,
    RunningDaemon,
    build_config,
    running_daemon,
    sandbox_message,
    wait_until,
)
from wahub.testing.fake_chatwoot import AGENT, FakeChatwoot, WebhookDelivery, chatwoot_signature
from wahub.testing.fake_chatwoot_agent import API_USER

USER, PHONE = "15551234567", "+15551234567"
BOT_REPLY, HANDOFF_REPLY = "Hello from the bot!", "A person will answer."
ROUTER = {"rules": [{"match": {"keyword": "human"}, "handoff": HANDOFF_REPLY}], "default_reply": BOT_REPLY}


def entry(chatwoot: FakeChatwoot, **options: Any) -> dict[str, Any]:
    return {
        "platform": "chatwoot",
        "name": "cw",
        "api_base": chatwoot.api_base,
        "account_id": chatwoot.account_id,
        "inbox_id": chatwoot.inbox_id,
        "token": chatwoot.token,
        "webhook_secret": chatwoot.webhook_secret,
        **options,
    }


@asynccontextmanager
async def with_chatwoot(
    database_url: str, *, clock: Clock | None = None, fake: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[tuple[RunningDaemon, FakeChatwoot]]:
    chatwoot = await FakeChatwoot(**(fake or {})).start()
    try:
        raw = {
            "router": ROUTER,
            "wahub": {"api_tokens": [TOKEN]},
            # No pacing per recipient: the tests exchange more messages with one user than it lets through at once.
            "providers": [{"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET, "pair_limit": None}],
            "crm": [entry(chatwoot, **options)],
        }
        async with running_daemon(build_config(raw, database=database_url), clock=clock) as daemon:
            chatwoot.webhook_url = f"{daemon.url}/crm/cw/webhook"
            yield daemon, chatwoot
            chatwoot.webhook_url = None
    finally:
        await chatwoot.close()


async def sent(daemon: RunningDaemon) -> list[str]:
    """The texts the sandbox sent the user, in order."""
    rows = await daemon.hub.storage.messages.history("sandbox", USER, limit=1000)
    return [
        row["body"]["text"]["body"]
        for row in rows
        if row["direction"] == "out" and str(row["provider_message_id"] or "").startswith("sbx.out.")
    ]


def shown(chatwoot: FakeChatwoot) -> list[tuple[str, str]]:
    """The user's Chatwoot conversation as agents read it: (message type, content), notes left out."""
    conversation = chatwoot.conversation_of(PHONE)
    if conversation is None:
        return []
    return [(m["message_type"], m["content"]) for m in chatwoot.messages_in(conversation["id"]) if not m["private"]]


def conversation_id(chatwoot: FakeChatwoot) -> int:
    conversation = chatwoot.conversation_of(PHONE)
    assert conversation is not None
    return int(conversation["id"])


async def settled(daemon: RunningDaemon) -> bool:
    """Nothing left to deliver to Chatwoot, nothing left to send to the user."""
    pending, _ = await daemon.hub.storage.deliveries.listing(endpoint="cw", state="pending")
    rows = await daemon.hub.storage.messages.history("sandbox", USER, limit=1000)
    return not pending and all(row["status"] != "queued" for row in rows)


async def say(daemon: RunningDaemon, chatwoot: FakeChatwoot, text: str, answer: str | None = BOT_REPLY) -> None:
    """The user writes ``text``; returns once Chatwoot shows it and the bot's ``answer`` (None: no answer)."""
    before = shown(chatwoot)
    await daemon.post_sandbox([sandbox_message(text)])
    after = [*before, ("incoming", text), *([("outgoing", answer)] if answer is not None else [])]
    await wait_until(lambda: _shows(chatwoot, after))


async def _shows(chatwoot: FakeChatwoot, expected: list[tuple[str, str]]) -> bool:
    return shown(chatwoot) == expected


async def post_webhook(daemon: RunningDaemon, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{daemon.url}/crm/cw/webhook", data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_the_user_is_incoming_and_the_bot_outgoing_and_never_sent_back(database_url: str) -> None:
    async with with_chatwoot(database_url) as (daemon, chatwoot):
        await say(daemon, chatwoot, "hi")
        await wait_until(lambda: settled(daemon))

        assert await sent(daemon) == [BOT_REPLY]
        [contact] = chatwoot.contacts.values()
        assert contact["phone_number"] == PHONE
        contact_id = int(contact["identifier"].removeprefix("wahub:"))
        assert await daemon.hub.storage.deliveries.links("contact", contact_id) == {"cw": str(contact["id"])}
        posted = chatwoot.messages_in(conversation_id(chatwoot))
        assert all("wahub_message_id" in m["content_attributes"] for m in posted)
        echoes = [d for d in chatwoot.deliveries if d.event == "message_created"]
        assert [d.status for d in echoes] == [200, 200]
        assert all(d.answer["outcome"].startswith("ignored") for d in echoes)


async def test_an_agent_reply_reaches_the_user_once_even_delivered_twice(database_url: str) -> None:
    async with with_chatwoot(database_url) as (daemon, chatwoot):
        await say(daemon, chatwoot, "hi")
        reply = await chatwoot.agent_reply(conversation_id(chatwoot), "Ana here, how can I help?")
        first = delivery_of(chatwoot, reply["id"])
        assert first.answer == {"ok": True, "outcome": "sent"}
        again = await chatwoot.redeliver(first)
        await wait_until(lambda: settled(daemon))

        assert again.status == 200 and again.answer["outcome"].startswith("ignored")
        assert await sent(daemon) == [BOT_REPLY, "Ana here, how can I help?"]
        assert shown(chatwoot) == [
            ("incoming", "hi"),
            ("outgoing", BOT_REPLY),
            ("outgoing", "Ana here, how can I help?"),
        ]


async def test_an_agent_reply_with_a_numbered_message_type_is_sent(database_url: str) -> None:
    async with with_chatwoot(database_url) as (daemon, chatwoot):
        await say(daemon, chatwoot, "hi")
        cid = conversation_id(chatwoot)
        payload = {"id": 990001, "content": "numbered", "message_type": 1, "private": False, "sender": dict(AGENT)}
        delivery = await chatwoot.deliver_webhook("message_created", {**payload, "conversation": {"id": cid}})

        assert delivery.answer == {"ok": True, "outcome": "sent"}
        await wait_until(lambda: settled(daemon))
        assert await sent(daemon) == [BOT_REPLY, "numbered"]


@pytest.mark.parametrize("attributes", ["kept", "dropped"])
async def test_no_echo_loop_in_twenty_messages_back_and_forth(database_url: str, attributes: str) -> None:
    # "dropped": webhooks without content_attributes, so wahub's posts are known by their sender only.
    fake = {"webhook_content_attributes": attributes == "kept"}
    async with with_chatwoot(database_url, fake=fake) as (daemon, chatwoot):
        expected_chatwoot: list[tuple[str, str]] = []
        expected_sent: list[str] = []
        for turn in range(1, 11):
            # The bot answers until an agent does: from then on the conversation is a person's.
            bot = [BOT_REPLY] if turn == 1 else []
            await say(daemon, chatwoot, f"question {turn}", bot[0] if bot else None)
            await chatwoot.agent_reply(conversation_id(chatwoot), f"answer {turn}")
            expected_chatwoot += [
                ("incoming", f"question {turn}"),
                *[("outgoing", text) for text in bot],
                ("outgoing", f"answer {turn}"),
            ]
            expected_sent += [*bot, f"answer {turn}"]
            await wait_until(functools.partial(_sent_are, daemon, list(expected_sent)))
        await wait_until(lambda: settled(daemon))
        local = int(
            await daemon.hub.storage.deliveries.linked_to("cw", "conversation", str(conversation_id(chatwoot))) or 0
        )
        changes = [(c.change, c.actor) for c in await daemon.hub.storage.conversations.events(local)]

        assert await sent(daemon) == expected_sent  # the bot's one reply, ten agents' answers
        assert shown(chatwoot) == expected_chatwoot  # 21: each message once
        created = [d for d in chatwoot.deliveries if d.event == "message_created"]
        assert len(created) == 21 and all(d.status == 200 for d in created)
        if attributes == "dropped":
            assert all("content_attributes" not in json.loads(d.body) for d in created)
            own = [d for d in created if d.answer["outcome"] == "ignored: a message by the token's own user (wahub's)"]
            assert len(own) == 1  # the bot's reply; the user's messages are incoming
        assert changes == [("queued", "chatwoot:cw")]  # the first agent's answer took it from the bot
        assert len(chatwoot.conversations) == 1 and len(chatwoot.contacts) == 1
        assert [r.path for r in chatwoot.requests].count("/api/v1/profile") == 1  # read once


async def _sent_are(daemon: RunningDaemon, expected: list[str]) -> bool:
    return await sent(daemon) == expected


async def test_unsigned_forged_and_stale_webhooks_are_refused(database_url: str) -> None:
    async with with_chatwoot(database_url) as (daemon, chatwoot):
        await say(daemon, chatwoot, "hi")
        payload = {
            "event": "message_created",
            "id": 990002,
            "content": "forged",
            "message_type": "outgoing",
            "private": False,
            "sender": dict(AGENT),
            "conversation": {"id": conversation_id(chatwoot)},
        }
        body = json.dumps(payload).encode()
        now = str(int(time.time()))
        stale = str(int(time.time()) - 600)

        def signed(secret: str, stamp: str, signed_body: bytes = body) -> dict[str, str]:
            return {
                "X-Chatwoot-Signature": chatwoot_signature(secret, stamp, signed_body),
                "X-Chatwoot-Timestamp": stamp,
            }

        attempts = {
            "unsigned": {},
            "another secret": signed("not-the-secret", now),
            "stale": signed(chatwoot.webhook_secret, stale),
            "another body": signed(chatwoot.webhook_secret, now, body.replace(b"forged", b"honest")),
            "no timestamp": {"X-Chatwoot-Signature": chatwoot_signature(chatwoot.webhook_secret, now, body)},
            "a huge timestamp": signed(chatwoot.webhook_secret, "9" * 5000),
        }
        for what, headers in attempts.items():
            status, answer = await post_webhook(daemon, body, headers)
            assert (status, answer["error"]["code"]) == (401, "invalid_signature"), what
        await wait_until(lambda: settled(daemon))
        assert await sent(daemon) == [BOT_REPLY]
        assert await daemon.hub.storage.deliveries.linked_to("cw", "message", "990002") is None

        status, answer = await post_webhook(daemon, body, signed(chatwoot.webhook_secret, now))
        assert (status, answer["outcome"]) == (200, "sent")  # the same body, signed: it was the signature


async def test_what_is_not_an_agents_public_reply_is_never_sent(database_url: str) -> None:
    async with with_chatwoot(database_url) as (daemon, chatwoot):
        await say(daemon, chatwoot, "hi")
        cid = conversation_id(chatwoot)
        note = await chatwoot.agent_reply(cid, "internal: VIP customer", private=True)
        phone = await chatwoot.agent_reply(cid, "sent from the phone", sender=None)
        own = await chatwoot.agent_reply(cid, "written as wahub's own user", sender=API_USER)
        await wait_until(lambda: settled(daemon))

        assert delivery_of(chatwoot, note["id"]).answer["outcome"] == "ignored: a private note"
        assert delivery_of(chatwoot, phone["id"]).answer["outcome"] == "ignored: a message without a sender"
        assert delivery_of(chatwoot, own["id"]).answer["outcome"].startswith("ignored: a message by the token's own")
        assert await sent(daemon) == [BOT_REPLY]


def delivery_of(chatwoot: FakeChatwoot, message_id: int) -> WebhookDelivery:
    """The (first) ``message_created`` webhook delivery of a message."""
    return next(
        d for d in chatwoot.deliveries if d.event == "message_created" and json.loads(d.body)["id"] == message_id
    )


async def test_a_reply_after_the_window_closed_becomes_a_private_note(database_url: str) -> None:
    clock = ManualClock(time.time())
    async with with_chatwoot(database_url, clock=clock) as (daemon, chatwoot):
        await say(daemon, chatwoot, "hi")
        clock.advance(25 * 3600)
        cid = conversation_id(chatwoot)
        reply = delivery_of(chatwoot, (await chatwoot.agent_reply(cid, "sorry for the wait"))["id"])
        await chatwoot.redeliver(reply)
        await wait_until(lambda: settled(daemon))

        assert reply.answer["outcome"] == "refused: window_closed"
        notes = [m for m in chatwoot.messages_in(cid) if m["private"]]
        assert len(notes) == 1 and notes[0]["content"].startswith("Not sent to WhatsApp (window_closed)")
        assert await sent(daemon) == [BOT_REPLY]


async def test_resolving_in_chatwoot_resolves_in_wahub_and_back(database_url: str) -> None:
    async with with_chatwoot(database_url) as (daemon, chatwoot):
        await say(daemon, chatwoot, "human", HANDOFF_REPLY)
        cid = conversation_id(chatwoot)
        local = int(await daemon.hub.storage.deliveries.linked_to("cw", "conversation", str(cid)) or 0)
        await chatwoot.resolve(cid)
        await wait_until(lambda: _owner_is(daemon, local, "bot"))

        await say(daemon, chatwoot, "human", HANDOFF_REPLY)  # reopened in Chatwoot, handed off in wahub
        assert chatwoot.conversations[cid]["status"] == "open"
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{daemon.url}/api/v1/conversations/{local}/resolve", json={}, headers=AUTH) as response,
        ):
            assert response.status == 200
        await wait_until(lambda: _status_is(chatwoot, cid, "resolved"))
        await wait_until(lambda: settled(daemon))

        changes = [(c.change, c.actor) for c in await daemon.hub.storage.conversations.events(local)]
        assert changes.count(("resolved", "chatwoot:cw")) == 1 and changes.count(("resolved", "api")) == 1
        assert len([c for c in changes if c[0] == "resolved"]) == 2
        toggles = [r.json["status"] for r in chatwoot.requests if r.path.endswith("/toggle_status")]
        assert toggles == ["open", "resolved"]
        assert len(chatwoot.conversations) == 1


async def _owner_is(daemon: RunningDaemon, conversation: int, owner: str) -> bool:
    found = await daemon.hub.storage.conversations.get(conversation)
    return found is not None and found.owner == owner


async def _status_is(chatwoot: FakeChatwoot, conversation: int, status: str) -> bool:
    return chatwoot.conversations[conversation]["status"] == status


async def test_chatwoot_down_delays_no_reply_and_all_is_posted_once_after(database_url: str) -> None:
    clock = ManualClock(time.time())
    async with with_chatwoot(database_url, clock=clock) as (daemon, chatwoot):
        chatwoot.down = True
        for turn, text in enumerate(["one", "two", "three"], start=1):
            await daemon.post_sandbox([sandbox_message(text)])
            await wait_until(functools.partial(_sent_are, daemon, [BOT_REPLY] * turn))
        pending, _ = await daemon.hub.storage.deliveries.listing(endpoint="cw", state="pending")
        assert len(pending) == 6 and not chatwoot.conversations

        chatwoot.down = False
        clock.advance(10)  # past the first retry
        await wait_until(lambda: settled(daemon))

        expected = [pair for text in ["one", "two", "three"] for pair in [("incoming", text), ("outgoing", BOT_REPLY)]]
        assert shown(chatwoot) == expected  # in order, each once
        assert await sent(daemon) == [BOT_REPLY] * 3


async def test_a_429_is_retried_not_before_its_retry_after(database_url: str) -> None:
    clock = ManualClock(time.time())
    async with with_chatwoot(database_url, clock=clock) as (daemon, chatwoot):
        chatwoot.fail_next(429, retry_after=120)
        await daemon.post_sandbox([sandbox_message("hi")])
        waiting = await wait_until(lambda: _retrying(daemon))

        assert waiting["next_attempt_at"] >= clock.time() + 120 and waiting["last_status"] == 429
        clock.advance(130)
        await wait_until(lambda: _shows(chatwoot, [("incoming", "hi"), ("outgoing", BOT_REPLY)]))


async def _retrying(daemon: RunningDaemon) -> dict[str, Any] | None:
    pending, _ = await daemon.hub.storage.deliveries.listing(endpoint="cw", state="pending")
    return next((row for row in pending if row["attempts"]), None)


async def test_a_post_whose_answer_was_lost_is_not_posted_again(database_url: str) -> None:
    clock = ManualClock(time.time())
    async with with_chatwoot(database_url, clock=clock) as (daemon, chatwoot):
        await say(daemon, chatwoot, "hi")
        chatwoot.fail_next(502, processed=True)  # Chatwoot keeps the message, its answer is lost
        await daemon.post_sandbox([sandbox_message("again")])
        await wait_until(lambda: _retrying(daemon))
        clock.advance(10)
        await wait_until(lambda: settled(daemon))

        assert shown(chatwoot) == [
            ("incoming", "hi"),
            ("outgoing", BOT_REPLY),
            ("incoming", "again"),
            ("outgoing", BOT_REPLY),
        ]
        assert [r.method for r in chatwoot.requests if r.path.endswith("/messages")][-3:] == ["POST", "GET", "POST"]


async def test_a_conversation_deleted_in_chatwoot_is_opened_again(database_url: str) -> None:
    clock = ManualClock(time.time())
    async with with_chatwoot(database_url, clock=clock) as (daemon, chatwoot):
        await say(daemon, chatwoot, "hi")
        deleted = conversation_id(chatwoot)
        del chatwoot.conversations[deleted]
        await daemon.post_sandbox([sandbox_message("still there?")])
        await wait_until(lambda: _retrying(daemon))
        clock.advance(10)
        await wait_until(lambda: settled(daemon))

        assert conversation_id(chatwoot) != deleted
        assert shown(chatwoot) == [("incoming", "still there?"), ("outgoing", BOT_REPLY)]


async def test_a_contact_already_in_chatwoot_is_found_and_added_to_the_inbox(database_url: str) -> None:
    async with with_chatwoot(database_url) as (daemon, chatwoot):
        url = f"{chatwoot.api_base}/api/v1/accounts/{chatwoot.account_id}/contacts"
        headers = {"api_access_token": chatwoot.token}
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, json={"name": "Ana", "phone_number": PHONE}, headers=headers) as response,
        ):
            existing = (await response.json())["payload"]["contact"]
        await say(daemon, chatwoot, "hi")

        assert list(chatwoot.contacts) == [existing["id"]]
        assert chatwoot.conversations[conversation_id(chatwoot)]["contact_id"] == existing["id"]
        assert [r.path.rsplit("/", 1)[-1] for r in chatwoot.requests[1:5]] == [
            "contacts",
            "search",
            "contact_inboxes",
            "conversations",
        ]


async def test_the_options_keep_bot_replies_and_resolves_on_one_side(database_url: str) -> None:
    async with with_chatwoot(database_url, post_bot_replies=False, resolve_in_wahub=False) as (daemon, chatwoot):
        await daemon.post_sandbox([sandbox_message("human")])
        await wait_until(lambda: _shows(chatwoot, [("incoming", "human")]))
        cid = conversation_id(chatwoot)
        local = int(await daemon.hub.storage.deliveries.linked_to("cw", "conversation", str(cid)) or 0)
        await chatwoot.resolve(cid)
        await wait_until(lambda: settled(daemon))

        [status_change] = [d for d in chatwoot.deliveries if d.event == "conversation_status_changed"]
        assert status_change.answer["outcome"] == "noted: resolved"
        assert await _owner_is(daemon, local, "queued")
        assert await sent(daemon) == [HANDOFF_REPLY]
        assert shown(chatwoot) == [("incoming", "human")]


async def test_a_wrong_token_is_retried(database_url: str) -> None:
    async with with_chatwoot(database_url, token="not-the-token") as (daemon, chatwoot):
        chatwoot.fail_next(429, retry_after=120)  # met only once the token is right, as in Chatwoot
        await daemon.post_sandbox([sandbox_message("hi")])
        waiting = await wait_until(lambda: _retrying(daemon))
        assert waiting["last_status"] == 401 and "Invalid Access Token" in waiting["last_error"]
        assert not chatwoot.contacts


async def test_the_fake_checks_the_token_before_its_faults_and_knows_its_user() -> None:
    chatwoot = await FakeChatwoot().start()
    try:
        chatwoot.fail_next(503)
        async with aiohttp.ClientSession() as http:

            async def get(path: str, token: str) -> tuple[int, Any]:
                url = f"{chatwoot.api_base}{path}"
                async with http.get(url, headers={"api_access_token": token}) as response:
                    return response.status, await response.json(content_type=None)

            refused = await get("/api/v1/profile", "not-the-token")
            failed = await get("/api/v1/profile", chatwoot.token)
            profile = await get("/api/v1/profile", chatwoot.token)
    finally:
        await chatwoot.close()

    assert refused == (401, {"error": "Invalid Access Token"})
    assert failed[0] == 503
    assert profile[0] == 200 and (profile[1]["id"], profile[1]["type"]) == (API_USER["id"], "user")


async def test_an_inbox_that_is_not_an_api_channel_is_given_up_with_the_reason(database_url: str) -> None:
    async with with_chatwoot(database_url, inbox_id=2) as (daemon, chatwoot):
        await daemon.post_sandbox([sandbox_message("hi")])
        failed = await wait_until(lambda: _failed(daemon))
        assert failed["last_status"] == 422 and "not an API channel" in failed["last_error"]
        await wait_until(functools.partial(_sent_are, daemon, [BOT_REPLY]))  # the bot answers all the same
        assert not chatwoot.contacts


async def _failed(daemon: RunningDaemon) -> dict[str, Any] | None:
    rows, _ = await daemon.hub.storage.deliveries.listing(endpoint="cw", state="failed")
    return rows[0] if rows else None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"webhook_secret": None}, "webhook_secret"),
        ({"api_base": "app.chatwoot.com"}, "expected Chatwoot's base URL"),
        ({"inbox_id": 0}, "expected a Chatwoot id"),
        ({"token": ""}, "token"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_key(sqlite_url: str, change: dict[str, Any], problem: str) -> None:
    chatwoot = FakeChatwoot(url="http://127.0.0.1:9")
    broken = {key: value for key, value in {**entry(chatwoot), **change}.items() if value is not None}

    with pytest.raises(ConfigError) as caught:
        build_config({"crm": [broken]}, database=sqlite_url)

    assert problem in str(caught.value)


def test_media_and_places_are_shown_as_text() -> None:
    contact = CRMContact(1, "sandbox", USER, PHONE)

    def message(kind: str, body: dict[str, Any], text: str = "") -> CRMMessage:
        return CRMMessage(1, "in", kind, text, body, None, 1, "2026-12-01T09:00:00Z", contact)

    assert chatwoot_content(message("image", {"image": {"caption": "a cake"}}, "a cake")) == "[image] a cake"
    assert chatwoot_content(message("audio", {"audio": {}})) == "[audio]"
    place = {"location": {"latitude": 38.7, "longitude": -9.1, "name": "Padaria Sol"}}
    assert chatwoot_content(message("location", place)) == "[location] Padaria Sol (38.7, -9.1)"
    assert chatwoot_content(message("text", {"text": {"body": "hi"}}, "hi")) == "hi"
