"""The OpenAI-compatible backend against the fake server, over real HTTP: the
request it sends, the answers it reads, the tools it runs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.ai.openai_helpers import FAQ_ENTRIES, KEY, NOW, Host, Make, order_tool, request, standalone
from wahub.core.ai import AIAnswer, AIRequest, AITool, HistoryEntry
from wahub.core.errors import PluginError
from wahub.plugins.ai.openai import DEFAULT_HANDOFF_REPLIES, DEFAULT_UNAVAILABLE_REPLY, TOOL_FAILED
from wahub.testing import build_config, running_daemon
from wahub.testing.fake_openai import FakeOpenAIServer, Usage, http_error, text, tool_call, tool_calls

# --- the request ------------------------------------------------------------------


async def test_the_request_carries_prompt_language_knowledge_history_with_dated_notes_and_tools(
    make: Make, model: FakeOpenAIServer
) -> None:
    backend = await make(knowledge="faq", system_prompt="You help the bakery.", temperature=0.2, max_tokens=300)
    history = [
        HistoryEntry("user", "Is my cake ready?", NOW - 7200),
        HistoryEntry("assistant", "Let me ask a colleague.", NOW - 7100),
        HistoryEntry("note", "The conversation was handed to a person: cake order", NOW - 7000),
        HistoryEntry("assistant", "Your cake is ready.", NOW - 3700),
        HistoryEntry("note", "The conversation was returned to the bot", NOW - 3600),
    ]

    await backend.reply(
        request("Gracias", "¿Cuál es su horario?", language="es", history=history, tools=[order_tool([])])
    )

    [body] = model.completions
    assert (body["model"], body["temperature"], body["max_tokens"], body["tool_choice"]) == (
        "fake-model",
        0.2,
        300,
        "auto",
    )
    system, *rest = body["messages"]
    assert system["role"] == "system"
    assert system["content"].startswith("You help the bakery.\n\n")
    assert "the contact's language, es " in system["content"]
    assert "It is now 2026-12-01 10:00 UTC." in system["content"]
    assert "Q: ¿Cuál es su horario?\nA: De 9 a 18." in system["content"]  # the knowledge, in Spanish
    assert "What are your opening hours?" not in system["content"]
    assert rest == [
        {"role": "user", "content": "Is my cake ready?"},
        {"role": "assistant", "content": "Let me ask a colleague."},
        {"role": "system", "content": "[2026-12-01 08:03 UTC] The conversation was handed to a person: cake order"},
        {"role": "assistant", "content": "Your cake is ready."},
        {"role": "system", "content": "[2026-12-01 09:00 UTC] The conversation was returned to the bot"},
        {"role": "user", "content": "Gracias"},
        {"role": "user", "content": "¿Cuál es su horario?"},
    ]
    names = [tool["function"]["name"] for tool in body["tools"]]
    assert names == ["handoff_to_human", "lookup_order"]
    assert body["tools"][0]["function"]["parameters"]["required"] == ["reason"]
    assert model.requests[0].headers["Authorization"] == f"Bearer {KEY}"


async def test_history_is_cut_to_the_last_messages_keeping_the_notes_among_them(
    make: Make, model: FakeOpenAIServer
) -> None:
    backend = await make(history_messages=2)
    history = [
        HistoryEntry("user", "one", NOW - 40),
        HistoryEntry("assistant", "two", NOW - 30),
        HistoryEntry("note", "The conversation was returned to the bot", NOW - 20),
        HistoryEntry("user", "three", NOW - 10),
    ]

    await backend.reply(request("four", history=history))

    contents = [message["content"] for message in model.completions[0]["messages"][1:]]
    assert contents == ["two", "[2026-12-01 09:59 UTC] The conversation was returned to the bot", "three", "four"]


async def test_without_an_api_key_no_authorization_header_is_sent(host: Host) -> None:
    local = await FakeOpenAIServer().start()  # as Ollama or llama-server, which need no key
    try:
        answer = await standalone(host, local.base_url + "/", model="llama3.2").reply(request("hi"))
    finally:
        await local.close()

    assert answer.text == local.default_answer
    assert "Authorization" not in local.requests[0].headers
    assert local.requests[0].path == "/v1/chat/completions"


async def test_a_wrong_key_is_not_retried_and_the_turn_falls_back(make: Make, model: FakeOpenAIServer) -> None:
    backend = await make(api_key="sk-wrong")

    answer = await backend.reply(request("hi"))

    assert answer == AIAnswer(text=DEFAULT_UNAVAILABLE_REPLY, handoff="ai_unavailable", failed="http_401")
    assert len(model.requests) == 1


# --- answers and tools -----------------------------------------------------------


async def test_a_text_answer_is_the_reply_with_its_tokens(make: Make, model: FakeOpenAIServer) -> None:
    model.script(text("We open at **nine**.", usage=Usage(prompt=30, completion=6)))
    backend = await make()

    answer = await backend.reply(request("When do you open?"))

    assert (answer.text, answer.handoff, answer.failed, answer.tokens) == ("We open at **nine**.", None, None, 36)
    assert backend.budget.spent == 36


async def test_a_handoff_call_with_null_content_ends_the_turn_with_a_handoff_and_the_handoff_reply(
    make: Make, model: FakeOpenAIServer
) -> None:
    model.script(tool_call("handoff_to_human", {"reason": "wants a refund"}, usage=Usage(20, 5)))
    backend = await make()

    answer = await backend.reply(request("I want my money back"))

    assert (answer.text, answer.handoff, answer.failed, answer.tokens) == (
        DEFAULT_HANDOFF_REPLIES["en"],
        "wants a refund",
        None,
        25,
    )
    assert len(model.requests) == 1

    model.script(tool_call("handoff_to_human", {"reason": "queja"}))
    configured = await make(handoff_reply={"en": "A person will answer.", "es": "Le atenderá una persona."})
    answer = await configured.reply(request("Quiero hablar con alguien", language="es"))
    assert (answer.text, answer.handoff) == ("Le atenderá una persona.", "queja")


async def test_a_handoff_call_with_content_sends_the_content_first(make: Make, model: FakeOpenAIServer) -> None:
    model.script(tool_call("handoff_to_human", {"reason": "complaint"}, content="A colleague will help you."))
    backend = await make()

    answer = await backend.reply(request("This is the third time!"))

    assert (answer.text, answer.handoff) == ("A colleague will help you.", "complaint")


async def test_a_plugin_tool_runs_and_its_result_goes_back_to_the_model(make: Make, model: FakeOpenAIServer) -> None:
    model.script(
        tool_call("lookup_order", {"order": "42"}, usage=Usage(50, 10)),
        text("Order 42 left the warehouse today.", usage=Usage(70, 8)),
    )
    runs: list[Mapping[str, Any]] = []
    backend = await make()

    answer = await backend.reply(request("Where is order 42?", tools=[order_tool(runs)]))

    assert (answer.text, answer.tokens) == ("Order 42 left the warehouse today.", 138)
    assert answer.details["tools_called"] == ["lookup_order"]
    assert runs == [{"order": "42"}]
    first, follow_up = model.completions
    assert follow_up["messages"][: len(first["messages"])] == first["messages"]
    assistant, tool = follow_up["messages"][len(first["messages"]) :]
    assert assistant["role"] == "assistant" and assistant["content"] is None
    [call] = assistant["tool_calls"]
    assert call["function"] == {"name": "lookup_order", "arguments": '{"order": "42"}'}
    assert tool == {"role": "tool", "tool_call_id": call["id"], "content": "Order 42 left the warehouse today."}


async def test_a_failing_plugin_tool_tells_the_model_so(make: Make, model: FakeOpenAIServer) -> None:
    async def broken(req: AIRequest, arguments: Mapping[str, Any]) -> str:
        raise RuntimeError("the order system is down")

    tool = AITool("lookup_order", "Find an order.", {"type": "object"}, broken)
    model.script(tool_call("lookup_order", {}), text("I cannot look it up right now."))
    backend = await make()

    answer = await backend.reply(request("Where is my order?", tools=[tool]))

    assert answer.text == "I cannot look it up right now."
    assert model.completions[1]["messages"][-1]["content"] == TOOL_FAILED


@pytest.mark.parametrize(
    ("step", "why"),
    [
        (tool_call("lookup_order", '{"order": "42"'), "invalid_tool_arguments"),  # bad JSON
        (tool_call("lookup_order", {"order": "forty-two"}), "invalid_tool_arguments"),  # fails the schema
        (tool_call("lookup_order", '["42"]'), "invalid_tool_arguments"),  # not an object
        (tool_call("handoff_to_human", {}), "invalid_tool_arguments"),  # no reason
        (tool_call("delete_everything", {}), "unknown_tool"),
        (tool_calls(("lookup_order", {"order": "1"}), ("lookup_order", "{")), "invalid_tool_arguments"),
    ],
)
async def test_a_garbled_tool_call_is_a_failed_turn_and_nothing_runs(
    step: Any, why: str, make: Make, model: FakeOpenAIServer
) -> None:
    model.script(step)
    runs: list[Mapping[str, Any]] = []
    backend = await make()

    answer = await backend.reply(request("Where is order 42?", tools=[order_tool(runs)]))

    assert answer == AIAnswer(
        text=DEFAULT_UNAVAILABLE_REPLY, handoff="ai_unavailable", failed=why, tokens=answer.tokens
    )
    assert answer.tokens > 0 and runs == []
    assert len(model.requests) == 1


async def test_tool_rounds_are_bounded(make: Make, model: FakeOpenAIServer) -> None:
    model.script(*[tool_call("lookup_order", {"order": "42"}) for _ in range(3)])
    runs: list[Mapping[str, Any]] = []
    backend = await make(max_tool_rounds=2, knowledge="faq")

    answer = await backend.reply(request("Where is order 42?", tools=[order_tool(runs)]))

    assert (answer.failed, answer.handoff, len(runs), len(model.requests)) == (
        "too_many_tool_rounds",
        "ai_unavailable",
        2,
        3,
    )


async def test_an_empty_answer_is_a_failed_turn(make: Make, model: FakeOpenAIServer) -> None:
    model.script(text("  "))
    backend = await make(knowledge="faq")

    answer = await backend.reply(request("What are your opening hours?"))

    assert (answer.text, answer.failed, answer.answered_by) == ("9 to 18.", "empty_answer", "faq")


# --- in the daemon -----------------------------------------------------------------


async def test_the_daemon_starts_the_backend_with_its_knowledge_and_http_session(
    model: FakeOpenAIServer, tmp_path: Path
) -> None:
    model.script(*[http_error(503) for _ in range(50)])
    config = build_config(
        {
            "ai": [
                {
                    "platform": "openai",
                    "name": "assistant",
                    "base_url": model.base_url,
                    "api_key": KEY,
                    "model": "fake-model",
                    "knowledge": "faq",
                    "timeout": 1,
                },
                {"platform": "faq", "name": "faq", "entries": FAQ_ENTRIES},
            ]
        },
        database=f"sqlite:///{tmp_path / 'wahub.db'}",
    )

    async with running_daemon(config) as daemon:
        backend = daemon.hub.ai["assistant"]
        assert backend.languages() == {"en", "es"}
        answer = await backend.reply(request("What are your opening hours?"))

    assert (answer.text, answer.answered_by, answer.failed) == ("9 to 18.", "faq", "http_503")


async def test_knowledge_naming_no_faq_stops_the_start(make: Make) -> None:
    with pytest.raises(PluginError, match=r"knowledge 'faqs' names no faq backend \(the faq backends: none\)"):
        await make(knowledge="faqs")
