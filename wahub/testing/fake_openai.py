"""A fake OpenAI-compatible Chat Completions server, on a real socket, for the
tests of wahub's ``openai`` backend and of AI plugins.

It answers ``POST /v1/chat/completions`` (and ``/chat/completions``, as some
local servers are mounted) in the shapes of OpenAI's API: a ``chat.completion``
with one choice and ``usage`` in every answer, errors as
``{"error": {"message", "type", "param", "code"}}``. Answers come from a
script, consumed in order, then the default answer::

    model = await FakeOpenAIServer(api_key="sk-test").start()
    model.script(
        http_error(429, retry_after=1),                 # rate limited, then
        tool_call("handoff_to_human", {"reason": "angry"}),   # content: null
        text("Hello!", latency=0.2),
    )
    entry = {"platform": "openai", "name": "ai", "base_url": model.base_url,
             "api_key": "sk-test", "model": "fake-model"}
    ...
    assert model.requests[0].json["messages"][0]["role"] == "system"
    await model.close()

Script steps: ``text`` (an answer), ``tool_call`` / ``tool_calls`` (with
``content: null`` unless given; arguments a mapping, or a string to send
invalid JSON), ``http_error`` (429 with ``Retry-After``, 500, 502, 503...),
``hang`` (answer nothing until the client gives up, or the fake closes). Any
step may add ``latency`` (seconds before it answers) and ``usage``. With
``api_key`` set, a request without ``Authorization: Bearer <api_key>`` is
answered 401 before the script is read. Every request is recorded, body and
headers, whatever its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from wahub.testing import close_fake, serve_on_loopback

__all__ = [
    "DEFAULT_ANSWER",
    "FakeOpenAIServer",
    "Recorded",
    "Step",
    "ToolCall",
    "Usage",
    "hang",
    "http_error",
    "text",
    "tool_call",
    "tool_calls",
]

DEFAULT_ANSWER = "This is the fake model's answer."
#: How long a ``hang`` step waits, at most, when the client does not give up first.
HANG_SECONDS = 300.0
_ROLES = ("system", "user", "assistant", "tool", "developer")
#: OpenAI's error ``type`` and default message for each status the fake answers with.
_ERRORS: Mapping[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "unknown_url", "Unknown request URL."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


@dataclass(frozen=True)
class Usage:
    """Tokens an answer reports; ``total`` is their sum."""

    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asks for; ``arguments`` is the JSON text it
    sends (a mapping given to ``tool_call`` is encoded, a string sent as is)."""

    name: str
    arguments: str
    id: str = ""


@dataclass(frozen=True)
class Step:
    """One scripted answer: a completion (``content`` and/or ``tool_calls``),
    an HTTP error (``status`` other than 200), or a hang."""

    status: int = 200
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    retry_after: float | None = None
    error_message: str | None = None
    latency: float = 0.0
    hang: bool = False
    #: None: counted from the request and the answer (about four characters a token).
    usage: Usage | None = None


def text(content: str, *, latency: float = 0.0, usage: Usage | None = None, finish_reason: str = "stop") -> Step:
    """An answer with ``content``."""
    return Step(content=content, latency=latency, usage=usage, finish_reason=finish_reason)


def tool_call(
    name: str,
    arguments: Mapping[str, Any] | str,
    *,
    content: str | None = None,
    latency: float = 0.0,
    usage: Usage | None = None,
) -> Step:
    """An answer calling one tool; ``content`` stays null unless given, as
    OpenAI's models do. A string for ``arguments`` is sent as is (invalid JSON, say)."""
    return tool_calls((name, arguments), content=content, latency=latency, usage=usage)


def tool_calls(
    *calls: tuple[str, Mapping[str, Any] | str],
    content: str | None = None,
    latency: float = 0.0,
    usage: Usage | None = None,
) -> Step:
    """An answer calling several tools at once, each ``(name, arguments)``."""
    made = tuple(
        ToolCall(name, arguments if isinstance(arguments, str) else json.dumps(arguments)) for name, arguments in calls
    )
    return Step(content=content, tool_calls=made, finish_reason="tool_calls", latency=latency, usage=usage)


def http_error(
    status: int, *, retry_after: float | None = None, message: str | None = None, latency: float = 0.0
) -> Step:
    """An error answer in OpenAI's shape: 429 (with ``Retry-After`` seconds if
    given), 500, 502, 503, 400..."""
    if status < 400:
        raise ValueError(f"an error step needs a status of 400 or more, not {status}")
    return Step(status=status, retry_after=retry_after, error_message=message, latency=latency)


def hang() -> Step:
    """No answer until the client gives up (or the fake closes)."""
    return Step(hang=True)


