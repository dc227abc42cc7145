"""The Zendesk backend against the fake Zendesk, over real HTTP, with the whole
daemon on SQLite and PostgreSQL: a hand-off opens one ticket, the user's
messages become its comments, agents' replies (signed webhooks) reach the
user once, the window and the template field are honoured, and a solve on
either side resolves the other."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from wahub.core.config.schema import ConfigError
from wahub.core.conversations.ownership import change_owner
from wahub.core.storage.events import message_text
from wahub.plugins.crm.desk import TemplateChoice
from wahub.plugins.crm.signing import iso_or_unix_seconds, unix_seconds
from wahub.plugins.crm.zendesk_webhook import SIGNATURE, template_choice
from wahub.testing import (
    TEST_SECRET,
    ManualClock,
    RunningDaemon,
    build_config,
    running_daemon,
    sandbox_message,
    wait_until,
)
from wahub.testing.fake_zendesk import FakeZendesk, signed_headers

USER, OTHER = "15551234567", "15557654321"
TEMPLATE_FIELD = 360001
TEMPLATES = [{"name": "ticket_update", "language": "en", "text": "Hello {{1}}, news about request {{2}}."}]


def _config(database_url: str, zendesk: FakeZendesk, **entry: Any) -> dict[str, Any]:
    raw = {
        "providers": [{"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET, "templates": TEMPLATES}],
        "router": {
            "rules": [{"match": {"keyword": "human"}, "handoff": "A person will answer."}],
            "default_reply": "Hello from the bot!",
        },
        # The tests move the clock by days: nothing goes back to the bot on its own.
        "conversations": {"return_to_bot_after": None},
        "crm": [
            {
                "platform": "zendesk",
                "name": "zendesk",
                "api_base": zendesk.url,
                "email": zendesk.email,
                "api_token": zendesk.api_token,
                "webhook_secret": zendesk.webhook_secret,
                "template_field": TEMPLATE_FIELD,
                **entry,
            }
        ],
    }
    return build_config(raw, database=database_url)


@dataclass
class Desk:
    daemon: RunningDaemon
    zendesk: FakeZendesk
    clock: ManualClock

    async def say(self, text: str, *, sender: str = USER, written_at: float | None = None) -> None:
        """The user writes ``text``, stamped by the daemon's clock (or ``written_at``), as its changes are."""
        message = sandbox_message(text, sender=sender)
        message["timestamp"] = self.clock.time() if written_at is None else written_at
        await self.daemon.post_sandbox([message])

    async def hand_off(self, *, sender: str = USER) -> int:
        """The user asks for a person; returns the ticket's id once it is open."""
        await self.say("hi, my order is late", sender=sender)
        await self.say("human", sender=sender)
        return int(await wait_until(self.ticket_of(sender)))

    def ticket_of(self, sender: str) -> Any:
        async def found() -> int | None:
            conversation_id = await self.conversation_id(sender)
            link = await self.daemon.hub.storage.deliveries.linked("zendesk", "ticket", conversation_id or 0)
            return None if link is None else int(link[0])

        return found

    async def conversation_id(self, sender: str = USER) -> int | None:
        page = await self.daemon.hub.storage.conversations.list(limit=10)
        return next((item["id"] for item in page.items if item["address"] == sender), None)

    async def sent(self, sender: str = USER) -> list[tuple[str, str, str]]:
        """``(type, text, status)`` of each message sent to ``sender``, oldest first."""
        conversation_id = await self.conversation_id(sender)
        page = await self.daemon.hub.storage.conversations.messages(conversation_id or 0, limit=200)
        rows = [row for row in reversed(page.items) if row["direction"] == "out"]
        return [(row["type"], message_text(row["type"], row["body"] or {}), row["status"]) for row in rows]

    async def sent_text(self, text: str, sender: str = USER) -> list[str]:
        """The statuses of the messages with ``text`` sent to ``sender``."""
        return [status for _, body, status in await self.sent(sender) if body == text]

    async def owner(self, sender: str = USER) -> str:
        conversation = await self.daemon.hub.storage.conversations.get(await self.conversation_id(sender) or 0)
        assert conversation is not None
        return str(conversation.owner)


