"""Conversations answered by rules, an AI model or a person, end to end: the
contact writes through the sandbox's signed webhook, the model is the fake
OpenAI-compatible server on loopback, and what happened is read as a person
at the business reads it, through the REST API. Every test runs on SQLite and
on PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conversations_kit import (
    API_KEY,
    SYSTEM_PROMPT,
    UNFINISHED,
    USER,
    Chat,
    chat_config,
    count_rows,
    running_chat,
    text_of,
)
from tests.e2e.daemon import Daemon, free_port, start_daemon
from wahub import hookimpl
from wahub.core.ai import AIRequest, AITool
from wahub.plugins.ai.openai import DEFAULT_HANDOFF_REPLIES, DEFAULT_UNAVAILABLE_REPLIES
from wahub.testing import TEST_SECRET, wait_until
from wahub.testing.fake_openai import DEFAULT_ANSWER, FakeOpenAIServer, hang, http_error, text, tool_call


@pytest.fixture
async def model() -> AsyncIterator[FakeOpenAIServer]:
    fake = await FakeOpenAIServer(api_key=API_KEY).start()
    yield fake
    await fake.close()


@pytest.fixture
async def chat(database_url: str, model: FakeOpenAIServer) -> AsyncIterator[Chat]:
    async with running_chat(database_url, chat_config(model)) as running:
        yield running


def conversation_turns(request: dict[str, Any]) -> list[tuple[str, str]]:
    """A request's messages after its system prompt, as ``(role, content)``."""
    return [(m["role"], m["content"]) for m in request["messages"][1:]]


