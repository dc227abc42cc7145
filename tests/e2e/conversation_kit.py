"""A contact chatting with a running daemon whose router falls back on an
OpenAI-compatible model (the fake one, on loopback), and the REST API a person
at the business reads: the conversation, its owner, the bot's messages.

The daemon runs in the test's process (``running_chat``) or as a real process
(``tests/e2e/daemon.py``); either way the contact speaks through the sandbox's
signed webhook and the test reads what happened through ``/api/v1``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from tests.helpers import AUTH, TOKEN
from wahub.testing import build_config, plugin_manager, running_daemon, sandbox_message, signed_sandbox_webhook
from wahub.testing import wait_until as wait_for
from wahub.testing.fake_openai import FakeOpenAIServer

#: The contact of every test: one user of the sandbox number.
USER = "15551230042"
API_KEY = "sk-test-conversations"
SYSTEM_PROMPT = "You are the assistant of Padaria Sol, a bakery in Lisbon."
#: The rule that answers before the model is asked: the first exchange of a conversation.
GREETING_RULE = {"match": {"keyword": ["hi", "olá"]}, "reply": "Hello! How can I help?"}
#: Unfinished inbox rows: a webhook event stored and not yet handled.
UNFINISHED = "SELECT count(*) FROM inbox WHERE state IN ('pending', 'processing')"


def model_entry(model: FakeOpenAIServer, **settings: Any) -> dict[str, Any]:
    """The ``ai:`` entry of an ``openai`` backend named ``assistant`` that asks ``model``."""
    return {
        "platform": "openai",
        "name": "assistant",
        "base_url": model.base_url,
        "api_key": API_KEY,
        "model": "fake-model",
        "system_prompt": SYSTEM_PROMPT,
        **settings,
    }


def chat_config(
    model: FakeOpenAIServer,
    *,
    database: str,
    ai: Mapping[str, Any] | None = None,
    more_ai: Iterable[Mapping[str, Any]] = (),
    debounce: float = 0.3,
) -> dict[str, Any]:
    """The raw configuration: the greeting rule, then the model for what no rule matches."""
    return {
        "wahub": {"database": database, "api_tokens": [TOKEN], "log_level": "warning"},
        "conversations": {"debounce_seconds": debounce},
        "router": {"rules": [GREETING_RULE], "fallback": "assistant"},
        "ai": [*more_ai, model_entry(model, **(ai or {}))],
    }


@dataclass
class Chat:
    """The contact's side (webhooks) and the business's side (REST API) of one daemon."""

    url: str
    http: aiohttp.ClientSession
    #: How many webhook events are stored and not yet handled.
    unfinished: Callable[[], Awaitable[int]]

    async def say(self, text: str, *, message_id: str | None = None) -> str:
        """The contact sends ``text``; returns its message id once the daemon acknowledged it."""
        event = sandbox_message(text, sender=USER, name="Ana", message_id=message_id)
        body, headers = signed_sandbox_webhook([event])
        async with self.http.post(f"{self.url}/webhooks/sandbox", data=body, headers=headers) as response:
            assert response.status == 200, await response.text()
        return str(event["id"])

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, f"{self.url}{path}", json=body, headers=AUTH) as response:
            return response.status, await response.json()

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self.call(method, path, body)
        assert status == 200, answer
        return answer

    async def contact(self) -> dict[str, Any]:
        """The contact as the API lists it (once its first message was handled)."""

        async def found() -> dict[str, Any] | None:
            contacts = (await self.ok("GET", f"/api/v1/contacts?q={USER}"))["contacts"]
            return contacts[0] if contacts else None

        contact: dict[str, Any] = await wait_for(found)
        return contact

    async def conversation_id(self) -> int:
        contact = await self.contact()
        [conversation_id] = (await self.ok("GET", f"/api/v1/contacts/{contact['id']}"))["conversations"]
        return int(conversation_id)

    async def conversation(self) -> dict[str, Any]:
        """``GET /api/v1/conversations/{id}``: the owner, its events and the messages, newest first."""
        found: dict[str, Any] = await self.ok("GET", f"/api/v1/conversations/{await self.conversation_id()}")
        return found

    async def bot_messages(self) -> list[dict[str, Any]]:
        """The messages the business sent or kept (dropped, refused), oldest first."""
        return [m for m in reversed((await self.conversation())["messages"]) if m["direction"] == "out"]

    async def settled(self) -> list[dict[str, Any]]:
        """Wait until every event stored so far was handled and every reply left
        the queue; returns the bot's messages then."""

        async def done() -> tuple[list[dict[str, Any]]] | None:
            if await self.unfinished():
                return None
            messages = await self.bot_messages()
            # In a tuple: no message at all is settled too.
            return None if any(m["status"] == "queued" for m in messages) else (messages,)

        settled: tuple[list[dict[str, Any]]] = await wait_for(done, within=20)
        return settled[0]

    async def sent_texts(self, count: int) -> list[str]:
        """The texts of the bot's messages once ``count`` of them were sent (and all else settled)."""

        async def enough() -> list[str] | None:
            messages = await self.settled()
            sent = [text_of(m) for m in messages if m["status"] == "sent"]
            return sent if len(sent) >= count else None

        texts: list[str] = await wait_for(enough, within=30)
        return texts


def text_of(message: Mapping[str, Any]) -> str:
    """The text of a message as the API shows it."""
    return str(message["message"]["text"]["body"])


@asynccontextmanager
async def running_chat(config: Mapping[str, Any], plugins: Iterable[object] = ()) -> AsyncIterator[Chat]:
    """The daemon on ``config`` (validated as ``wahub run`` does) in this process, and a client of it."""
    pm = plugin_manager(plugins)
    raw = dict(config)
    validated = build_config(raw, database=raw["wahub"]["database"], pm=pm)
    async with running_daemon(validated, pm=pm) as daemon, aiohttp.ClientSession() as http:

        async def unfinished() -> int:
            count, _ = await daemon.hub.storage.inbox_depth()
            return count

        yield Chat(daemon.url, http, unfinished)


async def count_rows(database: str, query: str) -> int:
    """``query`` (a count) run on ``database``, a SQLite or PostgreSQL URL, beside a daemon using it."""
    if database.startswith("sqlite:///"):
        with sqlite3.connect(database.removeprefix("sqlite:///")) as conn:
            return int(conn.execute(query).fetchone()[0])
    conn = await asyncpg.connect(database.replace("postgresql://", "postgres://"))
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()