@asynccontextmanager
async def desk(database_url: str, *, fake: dict[str, Any] | None = None, **entry: Any) -> AsyncIterator[Desk]:
    zendesk = await FakeZendesk(**(fake or {})).start()
    # An hour ahead of the real time: changes stamped with the real time (a
    # webhook stored) are due at once, and the user's window is still open.
    clock = ManualClock(time.time() + 3600)
    try:
        async with running_daemon(_config(database_url, zendesk, **entry), clock=clock) as daemon:
            zendesk.webhook_url = f"{daemon.url}/crm/zendesk/webhook"
            yield Desk(daemon, zendesk, clock)
    finally:
        await zendesk.close()


def _delivered(statuses: list[str]) -> bool:
    return bool(statuses) and all(status in ("sent", "delivered", "read") for status in statuses)


# -- wahub to Zendesk ------------------------------------------------------------------


async def test_a_handoff_opens_one_ticket_and_the_users_next_message_is_a_comment(database_url: str) -> None:
    async with desk(database_url) as d:
        ticket_id = await d.hand_off()
        zendesk = d.zendesk
        [ticket] = zendesk.tickets.values()
        requester = zendesk.users[ticket["requester_id"]]
        conversation_id = await d.conversation_id()
        assert requester["phone"] == "+" + USER and requester["external_id"].startswith("wahub:")
        assert ticket["external_id"].startswith(f"wahub:conversation:{conversation_id}:")
        assert ticket["tags"] == ["whatsapp"] and ticket["subject"] == "WhatsApp: Test User"
        [transcript] = zendesk.comments[ticket_id]
        assert not transcript["public"] and transcript["author_id"] == zendesk.api_user
        assert "Test User: hi, my order is late" in transcript["body"] and "Test User: human" in transcript["body"]
        links = await d.daemon.hub.storage.deliveries.links("contact", requester["external_id"].split(":")[1])
        assert links == {"zendesk": str(requester["id"])}

        await d.say("it was due on Monday")
        await wait_until(soon(lambda: len(zendesk.public_comments(ticket_id)) == 1))
        [comment] = zendesk.public_comments(ticket_id)
        text, marker = comment["body"].split("\n\n")
        assert text == "it was due on Monday" and comment["author_id"] == requester["id"]
        assert marker.startswith("[wahub message ") and marker.endswith("]")
        assert len(zendesk.tickets) == 1 and await d.owner() == "queued"


@pytest.mark.parametrize("applied", [False, True], ids=["refused", "answer-lost"])
async def test_a_ticket_create_that_failed_is_retried_into_one_ticket(database_url: str, applied: bool) -> None:
    async with desk(database_url) as d:
        d.zendesk.fail_next(500, applied=applied, match="POST /api/v2/tickets.json")
        await d.say("human")
        await wait_until(
            soon(lambda: any(r.method == "POST" and r.path == "/api/v2/tickets.json" for r in d.zendesk.requests))
        )
        await wait_until(lambda: _pending(d, attempts=1))  # its retry is due 5 s after the failure was stored
        d.clock.advance(6)
        await wait_until(d.ticket_of(USER))
        assert len(d.zendesk.tickets) == 1
        # The retry looked the ticket up by its external id before creating again.
        lookups = [r for r in d.zendesk.requests if r.method == "GET" and r.path == "/api/v2/tickets.json"]
        assert len(lookups) == 2 and lookups[0].query["external_id"].startswith("wahub:conversation:")


