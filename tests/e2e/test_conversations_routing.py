"""Acceptance tests of conversations over real HTTP, on SQLite and PostgreSQL:
who answers (rules, the FAQ, a model, a person), in which language, when the
bot falls silent and when it speaks again. Users write through signed webhooks
(the sandbox's, or Meta's from the fake Graph API), operators through the REST
API, and the model is the fake OpenAI-compatible server; what is checked is
what a user, an operator or the model sees."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conversations_kit import (
    MULTILINGUAL,
    QUICK,
    USER,
    TurnRecorder,
    closed_around_today,
    events_of,
    meta_echo,
    running_chat,
)
from tests.e2e.daemon import REPO, free_port
from tests.e2e.offline import can_isolate, start_isolated
from tests.e2e.test_daemon import rows
from wahub.chat_text import whatsapp_lines
from wahub.core.conversations.ownership import return_quiet_conversations
from wahub.testing import ManualClock, sandbox_echo, sandbox_message, wait_until
from wahub.testing.fake_graph import FakeGraphServer
from wahub.testing.fake_openai import FakeOpenAIServer, text

MODEL_KEY = "sk-test-0123456789"
#: The date a note to the model starts with.
DATED = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d UTC\] ")
RULES: dict[str, Any] = {
    "rules": [
        {"match": {"keyword": ["hi", "hello"]}, "reply": "Hello! How can I help?"},
        {"match": {"keyword": ["operator", "human"]}, "handoff": "Connecting you with a person."},
    ],
    "default_reply": "Sorry, I did not understand.",
}


# -- 1. a person answering from the business app silences the bot ----------------------------------------------


async def test_an_echo_from_the_business_app_silences_the_bot_until_resolved(database_url: str) -> None:
    async with running_chat(database_url, {"conversations": QUICK, "router": RULES}) as chat:
        await chat.say("hi")
        assert await chat.sent_texts(1) == ["Hello! How can I help?"]

        await chat.post([sandbox_echo("Hi Ana, it's Marta from the shop. Your order is ready.", recipient=USER)])
        await chat.handled()
        conversation = await chat.conversation()
        assert conversation["owner"] == "phone"
        assert events_of(conversation) == [("phone", "bot", "phone", "phone")]
        assert conversation["events"][0]["reason"] == "answered from the WhatsApp Business app"
        from_app = [m for m in conversation["messages"] if m["origin"] == "phone"]
        assert [m["message"]["text"]["body"] for m in from_app] == [
            "Hi Ana, it's Marta from the shop. Your order is ready."
        ]

        # The user's next messages reach the history, and the bot keeps quiet.
        await chat.say("hi, great, thanks!")
        await chat.say("can I pay when I pick it up?")
        assert await chat.sent_texts(1) == ["Hello! How can I help?"]
        inbound = [m for m in (await chat.conversation())["messages"] if m["direction"] == "in"]
        assert len(inbound) == 3

        resolved = await chat.change("resolve")
        assert resolved["owner"] == "bot"
        assert events_of(resolved)[-1] == ("resolved", "phone", "bot", "api")
        await chat.say("hello again")
        assert await chat.sent_texts(2) == ["Hello! How can I help?", "Hello! How can I help?"]


@pytest.fixture
async def meta_graph() -> AsyncIterator[FakeGraphServer]:
    server = FakeGraphServer(platform="meta_cloud")
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def test_a_meta_smb_message_echo_silences_the_bot_until_resolved(
    meta_graph: FakeGraphServer, database_url: str
) -> None:
    user = "16505550142"
    raw = {"providers": [meta_graph.provider_entry("main")], "conversations": QUICK, "router": RULES}
    async with running_chat(database_url, raw) as chat:
        meta_graph.attach(chat.url, "main")

        async def bot_sent(count: int) -> list[str]:
            async def sent() -> list[str] | None:
                await chat.handled()
                texts = [m["text"]["body"] for m in meta_graph.messages]
                return texts if len(texts) == count else None

            found: list[str] = await wait_until(sent)
            return found

        assert await meta_graph.send_inbound({"type": "text", "text": {"body": "hi"}}, wa_id=user) == 200
        assert await bot_sent(1) == ["Hello! How can I help?"]

        echo = meta_echo(meta_graph, "Hello, this is Marta answering from the shop's phone.", to=user)
        assert await meta_graph.deliver(echo, field="smb_message_echoes") == 200
        await chat.handled()
        conversation = await chat.conversation(user)
        assert (conversation["owner"], events_of(conversation)) == ("phone", [("phone", "bot", "phone", "phone")])

        assert await meta_graph.send_inbound({"type": "text", "text": {"body": "hi Marta!"}}, wa_id=user) == 200
        await chat.handled()  # any answer would be queued by now
        assert len(await chat.replies(user)) == 1
        assert [m["text"]["body"] for m in meta_graph.messages] == ["Hello! How can I help?"]

        await chat.change("resolve", sender=user)
        assert await meta_graph.send_inbound({"type": "text", "text": {"body": "hello"}}, wa_id=user) == 200
        assert await bot_sent(2) == ["Hello! How can I help?", "Hello! How can I help?"]
        assert all(m["to"] == user for m in meta_graph.messages)


# -- 2. a burst gets one answer ----------------------------------------------------------------------------


async def test_three_messages_within_a_second_get_one_answer_that_saw_all_three(database_url: str) -> None:
    recorder = TurnRecorder()
    burst = {"conversations": {"debounce_seconds": 2}}  # the daemon's default
    async with running_chat(database_url, burst, plugins=[recorder]) as chat:
        for said in ("hi", "I ordered a cake yesterday", "is it ready?"):
            await chat.post([sandbox_message(said)])
        await chat.handled()
        assert await chat.sent_texts(1) == ["Read 3: hi / I ordered a cake yesterday / is it ready?"]
        assert recorder.turns == [["hi", "I ordered a cake yesterday", "is it ready?"]]
        inbound = [m for m in (await chat.conversation())["messages"] if m["direction"] == "in"]
        assert len(inbound) == 3


@pytest.fixture
async def model() -> AsyncIterator[FakeOpenAIServer]:
    server = await FakeOpenAIServer(api_key=MODEL_KEY).start()
    try:
        yield server
    finally:
        await server.close()


def assistant(model: FakeOpenAIServer) -> dict[str, Any]:
    """A router whose fallback is an OpenAI-compatible model served by ``model``."""
    entry = {"platform": "openai", "name": "assistant", "base_url": model.base_url, "api_key": MODEL_KEY}
    return {"ai": [{**entry, "model": "fake-model", "timeout": 10}], "router": {"fallback": "assistant"}}


async def test_a_burst_reaches_the_model_as_one_request_with_all_three_messages(
    model: FakeOpenAIServer, database_url: str
) -> None:
    model.script(text("Your cake is ready: come and pick it up."))
    burst = {**assistant(model), "conversations": {"debounce_seconds": 2}}  # the daemon's default
    async with running_chat(database_url, burst) as chat:
        for said in ("hi", "I ordered a cake yesterday", "is it ready?"):
            await chat.post([sandbox_message(said)])
        await chat.handled()
        assert await chat.sent_texts(1) == ["Your cake is ready: come and pick it up."]
    [request] = model.completions
    assert [m["role"] for m in request["messages"]] == ["system", "user", "user", "user"]
    assert [m["content"] for m in request["messages"][1:]] == ["hi", "I ordered a cake yesterday", "is it ready?"]


# -- 3. each contact in its language ----------------------------------------------------------------------------


async def test_a_russian_question_gets_the_russian_faq_answer_and_russian_handoff_text(database_url: str) -> None:
    async with running_chat(database_url, MULTILINGUAL) as chat:
        await chat.say("Подскажите, какие у вас часы работы?")
        assert await chat.sent_texts(1) == ["Работаем с 9 до 18."]
        [contact] = await chat.contacts()
        assert (contact["language"], contact["language_source"]) == ("ru", "detected")

        await chat.say("Спасибо. Мне нужен оператор, пожалуйста")
        assert await chat.sent_texts(2) == ["Работаем с 9 до 18.", "Вам ответит оператор."]
        conversation = await chat.conversation()
        assert conversation["owner"] == "queued"
        assert events_of(conversation) == [("queued", "bot", "queued", "rule")]


async def test_a_russian_question_the_faq_cannot_answer_gets_its_russian_handoff_reply(database_url: str) -> None:
    faq = {
        **MULTILINGUAL["ai"][0],
        "on_miss": "handoff",
        "handoff_reply": {"en": "A colleague will answer you.", "ru": "Вам ответит коллега."},
    }
    raw = {**MULTILINGUAL, "ai": [faq], "router": {"fallback": "faq"}}
    async with running_chat(database_url, raw) as chat:
        await chat.say("Сколько стоит доставка в Казань?")
        assert await chat.sent_texts(1) == ["Вам ответит коллега."]
        conversation = await chat.conversation()
        assert (conversation["owner"], events_of(conversation)) == ("queued", [("queued", "bot", "queued", "ai:faq")])
        assert conversation["events"][0]["reason"] == "faq_miss"


async def test_a_contact_set_to_portuguese_gets_portuguese_replies_even_writing_english(database_url: str) -> None:
    async with running_chat(database_url, MULTILINGUAL) as chat:
        await chat.say("hello there, good morning to you")
        assert await chat.sent_texts(1) == ["Hello!"]
        [contact] = await chat.contacts()
        patched = await chat.ok("PATCH", f"/api/v1/contacts/{contact['id']}", {"language": "pt"})
        assert (patched["language"], patched["language_source"]) == ("pt", "set")

        await chat.say("hello again, this is my second message")
        await chat.say("What are your opening hours?")
        await chat.say("I would like to talk to an operator please")
        assert await chat.sent_texts(4) == ["Hello!", "Olá!", "Abrimos das 9 às 18.", "Uma pessoa responde."]
        [contact] = await chat.contacts()
        assert (contact["language"], contact["language_source"]) == ("pt", "set")


# -- 5. business hours ------------------------------------------------------------------------------------------


async def test_outside_business_hours_the_closed_reply_goes_once_and_the_conversation_waits(
    database_url: str,
) -> None:
    hours = {
        "timezone": "UTC",
        "weekly": {"daily": "00:00-24:00"},
        "closed_dates": closed_around_today(),
        "closed_reply": "We are closed today; a person will answer when we open.",
    }
    raw = {"conversations": QUICK, "router": {**RULES, "business_hours": hours}}
    async with running_chat(database_url, raw) as chat:
        await chat.say("hello, is anyone there?")
        assert await chat.sent_texts(1) == ["We are closed today; a person will answer when we open."]
        conversation = await chat.conversation()
        assert conversation["owner"] == "queued"
        assert events_of(conversation) == [("queued", "bot", "queued", "business_hours")]
        assert conversation["events"][0]["reason"] == "outside business hours"

        await chat.say("hi? I need help with my order")
        assert await chat.sent_texts(1) == ["We are closed today; a person will answer when we open."]
        waiting = await chat.ok("GET", "/api/v1/conversations?owner=queued")
        assert [c["id"] for c in waiting["conversations"]] == [conversation["id"]]


# -- 6. a quiet conversation goes back to the bot ---------------------------------------------------------------

HOUR = 3600.0


async def test_a_quiet_handed_off_conversation_goes_back_to_the_bot(database_url: str) -> None:
    clock = ManualClock(time.time())
    raw = {"conversations": {**QUICK, "return_to_bot_after": HOUR}, "router": RULES}
    async with running_chat(database_url, raw, clock=clock) as chat:
        await chat.say("hi")
        await chat.say("I want to talk to a human")
        assert await chat.sent_texts(2) == ["Hello! How can I help?", "Connecting you with a person."]
        assert (await chat.conversation())["owner"] == "queued"

        clock.advance(HOUR - 60)
        await return_quiet_conversations(chat.hub)
        assert (await chat.conversation())["owner"] == "queued"  # not quiet long enough yet
        await chat.say("hello?")
        assert len(await chat.replies()) == 2

        clock.advance(120)
        await return_quiet_conversations(chat.hub)
        conversation = await chat.conversation()
        assert conversation["owner"] == "bot"
        assert events_of(conversation) == [("queued", "bot", "queued", "rule"), ("resolved", "queued", "bot", "system")]
        assert conversation["events"][1]["reason"] == "no person wrote for 1 h"
        await chat.say("hello, anyone?")
        assert (await chat.sent_texts(3))[-1] == "Hello! How can I help?"


async def test_an_operators_recent_message_keeps_the_conversation_from_the_bot(database_url: str) -> None:
    clock = ManualClock(time.time())
    raw = {"conversations": {**QUICK, "return_to_bot_after": HOUR}, "router": RULES}
    async with running_chat(database_url, raw, clock=clock) as chat:
        await chat.say("hi")
        await chat.change("handoff", {"reason": "a question about a refund"})
        assigned = await chat.change("assign", {"operator": "maria"})
        assert (assigned["owner"], assigned["assignee"]) == ("assigned", "maria")

        # Maria answers from the business app 50 minutes later: an hour and 49 minutes
        # after the hand-off, but 59 minutes after she wrote, the conversation stays hers.
        clock.advance(50 * 60)
        await chat.post([sandbox_echo("Hi, Maria here. Let me check your refund.", recipient=USER)])
        await chat.handled()
        clock.advance(59 * 60)
        await return_quiet_conversations(chat.hub)
        assert (await chat.conversation())["owner"] == "assigned"

        # She writes again through the API; half an hour later it is still hers.
        message = {"to": USER, "type": "text", "text": {"body": "The refund is on its way."}}
        await chat.ok("POST", "/api/v1/messages", message, expect=202)
        clock.advance(30 * 60)
        await return_quiet_conversations(chat.hub)
        conversation = await chat.conversation()
        assert (conversation["owner"], conversation["assignee"]) == ("assigned", "maria")

        clock.advance(HOUR)
        await return_quiet_conversations(chat.hub)
        conversation = await chat.conversation()
        assert conversation["owner"] == "bot"
        assert events_of(conversation)[-1] == ("resolved", "assigned", "bot", "system")


# -- 7. consent keywords whoever owns the conversation -----------------------------------------------------------

OPTED_OUT = "You are unsubscribed and will get no more messages from us. Reply START to subscribe again."
OPTED_IN = "You are subscribed again. Reply STOP at any time to unsubscribe."


async def test_stop_gets_its_confirmation_while_a_person_owns_the_conversation(database_url: str) -> None:
    async with running_chat(database_url, {"conversations": QUICK, "router": RULES}) as chat:
        await chat.say("hi")
        await chat.change("handoff")
        await chat.say("STOP")
        assert await chat.sent_texts(2) == ["Hello! How can I help?", OPTED_OUT]
        [contact] = await chat.contacts()
        details = await chat.ok("GET", f"/api/v1/contacts/{contact['id']}")
        assert details["consent"]["all"] == "opt_out"

        await chat.change("assign", {"operator": "maria"})
        await chat.say("hello")  # not a keyword: the bot stays out of Maria's conversation
        await chat.say("start")
        assert await chat.sent_texts(3) == ["Hello! How can I help?", OPTED_OUT, OPTED_IN]
        conversation = await chat.conversation()
        assert (conversation["owner"], conversation["assignee"]) == ("assigned", "maria")


# -- 4. the sandbox demo, offline --------------------------------------------------------------------------------

#: The shipped FAQ's answer to the opening hours, in WhatsApp's formatting (``**bold**`` is ``*bold*``).
HOURS_ANSWER = "We are open *Monday to Friday, 9:00 to 18:00*, and on Saturday from 10:00 to 14:00."


async def test_the_sandbox_demo_answers_the_shipped_faq_with_no_network(tmp_path: Path) -> None:
    shutil.copy(REPO / "config.example.yaml", tmp_path / "config.yaml")
    shutil.copy(REPO / "faq.example.yaml", tmp_path)  # the example's FAQ (!include)
    shipped = yaml.safe_load((REPO / "faq.example.yaml").read_text())
    hours = next(e for e in shipped if e.get("id") == "hours" and e["language"] == "en")
    assert hours["answer"].replace("**", "*").strip() == HOURS_ANSWER

    daemon = start_isolated(tmp_path / "config.yaml", tmp_path, free_port(), isolate=can_isolate())
    try:
        await daemon.wait_healthy()
        if daemon.isolated:  # alone with loopback: no other host could answer it
            assert os.readlink(f"/proc/{daemon.process.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        chat = subprocess.Popen(  # noqa: ASYNC220 - a second process, as a user opens a second terminal
            daemon.inside([sys.executable, "-m", "wahub", "chat", "--url", daemon.url, "--wait", "0.5"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert chat.stdin is not None
            chat.stdin.write("what are your opening hours?\n")
            chat.stdin.flush()
            db = tmp_path / "data" / "wahub.db"

            async def answered() -> list[tuple[object, ...]]:
                query = "SELECT status, body FROM messages WHERE direction = 'out' AND status != 'queued'"
                return rows(db, query)

            [(status, body)] = await wait_until(answered, within=20)
        finally:
            output, _ = chat.communicate(timeout=20)  # closes its input: the chat ends
    finally:
        assert daemon.terminate() == 0
    assert status in ("sent", "delivered", "read")  # the chat may have read it already
    assert json.loads(str(body))["text"]["body"] == HOURS_ANSWER
    # Piped, the chat prints WhatsApp's formatting as plain text: the *bold* markers go.
    shown = " ".join(whatsapp_lines(HOURS_ANSWER, color=False))
    assert re.search(rf"^bot  \d\d:\d\d  {re.escape(shown)}", output, re.M), output
    log = daemon.log.read_text()
    assert [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line] == [], log


# -- a person who takes over while the model answers wins -------------------------------------------------------


async def test_a_person_taking_over_while_the_model_answers_wins_and_the_model_is_told(
    model: FakeOpenAIServer, database_url: str
) -> None:
    model.script(text("Let me check that for you.", latency=2.0), text("Welcome back! How can I help?"))
    async with running_chat(database_url, {**assistant(model), "conversations": QUICK}) as chat:
        await chat.post([sandbox_message("where is my order 1234?")])

        async def asked() -> bool:
            return len(model.completions) == 1

        await wait_until(asked)  # the model is answering: now Maria takes the conversation
        await chat.change("assign", {"operator": "maria"})
        await chat.handled()
        [dropped] = await chat.replies()
        assert (dropped["status"], dropped["error"]["code"]) == ("failed", "owner_changed")
        assert dropped["message"]["text"]["body"] == "Let me check that for you."
        assert dropped["provider_message_id"] is None

        await chat.change("resolve", {"reason": "order found"})
        await chat.say("thanks, anything else I should know?")
        assert await chat.sent_texts(1) == ["Welcome back! How can I help?"]
    # The model reads what happened, dated, and never its own answer that was not sent.
    told = model.completions[1]["messages"]
    assert [bool(DATED.match(m["content"])) for m in told] == [False, False, True, True, False]
    undated = [(m["role"], DATED.sub("", m["content"])) for m in told]
    assert undated[1:] == [
        ("user", "where is my order 1234?"),
        ("system", "An operator (maria) took over the conversation: assigned to maria through the API."),
        ("system", "The conversation returned to the bot: order found. The bot answers again from here."),
        ("user", "thanks, anything else I should know?"),
    ]
