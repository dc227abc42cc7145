"""The OpenAI-compatible backend against the fake server, over real HTTP: the
request it sends, the answers it reads, tools, retries, fallbacks, budget, redaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from wahub.core.ai import AIAnswer, AIBackend, AIRequest, AITool, HistoryEntry
from wahub.core.errors import PluginError
from wahub.plugins.ai.faq import FaqBackend
from wahub.plugins.ai.openai import DEFAULT_UNAVAILABLE_REPLY, TOOL_FAILED, OpenAIBackend
from wahub.testing import ManualClock, build_config, running_daemon, serve_on_loopback
from wahub.testing.fake_openai import FakeOpenAIServer, Usage, hang, http_error, text, tool_call, tool_calls

KEY = "sk-test-0123456789abcdef"
NOW = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC).timestamp()
FAQ_ENTRIES = [
    {"id": "hours", "language": "en", "questions": ["What are your opening hours?"], "answer": "9 to 18."},
    {"id": "hours", "language": "es", "questions": ["¿Cuál es su horario?"], "answer": "De 9 a 18."},
]


@dataclass
class Host:
    """What the backend uses of the daemon: its HTTP session, its clock, the other backends."""

    http: aiohttp.ClientSession
    clock: ManualClock
    config: dict[str, Any] = field(default_factory=dict)
    ai: dict[str, AIBackend] = field(default_factory=dict)


Make = Callable[..., Awaitable[OpenAIBackend]]


@pytest.fixture
async def model() -> AsyncIterator[FakeOpenAIServer]:
    server = await FakeOpenAIServer(api_key=KEY).start()
    yield server
    await server.close()


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    async with aiohttp.ClientSession() as session:
        yield Host(session, ManualClock(NOW))


@pytest.fixture
def make(model: FakeOpenAIServer, host: Host) -> Make:
    """A started backend on the fake, with a ``faq`` knowledge backend when ``knowledge="faq"``."""

    async def make(**settings: Any) -> OpenAIBackend:
        if settings.get("knowledge") == "faq":
            faq_config = FaqBackend.CONFIG_SCHEMA({"platform": "faq", "name": "faq", "entries": FAQ_ENTRIES})
            host.ai["faq"] = FaqBackend(host, faq_config)  # type: ignore[arg-type]
        entry = {"platform": "openai", "name": "assistant", "base_url": model.base_url, "api_key": KEY}
        config = OpenAIBackend.CONFIG_SCHEMA({**entry, "model": "fake-model", "timeout": 5, **settings})
        backend = OpenAIBackend(host, config)  # type: ignore[arg-type]
        host.ai["assistant"] = backend
        await backend.start()
        return backend

    return make


def request(*messages: str, language: str = "en", **fields: Any) -> AIRequest:
    return AIRequest(
        conversation_id=7,
        contact="15551234567",
        contact_name="Ana",
        language=language,
        messages=messages,
        now=NOW,
        **fields,
    )


def order_tool(calls: list[Mapping[str, Any]], result: str = "Order 42 left the warehouse today.") -> AITool:
    async def run(req: AIRequest, arguments: Mapping[str, Any]) -> str:
        calls.append(dict(arguments))
        return result

    parameters = {
        "type": "object",
        "properties": {"order": {"type": "string", "pattern": "^[0-9]+$"}},
        "required": ["order"],
        "additionalProperties": False,
    }
    return AITool("lookup_order", "Find where an order is.", parameters, run)


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
        config = OpenAIBackend.CONFIG_SCHEMA(
            {"platform": "openai", "name": "local", "base_url": local.base_url + "/", "model": "llama3.2"}
        )
        answer = await OpenAIBackend(host, config).reply(request("hi"))  # type: ignore[arg-type]
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


async def test_a_handoff_call_with_null_content_ends_the_turn_with_a_handoff(
    make: Make, model: FakeOpenAIServer
) -> None:
    model.script(tool_call("handoff_to_human", {"reason": "wants a refund"}, usage=Usage(20, 5)))
    backend = await make()

    answer = await backend.reply(request("I want my money back"))

    assert (answer.text, answer.handoff, answer.failed, answer.tokens) == (None, "wants a refund", None, 25)
    assert len(model.requests) == 1


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


# --- retries and fallbacks ------------------------------------------------------


async def test_a_429_is_retried_after_its_retry_after_then_answers(make: Make, model: FakeOpenAIServer) -> None:
    model.script(http_error(429, retry_after=0.3), text("Here I am."))
    backend = await make()

    answer = await backend.reply(request("hello?"))

    assert (answer.text, answer.failed) == ("Here I am.", None)
    assert len(model.requests) == 2


async def test_a_retry_after_longer_than_the_time_left_fails_at_once(make: Make, model: FakeOpenAIServer) -> None:
    model.script(http_error(429, retry_after=60), text("too late"))
    backend = await make(timeout=5)

    answer = await backend.reply(request("hello?"))

    assert (answer.failed, answer.handoff) == ("http_429", "ai_unavailable")
    assert len(model.requests) == 1 and model.pending == 1


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retried_then_succeed(status: int, make: Make, model: FakeOpenAIServer) -> None:
    model.script(http_error(status), http_error(status), text("Back again."))
    backend = await make()

    answer = await backend.reply(request("hello?"))

    assert answer.text == "Back again." and len(model.requests) == 3


async def test_server_errors_until_the_timeout_fall_back_on_the_faq(make: Make, model: FakeOpenAIServer) -> None:
    model.script(*[http_error(503) for _ in range(50)])
    backend = await make(timeout=1, knowledge="faq")

    answer = await backend.reply(request("¿Cuál es su horario?", language="es"))

    assert answer == AIAnswer(
        text="De 9 a 18.", failed="http_503", answered_by="faq", details={"faq_entry": "hours", "score": 100.0}
    )
    assert len(model.requests) >= 2  # retried while time was left


async def test_server_errors_until_the_timeout_without_a_faq_match_send_the_unavailable_reply(
    make: Make, model: FakeOpenAIServer
) -> None:
    model.script(*[http_error(500) for _ in range(50)])
    backend = await make(
        timeout=1, knowledge="faq", unavailable_reply={"en": "Sorry, later.", "es": "Lo siento, más tarde."}
    )

    answer = await backend.reply(request("¿Tienen pan sin gluten?", language="es"))

    assert answer == AIAnswer(text="Lo siento, más tarde.", handoff="ai_unavailable", failed="http_500")


async def test_a_model_that_hangs_times_out_within_the_turns_time(make: Make, model: FakeOpenAIServer) -> None:
    model.script(hang())
    backend = await make(timeout=1)

    answer = await backend.reply(request("hello?"))

    assert (answer.text, answer.failed, answer.handoff) == (DEFAULT_UNAVAILABLE_REPLY, "timeout", "ai_unavailable")


async def test_an_unreachable_endpoint_falls_back(host: Host) -> None:
    gone = await FakeOpenAIServer().start()
    base_url = gone.base_url
    await gone.close()
    config = OpenAIBackend.CONFIG_SCHEMA(
        {"platform": "openai", "name": "gone", "base_url": base_url, "model": "m", "timeout": 1}
    )

    answer = await OpenAIBackend(host, config).reply(request("hello?"))  # type: ignore[arg-type]

    assert (answer.failed, answer.handoff) == ("connection_error", "ai_unavailable")


# --- budget and redaction --------------------------------------------------------


async def test_a_spent_daily_budget_answers_from_the_faq_until_the_next_utc_day(
    make: Make, model: FakeOpenAIServer, host: Host
) -> None:
    model.script(text("First.", usage=Usage(30, 20)), text("Next day.", usage=Usage(3, 2)))
    backend = await make(daily_token_budget=40, knowledge="faq")

    first = await backend.reply(request("hello"))
    spent_hit = await backend.reply(request("What are your opening hours?"))
    spent_miss = await backend.reply(request("Do you sell coffee?"))
    host.clock.set(dt.datetime(2026, 12, 2, 0, 0, 1, tzinfo=dt.UTC).timestamp())
    next_day = await backend.reply(request("hello again"))

    assert (first.text, first.tokens) == ("First.", 50)
    assert (spent_hit.text, spent_hit.failed, spent_hit.answered_by) == ("9 to 18.", "budget_spent", "faq")
    assert (spent_miss.failed, spent_miss.handoff) == ("budget_spent", "ai_unavailable")
    assert next_day.text == "Next day."
    assert len(model.requests) == 2


async def test_phone_numbers_and_emails_are_redacted_before_leaving(make: Make, model: FakeOpenAIServer) -> None:
    model.script(tool_call("lookup_order", {"order": "42"}))
    backend = await make(redact=["phone", "email"])
    history = [HistoryEntry("user", "I am ana@example.com", NOW - 60)]
    tool = order_tool([], result="Order 42 goes to +1 (555) 987-6543.")

    await backend.reply(request("Call me on +44 20 7946 0958 about order 42", history=history, tools=[tool]))

    first, follow_up = model.completions
    assert [m["content"] for m in first["messages"][1:]] == ["I am [email]", "Call me on [phone] about order 42"]
    assert follow_up["messages"][-1]["content"] == "Order 42 goes to [phone]."
    assert "7946" not in str(model.requests[0].raw) and "example.com" not in str(model.requests[0].raw)


async def test_without_redact_texts_are_sent_as_written(make: Make, model: FakeOpenAIServer) -> None:
    backend = await make()

    await backend.reply(request("Call me on +44 20 7946 0958"))

    assert model.completions[0]["messages"][-1]["content"] == "Call me on +44 20 7946 0958"


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


async def test_a_200_that_is_not_a_completion_is_a_failed_turn_not_retried(host: Host) -> None:
    served: list[str] = []

    async def garbage(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.Response(text="<html>proxy login</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", garbage)
    runner, url = await serve_on_loopback(app)
    try:
        config = OpenAIBackend.CONFIG_SCHEMA(
            {"platform": "openai", "name": "odd", "base_url": f"{url}/v1", "model": "m", "timeout": 5}
        )
        answer = await OpenAIBackend(host, config).reply(request("hello?"))  # type: ignore[arg-type]
    finally:
        await runner.cleanup()

    assert (answer.failed, answer.handoff, served) == ("invalid_response", "ai_unavailable", ["/v1/chat/completions"])