async def test_a_rate_limited_comment_waits_for_retry_after_and_is_added_once(database_url: str) -> None:
    async with desk(database_url) as d:
        ticket_id = await d.hand_off()
        d.zendesk.fail_next(429, retry_after=120, match=f"PUT /api/v2/tickets/{ticket_id}.json")
        await d.say("are you there?")

        async def waiting_two_minutes() -> bool:
            rows, _ = await d.daemon.hub.storage.deliveries.listing(endpoint="zendesk", state="pending")
            return any(row["last_status"] == 429 and row["next_attempt_at"] >= d.clock.time() + 110 for row in rows)

        await wait_until(waiting_two_minutes)
        d.clock.advance(121)
        await wait_until(soon(lambda: len(d.zendesk.public_comments(ticket_id)) == 1))
        assert d.zendesk.public_comments(ticket_id)[0]["body"].startswith("are you there?\n\n[wahub message ")


async def test_a_comment_whose_answer_was_lost_is_not_added_again(database_url: str) -> None:
    async with desk(database_url) as d:
        ticket_id = await d.hand_off()
        d.zendesk.fail_next(500, applied=True, match=f"PUT /api/v2/tickets/{ticket_id}.json")
        await d.say("are you there?")
        await wait_until(soon(lambda: len(d.zendesk.public_comments(ticket_id)) == 1))
        await wait_until(lambda: _pending(d, attempts=1))
        d.clock.advance(6)  # past the first retry's 5 s
        await wait_until(lambda: _pending(d, attempts=None))
        await d.say("and now?")
        await wait_until(soon(lambda: len(d.zendesk.public_comments(ticket_id)) == 2))
        await wait_until(lambda: _pending(d, attempts=None))

        first, second = (c["body"] for c in d.zendesk.public_comments(ticket_id))
        assert first.startswith("are you there?\n\n") and second.startswith("and now?\n\n")
        # The retry looked among the latest comments, found the message's line, and added nothing.
        reads = [r for r in d.zendesk.requests if r.path == f"/api/v2/tickets/{ticket_id}/comments.json"]
        puts = [r for r in d.zendesk.requests if r.method == "PUT"]
        assert len(reads) == 1 and len(puts) == 2


async def test_messages_written_while_the_ticket_opens_are_in_it_once(database_url: str) -> None:
    async with desk(database_url) as d:
        await d.say("hi, my order is late")
        d.zendesk.hold()
        await d.say("human")
        await wait_until(soon(lambda: d.zendesk.waiting > 0))  # the ticket waits on Zendesk
        await d.say("written before the hand-off, arriving late", written_at=d.clock.time() - 60)
        await d.say("written after the hand-off", written_at=d.clock.time() + 60)
        await wait_until(lambda: _stored(d, "written before the hand-off, arriving late", "written after the hand-off"))
        d.zendesk.release()
        ticket_id = int(await wait_until(d.ticket_of(USER)))
        await wait_until(soon(lambda: len(d.zendesk.public_comments(ticket_id)) == 1))
        await wait_until(lambda: _pending(d, attempts=None))

        transcript, comment = d.zendesk.comments[ticket_id]
        bodies = [transcript["body"], comment["body"]]
        assert sum("written before the hand-off" in body for body in bodies) == 1
        assert "written before the hand-off" in transcript["body"]
        assert sum("written after the hand-off" in body for body in bodies) == 1
        assert comment["body"].startswith("written after the hand-off\n\n")


async def test_a_second_handoff_opens_a_ticket_with_its_own_session(database_url: str) -> None:
    async with desk(database_url) as d:
        first = await d.hand_off()
        conversation_id = await d.conversation_id()
        assert conversation_id is not None
        d.clock.advance(60)
        await change_owner(d.daemon.hub, conversation_id, "resolved", actor="operator:ana", reason="order found")
        await wait_until(lambda: _unlinked(d))
        d.clock.advance(60)
        await d.say("a new question")
        await d.say("human")
        second = await wait_until(_moved(d, first))

        [transcript] = d.zendesk.comments[second]
        assert "Test User: a new question" in transcript["body"] and "Test User: human" in transcript["body"]
        assert "my order is late" not in transcript["body"]  # the first session's, in the first ticket
        assert "my order is late" in d.zendesk.comments[first][0]["body"]


