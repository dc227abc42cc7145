"""The OpenAI-compatible backend when things go wrong: retries within the turn's
time, fallbacks on the FAQ or the unavailable reply, the daily budget, redaction."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp import web

from tests.plugins.ai.openai_helpers import NOW, Host, Make, order_tool, request, standalone
from wahub.core.ai import AIAnswer, AIRequest, AITool, HistoryEntry
from wahub.plugins.ai.openai import DEFAULT_UNAVAILABLE_REPLY
from wahub.testing import serve_on_loopback
from wahub.testing.fake_openai import FakeOpenAIServer, Usage, hang, http_error, text, tool_call

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

    answer = await standalone(host, base_url, model="m", timeout=1).reply(request("hello?"))

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


async def test_a_200_that_is_not_a_completion_is_a_failed_turn_not_retried(host: Host) -> None:
    served: list[str] = []

    async def garbage(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.Response(text="<html>proxy login</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", garbage)
    runner, url = await serve_on_loopback(app)
    try:
        answer = await standalone(host, f"{url}/v1", model="m").reply(request("hello?"))
    finally:
        await runner.cleanup()

    assert (answer.failed, answer.handoff, served) == ("invalid_response", "ai_unavailable", ["/v1/chat/completions"])


async def test_a_tool_that_outlives_the_turns_time_ends_the_turn_with_the_fallback(
    make: Make, model: FakeOpenAIServer
) -> None:
    released = asyncio.Event()

    async def slow(req: AIRequest, arguments: Mapping[str, Any]) -> str:
        await released.wait()  # never set: only the turn's time ends it
        return "too late"

    model.script(tool_call("lookup_order", {}), text("not asked"))
    backend = await make(timeout=1, knowledge="faq")

    answer = await backend.reply(request("Where is my order?", tools=[AITool("lookup_order", "Find.", {}, slow)]))

    assert (answer.failed, answer.handoff) == ("timeout", "ai_unavailable")
    assert len(model.requests) == 1 and model.pending == 1


@pytest.mark.parametrize(
    ("language", "start"), [("ru", "Извините"), ("pt-BR", "Desculpe"), ("fr", "Désolé"), ("ja", "Sorry")]
)
async def test_the_default_unavailable_reply_speaks_the_contacts_language(
    language: str, start: str, make: Make, model: FakeOpenAIServer
) -> None:
    model.script(http_error(400))
    backend = await make()

    answer = await backend.reply(request("?", language=language))

    assert answer.text is not None and answer.text.startswith(start)
    assert (answer.failed, answer.handoff) == ("http_400", "ai_unavailable")