@dataclass
class Recorded:
    """One request as the fake received it: ``json`` is the parsed body (None if it was not JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    raw: bytes


@dataclass
class FakeOpenAIServer:
    """See the module's docstring."""

    #: Required as ``Authorization: Bearer <api_key>`` when set.
    api_key: str | None = None
    #: The text of an answer when the script is used up.
    default_answer: str = DEFAULT_ANSWER
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    _steps: list[Step] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _calls: int = 0

    @property
    def base_url(self) -> str:
        """The ``base_url`` an OpenAI client is given: ``<url>/v1``."""
        return f"{self.url}/v1"

    @property
    def completions(self) -> list[dict[str, Any]]:
        """The bodies of the chat completion requests received, in order."""
        return [r.json for r in self.requests if r.path.endswith("/chat/completions") and isinstance(r.json, dict)]

    def script(self, *steps: Step) -> None:
        """Answer the next requests with ``steps``, in order (after any still waiting)."""
        self._steps.extend(steps)

    @property
    def pending(self) -> int:
        """How many scripted steps are still to be answered."""
        return len(self._steps)

    async def start(self) -> FakeOpenAIServer:
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/chat/completions", self._chat_completions)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner, self.url = await serve_on_loopback(app)
        return self

    async def close(self) -> None:
        self._closing.set()  # releases hanging answers
        await close_fake(self._runner, None, set())

    async def _record(self, request: web.Request) -> Recorded:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = Recorded(request.method, request.path, dict(request.headers), body, raw)
        self.requests.append(recorded)
        return recorded

    async def _unknown(self, request: web.Request) -> web.Response:
        await self._record(request)
        return error_response(404, f"Unknown request URL: {request.method} {request.path}.")

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            given = "no API key" if "Authorization" not in request.headers else "an incorrect API key"
            return error_response(401, f"You provided {given}: pass it as 'Authorization: Bearer <key>'.")
        problem = request_problem(recorded.json)
        if problem is not None:
            return error_response(400, problem[1], param=problem[0])
        step = self._steps.pop(0) if self._steps else text(self.default_answer)
        if step.hang:
            await self._wait(HANG_SECONDS)
            return error_response(503, "The fake stopped hanging.")
        if step.latency:
            await self._wait(step.latency)
        if step.status != 200:
            headers = {"Retry-After": _seconds(step.retry_after)} if step.retry_after is not None else {}
            return error_response(step.status, step.error_message, headers=headers)
        self._calls += 1
        return web.json_response(self._completion(recorded.json, step))

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    def _completion(self, body: Mapping[str, Any], step: Step) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": step.content, "refusal": None}
        if step.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id or f"call_{self._calls}_{index}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for index, call in enumerate(step.tool_calls)
            ]
        usage = step.usage or Usage(
            prompt=_tokens(json.dumps(body.get("messages"), ensure_ascii=False)),
            completion=_tokens((step.content or "") + "".join(c.arguments for c in step.tool_calls)),
        )
        return {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": step.finish_reason or ("tool_calls" if step.tool_calls else "stop"),
                }
            ],
            "usage": {
                "prompt_tokens": usage.prompt,
                "completion_tokens": usage.completion,
                "total_tokens": usage.total,
            },
        }


def error_response(
    status: int, message: str | None = None, *, param: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An error answer in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``."""
    kind, code, default = _ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None, ""))
    body = {"error": {"message": message or default or f"HTTP {status}", "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=dict(headers or {}))


def request_problem(body: Any) -> tuple[str | None, str] | None:
    """What makes ``body`` a request OpenAI would refuse (400), as ``(param, message)``, or None."""
    if not isinstance(body, dict):
        return None, "We could not parse the JSON body of your request."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model", "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages", "'messages' must be a non-empty array"
    for index, item in enumerate(messages):
        problem = _message_problem(item)
        if problem:
            return f"messages.[{index}]", problem
    tools = body.get("tools", [])
    if not isinstance(tools, list) or not all(_is_function_tool(tool) for tool in tools):
        return "tools", "each tool must be {'type': 'function', 'function': {'name': ..., 'parameters': {...}}}"
    return None


def _message_problem(item: Any) -> str | None:
    if not isinstance(item, dict) or item.get("role") not in _ROLES:
        return f"each message needs a 'role', one of {', '.join(_ROLES)}"
    if item["role"] == "tool" and not isinstance(item.get("tool_call_id"), str):
        return "a 'tool' message needs the 'tool_call_id' it answers"
    if item["role"] == "assistant" and item.get("content") is None and not item.get("tool_calls"):
        return "an 'assistant' message needs 'content' or 'tool_calls'"
    if item["role"] != "assistant" and not isinstance(item.get("content"), str):
        return f"a '{item['role']}' message needs a 'content' string"
    return None


def _is_function_tool(tool: Any) -> bool:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        return False
    function = tool["function"]
    return isinstance(function.get("name"), str) and isinstance(function.get("parameters", {}), dict)


def _tokens(text: str) -> int:
    # About four characters a token, as OpenAI's rule of thumb has it: enough for budgets in tests.
    return max(1, (len(text) + 3) // 4)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