@pytest.mark.parametrize("refusal", ["closed", "full"])
async def test_a_ticket_that_takes_no_more_comments_gets_a_follow_up(database_url: str, refusal: str) -> None:
    async with desk(database_url) as d:
        first = await d.hand_off()
        if refusal == "closed":
            d.zendesk.set_status(first, "closed")
        else:
            d.zendesk.fill(first)
        await d.say("one more thing")
        second = await wait_until(_moved(d, first))
        ticket = d.zendesk.tickets[second]
        assert len(d.zendesk.tickets) == 2
        assert d.zendesk.public_comments(second)[0]["body"].startswith("one more thing\n\n[wahub message ")
        assert ticket["requester_id"] == d.zendesk.tickets[first]["requester_id"]
        if refusal == "closed":
            assert ticket["via_followup_source_id"] == first


async def test_resolving_in_wahub_solves_the_ticket(database_url: str) -> None:
    async with desk(database_url) as d:
        ticket_id = await d.hand_off()
        hub = d.daemon.hub
        conversation_id = await d.conversation_id()
        assert conversation_id is not None
        await change_owner(hub, conversation_id, "resolved", actor="operator:ana", reason="order found")
        await wait_until(soon(lambda: d.zendesk.tickets[ticket_id]["status"] == "solved"))
        note = d.zendesk.private_comments(ticket_id)[-1]
        assert note["body"] == "Resolved in wahub by operator:ana: order found."
        assert d.zendesk.tickets[ticket_id]["assignee_id"] == d.zendesk.api_user
        await wait_until(lambda: _unlinked(d))


async def test_zendesk_down_does_not_delay_the_bots_replies(database_url: str) -> None:
    async with desk(database_url, timeout=30) as d:
        d.zendesk.hold()
        await d.say("human")
        await wait_until(soon(lambda: d.zendesk.waiting > 0))
        await d.say("hello", sender=OTHER)
        await wait_until(lambda: _sent(d, "Hello from the bot!", sender=OTHER))
        # The other user was answered while the hand-off's ticket still waits on Zendesk.
        assert not d.zendesk.tickets and d.zendesk.waiting > 0
        rows, _ = await d.daemon.hub.storage.deliveries.listing(endpoint="zendesk", state="pending")
        assert [row["type"] for row in rows] == ["conversation.queued"]
        d.zendesk.release()
        await wait_until(d.ticket_of(USER))
        assert len(d.zendesk.tickets) == 1


# -- Zendesk to wahub ------------------------------------------------------------------


async def test_an_agents_reply_reaches_the_user_once(database_url: str) -> None:
    async with desk(database_url) as d:
        ticket_id = await d.hand_off()
        await d.zendesk.agent_reply(ticket_id, "We found your order, it ships today.")
        first = d.zendesk.webhooks[-1]
        assert first.status == 200 and first.body["replies"] == 1
        await wait_until(lambda: _sent(d, "We found your order, it ships today."))
        again = await d.zendesk.resend_last_webhook()
        assert again.status == 200 and again.body["replies"] == 0
        await d.zendesk.post_webhook({"type": "comment", "ticket_id": ticket_id})
        assert await d.sent_text("We found your order, it ships today.") == ["sent"]
        # Private notes, the transcript and the user's own comments are not sent.
        await d.zendesk.agent_reply(ticket_id, "internal: check the warehouse", public=False)
        assert d.zendesk.webhooks[-1].body["replies"] == 0
        assert await d.sent_text("internal: check the warehouse") == []
        assert await d.owner() == "queued"


