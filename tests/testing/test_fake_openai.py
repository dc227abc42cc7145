"""The fake OpenAI-compatible server: every answer it gives has the shape of OpenAI's API.

Each shape is checked with the ``openai`` package's own response models (and,
for some, with its client over real HTTP), so the fake cannot drift from the
real API: a field it adds that the models do not know counts as drift too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletion
from openai.types.shared import ErrorObject
from pydantic import BaseModel

from wahub.testing import wait_until
from wahub.testing.fake_openai import (
    DEFAULT_ANSWER,
    FakeOpenAIServer,
    Usage,
    hang,
    http_error,
    text,
    tool_call,
    tool_calls,
)

KEY = "sk-fake-0123456789"
BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "What are your opening hours?"}]}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIServer]:
    server = await FakeOpenAIServer(api_key=KEY).start()
    yield server
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        yield session


def unknown_fields(model: BaseModel, where: str = "") -> list[str]:
    """The fields of ``model`` (and the models in it) that its class does not declare."""
    found = [f"{where}{name}" for name in model.model_extra or {}]
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item, BaseModel):
                found += unknown_fields(item, f"{where}{name}[{index}]." if isinstance(value, list) else f"{name}.")
    return found


def completion(body: dict[str, Any]) -> ChatCompletion:
    """``body`` as OpenAI's ChatCompletion model, refusing fields the model does not know."""
    parsed = ChatCompletion.model_validate(body, strict=False)
    assert unknown_fields(parsed) == []
    return parsed


def error_object(body: dict[str, Any]) -> ErrorObject:
    assert list(body) == ["error"]
    parsed = ErrorObject.model_validate(body["error"])
    assert unknown_fields(parsed) == []
    return parsed


async def post(http: aiohttp.ClientSession, url: str, body: Any = BODY) -> tuple[int, dict[str, str], Any]:
    async with http.post(url, json=body) as response:
        return response.status, dict(response.headers), await response.json()


async def test_a_text_answer_is_a_chat_completion_with_usage(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.script(text("We open at nine.", usage=Usage(prompt=12, completion=5)))

    status, _, body = await post(http, f"{fake.base_url}/chat/completions")

    assert status == 200
    parsed = completion(body)
    assert parsed.object == "chat.completion" and parsed.model == "fake-model"
    [choice] = parsed.choices
    assert (choice.finish_reason, choice.message.role, choice.message.content) == (
        "stop",
        "assistant",
        "We open at nine.",
    )
    assert choice.message.tool_calls is None
    assert parsed.usage is not None
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens, parsed.usage.total_tokens) == (12, 5, 17)


