"""What the OpenAI-compatible backend's tests share: a host, a backend maker, requests, a plugin tool."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from wahub.core.ai import AIBackend, AIRequest, AITool
from wahub.plugins.ai.faq import FaqBackend
from wahub.plugins.ai.openai import OpenAIBackend
from wahub.testing import ManualClock
from wahub.testing.fake_openai import FakeOpenAIServer

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
    config: dict[str, Any] = field(default_factory=lambda: {"wahub": {"language": "en"}})
    ai: dict[str, AIBackend] = field(default_factory=dict)


Make = Callable[..., Awaitable[OpenAIBackend]]


def make_backend(model: FakeOpenAIServer, host: Host) -> Make:
    """A maker of started backends on ``model`` (settings as keyword arguments); with
    ``knowledge="faq"`` a FAQ of ``FAQ_ENTRIES`` named ``faq`` is configured too."""

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


def standalone(host: Host, base_url: str, **settings: Any) -> OpenAIBackend:
    """A backend on any endpoint, without a key unless given (not started: it has no knowledge)."""
    config = OpenAIBackend.CONFIG_SCHEMA({"platform": "openai", "name": "solo", "base_url": base_url, **settings})
    return OpenAIBackend(host, config)  # type: ignore[arg-type]


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
    """A plugin tool that looks up an order by its number, noting each call's arguments in ``calls``."""

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