async def test_webhooks_for_wahubs_own_comments_send_nothing_to_the_user(database_url: str) -> None:
    # A comment trigger without the "Update via is not Web service (API)" condition.
    async with desk(database_url, fake={"notify_api_comments": True}) as d:
        ticket_id = await d.hand_off()  # the transcript: a comment wahub adds
        await d.say("it was due on Monday")
        await d.say("and it is Friday")
        await wait_until(soon(lambda: len(d.zendesk.public_comments(ticket_id)) == 2))
        await wait_until(soon(lambda: len(d.zendesk.webhooks) == 3))
        # (the first may come before the ticket is linked: then it is ignored)
        assert [(w.status, w.body.get("replies", 0)) for w in d.zendesk.webhooks] == [(200, 0)] * 3
        await d.zendesk.agent_reply(ticket_id, "It ships today.")  # an agent's still goes, once
        await wait_until(lambda: _sent(d, "It ships today."))
        conversation_id = await d.conversation_id()
        assert conversation_id is not None
        await change_owner(d.daemon.hub, conversation_id, "resolved", actor="operator:ana", reason="done")
        await wait_until(soon(lambda: len(d.zendesk.webhooks) == 5))  # and the note solving the ticket
        await wait_until(lambda: _pending(d, attempts=None))

        assert all(w.status == 200 and w.body.get("replies", 0) == 0 for w in d.zendesk.webhooks[4:])
        texts = [text for _, text, _ in await d.sent()]
        assert texts == ["Hello from the bot!", "A person will answer.", "It ships today."]
        assert await d.owner() == "bot" and len(d.zendesk.tickets) == 1  # solved once, not handed off again


@pytest.mark.parametrize(
    "forgery", ["wrong secret", "no signature", "stale timestamp", "huge timestamp", "altered body"]
)
async def test_an_unsigned_or_stale_webhook_is_refused_and_nothing_is_done(database_url: str, forgery: str) -> None:
    async with desk(database_url) as d:
        ticket_id = await d.hand_off()
        await d.zendesk.agent_reply(ticket_id, "Forged or not?", notify=False)
        body = {"type": "comment", "ticket_id": str(ticket_id)}
        calls = len(d.zendesk.requests)
        if forgery == "wrong secret":
            answer = await d.zendesk.post_webhook(body, secret="not-the-secret")
        elif forgery == "no signature":
            answer = await d.zendesk.post_webhook(body, headers={"Content-Type": "application/json"})
        elif forgery == "stale timestamp":
            answer = await d.zendesk.post_webhook(body, timestamp="2020-01-01T00:00:00Z")
        elif forgery == "huge timestamp":
            answer = await d.zendesk.post_webhook(body, timestamp="9" * 5000)
        else:
            headers = signed_headers(d.zendesk.webhook_secret, b'{"type": "comment", "ticket_id": "2"}')
            answer = await d.zendesk.post_webhook(body, headers=headers)
        assert answer.status == 401 and answer.body["error"]["code"] == "invalid_signature"
        assert len(d.zendesk.requests) == calls  # Zendesk was not even asked
        assert await d.sent_text("Forged or not?") == []
        # The same notice, signed, goes through.
        assert (await d.zendesk.post_webhook(body)).status == 200
        await wait_until(lambda: _sent(d, "Forged or not?"))


async def test_a_closed_window_sends_the_template_the_agent_chose(database_url: str) -> None:
    async with desk(database_url) as d:
        ticket_id = await d.hand_off()
        d.clock.advance(25 * 3600)
        d.zendesk.set_field(ticket_id, TEMPLATE_FIELD, "ticket_update:en|Test User|#42")
        await d.zendesk.agent_reply(ticket_id, "Your order ships today.")
        assert d.zendesk.webhooks[-1].body["replies"] == 1
        sent = await wait_until(lambda: _templates(d))
        assert sent == [("template", "[template ticket_update]")]
        assert await d.sent_text("Your order ships today.") == []
        note = d.zendesk.private_comments(ticket_id)[-1]["body"]
        assert "24-hour window is closed" in note and "ticket_update (en)" in note