async def test_without_a_script_the_default_answer_comes_with_counted_usage(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    _, _, body = await post(http, f"{fake.url}/chat/completions")  # also without /v1

    parsed = completion(body)
    assert parsed.choices[0].message.content == DEFAULT_ANSWER
    assert parsed.usage is not None and parsed.usage.total_tokens == (
        parsed.usage.prompt_tokens + parsed.usage.completion_tokens
    )
    assert parsed.usage.prompt_tokens > 0 and parsed.usage.completion_tokens > 0


async def test_a_tool_call_has_null_content_and_json_arguments(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.script(tool_call("handoff_to_human", {"reason": "wants a refund"}))

    _, _, body = await post(http, f"{fake.base_url}/chat/completions")

    assert body["choices"][0]["message"]["content"] is None
    parsed = completion(body)
    [choice] = parsed.choices
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert (call.function.name, call.function.arguments) == ("handoff_to_human", '{"reason": "wants a refund"}')
    assert call.id


async def test_several_tool_calls_and_invalid_json_arguments_keep_the_shape(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.script(tool_calls(("lookup", {"order": "42"}), ("handoff_to_human", '{"reason": "x"'), content="One moment"))

    _, _, body = await post(http, f"{fake.base_url}/chat/completions")

    message = completion(body).choices[0].message
    assert message.content == "One moment"
    calls = message.tool_calls or []
    assert [call.function.arguments for call in calls] == ['{"order": "42"}', '{"reason": "x"']  # type: ignore[union-attr]
    assert len({call.id for call in calls}) == 2


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_errors_have_openais_error_shape(
    status: int, fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.script(http_error(status, retry_after=2) if status == 429 else http_error(status))

    got, headers, body = await post(http, f"{fake.base_url}/chat/completions")

    assert got == status
    error = error_object(body)
    assert error.message
    assert error.type == ("requests" if status == 429 else "server_error")
    assert (headers.get("Retry-After") == "2") is (status == 429)


async def test_a_missing_or_wrong_key_is_a_401_before_the_script(fake: FakeOpenAIServer) -> None:
    fake.script(text("not for you"))

    async with aiohttp.ClientSession() as anonymous:
        status, _, body = await post(anonymous, f"{fake.base_url}/chat/completions")
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-wrong"}) as wrong:
        status_wrong, _, body_wrong = await post(wrong, f"{fake.base_url}/chat/completions")

    assert (status, status_wrong) == (401, 401)
    assert error_object(body).code == "invalid_api_key" and error_object(body_wrong).code == "invalid_api_key"
    assert fake.pending == 1


async def test_a_bad_request_is_a_400_naming_the_parameter(fake: FakeOpenAIServer, http: aiohttp.ClientSession) -> None:
    bad = {"model": "fake-model", "messages": [{"role": "tool", "content": "42"}]}

    status, _, body = await post(http, f"{fake.base_url}/chat/completions", bad)

    assert status == 400
    error = error_object(body)
    assert (error.type, error.param) == ("invalid_request_error", "messages.[0]")
    assert "tool_call_id" in error.message


async def test_an_unknown_path_is_a_404_in_the_same_shape(fake: FakeOpenAIServer, http: aiohttp.ClientSession) -> None:
    status, _, body = await post(http, f"{fake.base_url}/completions")

    assert status == 404 and error_object(body).code == "unknown_url"


async def test_every_request_is_recorded_with_its_headers(fake: FakeOpenAIServer, http: aiohttp.ClientSession) -> None:
    fake.script(http_error(500))

    await post(http, f"{fake.base_url}/chat/completions")
    await post(http, f"{fake.base_url}/chat/completions", {**BODY, "temperature": 0.2})

    assert [r.path for r in fake.requests] == ["/v1/chat/completions", "/v1/chat/completions"]
    assert fake.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    assert fake.completions == [BODY, {**BODY, "temperature": 0.2}]


async def test_latency_delays_an_answer_until_the_client_gives_up(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.script(text("late", latency=30), text("on time"))

    with pytest.raises(TimeoutError):
        async with http.post(f"{fake.base_url}/chat/completions", json=BODY, timeout=aiohttp.ClientTimeout(total=0.2)):
            pass
    _, _, body = await post(http, f"{fake.base_url}/chat/completions")

    assert completion(body).choices[0].message.content == "on time"


async def test_a_hang_answers_nothing_and_closing_releases_it() -> None:
    server = await FakeOpenAIServer().start()
    server.script(hang())
    async with aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(session.post(f"{server.base_url}/chat/completions", json=BODY))
        await wait_until(lambda: asyncio.sleep(0, bool(server.requests)))
        await asyncio.sleep(0.1)  # a hang step answers nothing meanwhile
        assert not pending.done()
        await server.close()
        async with await pending as response:
            assert response.status == 503
            assert error_object(await response.json()).type == "server_error"


async def test_the_openai_client_reads_the_fakes_answers(fake: FakeOpenAIServer) -> None:
    fake.script(text("Hello!"), tool_call("handoff_to_human", {"reason": "asked"}), http_error(429, retry_after=1))
    client = openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0)
    try:
        messages: Any = BODY["messages"]
        first = await client.chat.completions.create(model="fake-model", messages=messages)
        second = await client.chat.completions.create(model="fake-model", messages=messages)
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="fake-model", messages=messages)
    finally:
        await client.close()

    assert first.choices[0].message.content == "Hello!"
    assert second.choices[0].message.content is None
    assert [call.function.name for call in second.choices[0].message.tool_calls or []] == ["handoff_to_human"]  # type: ignore[union-attr]
    assert limited.value.status_code == 429 and limited.value.code == "rate_limit_exceeded"
    assert fake.requests[0].headers["Authorization"] == f"Bearer {KEY}"