async def test_what_no_rule_matches_gets_one_answer_from_the_model_with_the_history_and_language(
    chat: Chat, model: FakeOpenAIServer
) -> None:
    await chat.say("hi")
    assert await chat.sent_texts(1) == ["Hello! How can I help?"]
    assert model.requests == []  # the rule answered: no model was asked
    contact = await chat.contact()
    await chat.ok("PATCH", f"/api/v1/contacts/{contact['id']}", {"language": "pt-BR"})

    model.script(text("Sim, **entregamos** aos sábados de manhã."))
    await chat.say("Vocês entregam no sábado?")

    assert await chat.sent_texts(2) == ["Hello! How can I help?", "Sim, *entregamos* aos sábados de manhã."]
    assert [m["status"] for m in await chat.bot_messages()] == ["sent", "sent"]  # nothing else, not even dropped
    [request] = model.completions
    system = request["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith(SYSTEM_PROMPT)
    assert "Answer in the contact's language, pt-BR" in system["content"]
    assert conversation_turns(request) == [
        ("user", "hi"),
        ("assistant", "Hello! How can I help?"),
        ("user", "Vocês entregam no sábado?"),
    ]
    assert request["model"] == "fake-model"
    assert [tool["function"]["name"] for tool in request["tools"]] == ["handoff_to_human"]
    conversation = await chat.conversation()
    assert (conversation["owner"], conversation["events"]) == ("bot", [])


async def test_the_models_handoff_queues_the_conversation_and_the_bot_is_silent_until_it_is_resolved(
    chat: Chat, model: FakeOpenAIServer
) -> None:
    model.script(tool_call("handoff_to_human", {"reason": "wants a refund"}))  # content: null
    await chat.say("I want my money back for the cake")
    await wait_until(lambda: _owner_is(chat, "queued"))
    # The model said nothing itself: the contact is told a person will answer.
    assert await chat.sent_texts(1) == [DEFAULT_HANDOFF_REPLIES["en"]]
    conversation = await chat.conversation()
    assert [(e["change"], e["from"], e["to"], e["actor"], e["reason"]) for e in conversation["events"]] == [
        ("queued", "bot", "queued", "ai:assistant", "wants a refund")
    ]

    for waiting in WAITING:
        await chat.say(waiting)
        # Each is a turn of its own (the debounce is over before the next): none gets a bot answer.
        assert [text_of(m) for m in await chat.settled()] == [DEFAULT_HANDOFF_REPLIES["en"]]
    assert len(model.requests) == 1  # and the model was not asked
    conversation = await chat.conversation()
    assert conversation["owner"] == "queued"
    assert [text_of(m) for m in conversation["messages"][:3]] == list(reversed(WAITING))

    resolved = await chat.ok("POST", f"/api/v1/conversations/{conversation['id']}/resolve")
    assert resolved["owner"] == "bot"
    model.script(text("Sorry for the wait! Your refund is on its way."))
    await chat.say("so, my refund?")
    texts = await chat.sent_texts(2)
    assert texts == [DEFAULT_HANDOFF_REPLIES["en"], "Sorry for the wait! Your refund is on its way."]

    first, second = model.completions
    assert conversation_turns(first) == [("user", "I want my money back for the cake")]
    events = (await chat.conversation())["events"]
    assert [(e["change"], e["actor"]) for e in events] == [("queued", "ai:assistant"), ("resolved", "api")]
    _assert_told_of_the_handoff_and_the_return(second, events)


#: What the contact writes while the conversation waits for a person.
WAITING = ("hello?", "is anyone there?", "I am still waiting")


def _assert_told_of_the_handoff_and_the_return(request: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """The request's history has the hand-off and the return as notes dated as
    the conversation's events, each where it happened among the messages."""
    turns = conversation_turns(request)
    assert [(role, content if role != "system" else "note") for role, content in turns] == [
        ("user", "I want my money back for the cake"),
        ("assistant", DEFAULT_HANDOFF_REPLIES["en"]),
        ("system", "note"),
        *(("user", waiting) for waiting in WAITING),
        ("system", "note"),
        ("user", "so, my refund?"),
    ]
    handed, returned = (content for role, content in turns if role == "system")
    assert handed.startswith(
        f"[{_utc_minute(events[0]['at'])}] The conversation was handed to a person: wants a refund."
    )
    assert returned.startswith(
        f"[{_utc_minute(events[1]['at'])}] The conversation returned to the bot: resolved through the API."
    )


def _utc_minute(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


async def _owner_is(chat: Chat, owner: str) -> bool:
    return bool((await chat.conversation())["owner"] == owner)


async def test_a_handoff_while_the_model_is_answering_drops_its_answer_and_shows_the_drop(
    chat: Chat, model: FakeOpenAIServer
) -> None:
    model.script(text("Your order 1042 arrives tomorrow.", latency=3))
    await chat.send("where is my order 1042?")
    await wait_until(lambda: _requests_at_least(model, 1))  # the model is thinking now
    conversation_id = await chat.conversation_id()
    queued = await chat.ok("POST", f"/api/v1/conversations/{conversation_id}/handoff", {"reason": "an operator saw it"})
    assert queued["owner"] == "queued"

    [dropped] = await wait_until(lambda: _failed_replies(chat))
    assert text_of(dropped) == "Your order 1042 arrives tomorrow."
    assert (dropped["status"], dropped["error"]["code"], dropped["origin"]) == ("failed", "owner_changed", "reply")
    assert "went to queued while the bot was answering" in dropped["error"]["message"]
    assert (dropped["provider_message_id"], dropped["statuses"]) == (None, [])  # never sent
    messages = await chat.settled()
    assert [m["status"] for m in messages] == ["failed"]
    conversation = await chat.conversation()
    assert conversation["owner"] == "queued"  # the person keeps it
    assert [(e["change"], e["actor"], e["reason"]) for e in conversation["events"]] == [
        ("queued", "api", "an operator saw it")
    ]

    # Back with the bot, the model is not told it said what the contact never got.
    await chat.ok("POST", f"/api/v1/conversations/{conversation_id}/resolve")
    await chat.say("hello?")
    assert await chat.sent_texts(1) == [DEFAULT_ANSWER]
    assert [role for role, content in conversation_turns(model.completions[1])] == ["user", "system", "system", "user"]
    assert "Your order 1042 arrives tomorrow." not in str(model.completions[1]["messages"])


async def _requests_at_least(model: FakeOpenAIServer, count: int) -> bool:
    return len(model.requests) >= count


async def _failed_replies(chat: Chat) -> list[dict[str, Any]]:
    return [m for m in await chat.bot_messages() if m["status"] == "failed"]


FAQ = {
    "platform": "faq",
    "name": "faq",
    "entries": [
        {
            "id": "hours",
            "language": "en",
            "questions": ["What are your opening hours?", "When are you open?"],
            "answer": "We are open **Monday to Saturday, 7:00 to 19:00**.",
        }
    ],
}


@pytest.mark.parametrize("failure", ["timeouts", "server_errors"])
async def test_the_model_down_gives_the_faq_answer_or_the_unavailable_reply_and_a_person(
    database_url: str, model: FakeOpenAIServer, failure: str
) -> None:
    # Each turn has one second: a hang is a time-out, 503s are retried until the second is over.
    model.script(*([hang(), hang()] if failure == "timeouts" else [http_error(503)] * 20))
    config = chat_config(model, ai={"timeout": 1, "knowledge": "faq"}, more_ai=[FAQ])
    async with running_chat(database_url, config) as chat:
        await chat.say("When are you open on Saturday?")
        assert await chat.sent_texts(1) == ["We are open *Monday to Saturday, 7:00 to 19:00*."]
        first_turn = len(model.requests)
        assert first_turn == 1 if failure == "timeouts" else first_turn >= 2
        assert "Q: What are your opening hours?" in model.completions[0]["messages"][0]["content"]
        assert (await chat.conversation())["owner"] == "bot"

        await chat.say("Can I bring my dog inside?")
        await wait_until(lambda: _owner_is(chat, "queued"))
        texts = await chat.sent_texts(2)
        assert texts == ["We are open *Monday to Saturday, 7:00 to 19:00*.", DEFAULT_UNAVAILABLE_REPLIES["en"]]
        assert len(model.requests) > first_turn  # the model was asked again, and failed again
        conversation = await chat.conversation()
    assert [(e["change"], e["actor"], e["reason"]) for e in conversation["events"]] == [
        ("queued", "ai:assistant", "ai_unavailable")
    ]


@dataclass(eq=False)  # pluggy keeps plugins in sets
class OrderTool:
    """A plugin offering the model ``order_status``, keeping every call it runs."""

    calls: list[tuple[AIRequest, Mapping[str, Any]]] = field(default_factory=list)

    async def order_status(self, request: AIRequest, arguments: Mapping[str, Any]) -> str:
        self.calls.append((request, arguments))
        return f"Order {arguments['order']}: baked, out for delivery since 9:40."

    @hookimpl
    def ai_tools(self) -> list[AITool]:
        parameters = {
            "type": "object",
            "properties": {"order": {"type": "string", "pattern": "^[0-9]+$"}},
            "required": ["order"],
            "additionalProperties": False,
        }
        return [AITool("order_status", "Where an order is, by its number.", parameters, self.order_status)]


async def test_a_plugins_tool_is_called_by_the_model_and_its_result_reaches_the_model(
    database_url: str, model: FakeOpenAIServer
) -> None:
    model.script(
        tool_call("order_status", {"order": "1042"}),
        text("Your order 1042 is on its way: it left at 9:40."),
    )
    plugin = OrderTool()
    async with running_chat(database_url, chat_config(model), plugins=[plugin]) as chat:
        await chat.say("Where is my order 1042?")
        assert await chat.sent_texts(1) == ["Your order 1042 is on its way: it left at 9:40."]
        conversation_id = await chat.conversation_id()

    [(request, arguments)] = plugin.calls
    assert arguments == {"order": "1042"}
    assert (request.contact, request.conversation_id, list(request.messages)) == (
        USER,
        conversation_id,
        ["Where is my order 1042?"],
    )
    asked, follow_up = model.completions
    assert [tool["function"]["name"] for tool in asked["tools"]] == ["handoff_to_human", "order_status"]
    assert follow_up["messages"][: len(asked["messages"])] == asked["messages"]
    call, result = follow_up["messages"][len(asked["messages"]) :]
    [made] = call["tool_calls"]
    assert (call["role"], made["function"]["name"], json.loads(made["function"]["arguments"])) == (
        "assistant",
        "order_status",
        {"order": "1042"},
    )
    assert result == {
        "role": "tool",
        "tool_call_id": made["id"],
        "content": "Order 1042: baked, out for delivery since 9:40.",
    }


async def test_kill_9_while_the_model_answers_gives_exactly_one_answer_after_the_restart(
    tmp_path: Path, database_url: str, model: FakeOpenAIServer
) -> None:
    model.script(hang())  # the first daemon's request is never answered
    config = chat_config(model)
    config["wahub"]["database"] = database_url
    config["wahub"]["http"] = {"port": "!port"}
    config["providers"] = [{"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET}]
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config).replace('"!port"', "!env_var WAHUB_PORT"))
    port = free_port()
    daemon = start_daemon(path, tmp_path, port)
    restarted: Daemon | None = None
    try:
        await asyncio.to_thread(daemon.wait_healthy)
        async with aiohttp.ClientSession() as http:
            chat = Chat(daemon.url, http, lambda: count_rows(database_url, UNFINISHED))
            asked = await chat.send("Do you bake sourdough bread?")
            await wait_until(lambda: _requests_at_least(model, 1), within=20)
            daemon.kill()

            model.script(text("Yes, sourdough every morning from 7:00."))
            restarted = start_daemon(path, tmp_path, port)
            await asyncio.to_thread(restarted.wait_healthy)
            assert await chat.sent_texts(1) == ["Yes, sourdough every morning from 7:00."]
            conversation = await chat.conversation()
    finally:
        if restarted is not None:
            restarted.terminate()
        elif daemon.process.poll() is None:
            daemon.kill()
    replies = [m for m in conversation["messages"] if m["direction"] == "out"]
    assert [(text_of(m), m["status"], m["origin"]) for m in replies] == [
        ("Yes, sourdough every morning from 7:00.", "sent", "reply")
    ]
    assert [m["provider_message_id"] for m in conversation["messages"] if m["direction"] == "in"] == [asked]
    # Asked once by each daemon: the killed one's call, then the turn run again from the start.
    assert [conversation_turns(body) for body in model.completions] == [[("user", "Do you bake sourdough bread?")]] * 2