@pytest.mark.parametrize("field", [None, "Not A Template!"], ids=["no-template", "unreadable-template"])
async def test_a_closed_window_without_a_template_leaves_a_note(database_url: str, field: str | None) -> None:
    async with desk(database_url) as d:
        ticket_id = await d.hand_off()
        d.clock.advance(25 * 3600)
        if field is not None:
            d.zendesk.set_field(ticket_id, TEMPLATE_FIELD, field)
        await d.zendesk.agent_reply(ticket_id, "Your order ships today.")
        assert d.zendesk.webhooks[-1].status == 200 and d.zendesk.webhooks[-1].body["replies"] == 0
        note = d.zendesk.private_comments(ticket_id)[-1]["body"]
        assert note.startswith("Not sent to the WhatsApp user (window_closed)")
        if field is not None:
            assert "The template field could not be read" in note
        assert await d.sent_text("Your order ships today.") == []
        assert all(kind == "text" for kind, _, _ in await d.sent())  # the bot's replies only
        await d.zendesk.resend_last_webhook()
        assert len(d.zendesk.private_comments(ticket_id)) == 2  # the transcript and one note


async def test_solving_the_ticket_resolves_the_conversation(database_url: str) -> None:
    async with desk(database_url) as d:
        ticket_id = await d.hand_off()
        await d.zendesk.agent_reply(ticket_id, "Done, it ships today.", notify=False)
        await d.zendesk.solve(ticket_id)
        answer = d.zendesk.webhooks[-1]
        assert answer.status == 200 and answer.body["resolved"] is True and answer.body["replies"] == 1
        assert await d.owner() == "bot"
        assert await d.ticket_of(USER)() is None
        await wait_until(lambda: _sent(d, "Done, it ships today."))
        # The bot answers again, and the solved ticket hears nothing more from wahub.
        puts = sum(r.method == "PUT" for r in d.zendesk.requests)
        await d.say("thanks")
        await wait_until(lambda: _sent(d, "Hello from the bot!"))
        assert sum(r.method == "PUT" for r in d.zendesk.requests) == puts
        assert d.zendesk.tickets[ticket_id]["status"] == "solved"


async def test_a_webhook_while_zendesk_fails_answers_503_and_a_retry_catches_up(database_url: str) -> None:
    async with desk(database_url) as d:
        ticket_id = await d.hand_off()
        d.zendesk.fail_next(503, match=f"GET /api/v2/tickets/{ticket_id}")
        await d.zendesk.agent_reply(ticket_id, "Sorry for the wait.")
        failed = d.zendesk.webhooks[-1]
        assert failed.status == 503 and failed.body["error"]["code"] == "zendesk_unavailable"
        assert await d.sent_text("Sorry for the wait.") == []
        assert (await d.zendesk.resend_last_webhook()).status == 200
        await wait_until(lambda: _sent(d, "Sorry for the wait."))


async def test_a_webhook_for_an_unknown_ticket_or_a_bad_body(database_url: str) -> None:
    async with desk(database_url) as d:
        unknown = await d.zendesk.post_webhook({"type": "comment", "ticket_id": "999"})
        assert unknown.status == 200 and "not linked" in unknown.body["ignored"]
        bad = await d.zendesk.post_webhook({"type": "created", "ticket_id": "1"})
        assert bad.status == 400 and "'type' must be one of comment, solved" in bad.body["error"]["message"]


async def test_a_wrong_api_token_is_retried_and_opens_no_ticket(database_url: str) -> None:
    async with desk(database_url, api_token="not-the-token") as d:
        await d.say("human")

        async def refused() -> bool:
            rows, _ = await d.daemon.hub.storage.deliveries.listing(endpoint="zendesk", state="pending")
            return any(row["type"] == "conversation.queued" and row["last_status"] == 401 for row in rows)

        await wait_until(refused)
        assert not d.zendesk.tickets and not await d.ticket_of(USER)()


# -- the formats ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("order_update", TemplateChoice("order_update", "pt", ())),
        ("order_update:en_US", TemplateChoice("order_update", "en_US", ())),
        (" order_update : en | Ana | #4411 ", TemplateChoice("order_update", "en", ("Ana", "#4411"))),
        ("order_update|Ana", TemplateChoice("order_update", "pt", ("Ana",))),
    ],
)
def test_the_template_field_names_a_template_its_language_and_parameters(value: str, expected: TemplateChoice) -> None:
    assert template_choice(value, language="pt") == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [("Order Update", "is not a template name"), ("order:english!", "is not a language code"), ("order||x", "empty")],
)
def test_an_unreadable_template_field_says_why(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        template_choice(value, language="en")


def test_signature_timestamps_are_read_in_iso_8601_or_unix_seconds() -> None:
    assert iso_or_unix_seconds("2026-12-01T09:30:00Z") == iso_or_unix_seconds("1796117400") == 1796117400.0
    assert iso_or_unix_seconds("1796117400000") == 1796117400.0 and iso_or_unix_seconds("yesterday") is None
    assert iso_or_unix_seconds("9" * 5000) is None and unix_seconds("9" * 5000) is None
    body, now = b'{"type": "solved", "ticket_id": 7}', time.time()
    headers = signed_headers("secret", body, timestamp=str(int(now)))
    assert SIGNATURE.problem("secret", headers, body, now=now) is None
    assert "minutes from now" in str(SIGNATURE.problem("secret", headers, body, now=now + 301))
    stale = signed_headers("secret", body, timestamp="2020-01-01T00:00:00Z")
    assert "minutes from now" in str(SIGNATURE.problem("secret", stale, body))  # the real time by default
    assert SIGNATURE.problem("secret", headers, body + b" ", now=now) == (
        "X-Zendesk-Webhook-Signature does not match the body (check the entry's webhook_secret: "
        "the webhook's signing secret in Zendesk)"
    )


# -- configuration ---------------------------------------------------------------------


def test_an_entry_needs_a_subdomain_or_an_api_base(tmp_path: Any) -> None:
    entry = {"platform": "zendesk", "name": "zd", "email": "a@example.com", "api_token": "t", "webhook_secret": "s"}
    with pytest.raises(ConfigError) as caught:
        build_config({"crm": [entry]}, database=f"sqlite:///{tmp_path / 'w.db'}")
    assert "crm[0]: required key 'subdomain' is missing" in str(caught.value)
    config = build_config({"crm": [{**entry, "subdomain": "acme"}]}, database=f"sqlite:///{tmp_path / 'w.db'}")
    [zd] = config["crm"]
    assert zd["tags"] == ["whatsapp"] and zd["timeout"] == 15
    with pytest.raises(ConfigError) as caught:
        build_config(
            {"crm": [{**entry, "subdomain": "acme", "api_tokn": "x"}]}, database=f"sqlite:///{tmp_path / 'w.db'}"
        )
    assert "api_tokn" in str(caught.value) and "api_token" in str(caught.value)


def soon(check: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """``check`` as a condition for ``wait_until``."""

    async def condition() -> Any:
        return check()

    return condition


def _moved(d: Desk, first: int) -> Callable[[], Awaitable[int | None]]:
    """The ticket the conversation is linked to, once it is not ``first``."""

    async def condition() -> int | None:
        now = await d.ticket_of(USER)()
        return now if now not in (None, first) else None

    return condition


async def _stored(d: Desk, *texts: str) -> bool:
    """Whether the user's messages with ``texts`` are stored (the webhook's 200 comes before)."""
    conversation_id = await d.conversation_id()
    page = await d.daemon.hub.storage.conversations.messages(conversation_id or 0, limit=200)
    have = {message_text(row["type"], row["body"] or {}) for row in page.items if row["direction"] == "in"}
    return set(texts) <= have


async def _pending(d: Desk, *, attempts: int | None) -> bool:
    """With ``attempts``: a delivery waits after that many failed tries; with None: none waits."""
    rows, _ = await d.daemon.hub.storage.deliveries.listing(endpoint="zendesk", state="pending")
    return not rows if attempts is None else any(row["attempts"] >= attempts for row in rows)


async def _unlinked(d: Desk) -> bool:
    return await d.ticket_of(USER)() is None


async def _sent(d: Desk, text: str, *, sender: str = USER) -> bool:
    return _delivered(await d.sent_text(text, sender=sender))


async def _templates(d: Desk) -> list[tuple[str, str]] | None:
    found = [(kind, text) for kind, text, status in await d.sent() if kind == "template" and _delivered([status])]
    return found or None
