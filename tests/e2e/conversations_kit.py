"""What the conversation acceptance tests share: a daemon on a real socket and a
real database, a client that writes as the user (signed sandbox webhooks) and
works as a person at the business (the REST API with the test token), the
configuration of a router that falls back on an OpenAI-compatible model (the
fake one, on loopback), and a plugin that answers every turn and keeps what
each turn saw.

The daemon runs in the test's process (``running_chat``) or as a real process
(``tests/e2e/daemon.py``, read through ``Chat`` with ``count_rows``); either way
the user speaks through the sandbox's webhook and the test reads what happened
through ``/api/v1``.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from tests.helpers import AUTH, TOKEN
from wahub import hookimpl
from wahub.core.clock import Clock
from wahub.core.hub import Hub
from wahub.core.models import InboundMessage, OutgoingMessage
from wahub.hookspecs import Route, Turn
from wahub.testing import (
    RunningDaemon,
    build_config,
    plugin_manager,
    running_daemon,
    sandbox_message,
    signed_sandbox_webhook,
    wait_until,
)
from wahub.testing.fake_graph import FakeGraphServer
from wahub.testing.fake_openai import FakeOpenAIServer

#: The user of every test unless one names another: the sandbox's default sender.
USER = "15551234567"
#: A short burst window, for the tests that are not about it.
QUICK = {"debounce_seconds": 0.3}
#: Unfinished inbox rows: a webhook event stored and not yet handled.
UNFINISHED = "SELECT count(*) FROM inbox WHERE state IN ('pending', 'processing')"

API_KEY = "sk-test-conversations"
SYSTEM_PROMPT = "You are the assistant of Padaria Sol, a bakery in Lisbon."
#: The rule that answers before the model is asked: the first exchange of a conversation.
GREETING_RULE = {"match": {"keyword": ["hi", "olá"]}, "reply": "Hello! How can I help?"}

#: The FAQ's opening hours in three languages, translations of each other.
FAQ: list[dict[str, Any]] = [
    {"id": "hours", "language": "en", "questions": ["What are your opening hours?"], "answer": "Open 9 to 18."},
    {"id": "hours", "language": "ru", "questions": ["Какие у вас часы работы?"], "answer": "Работаем с 9 до 18."},
    {"id": "hours", "language": "pt", "questions": ["Qual é o horário?"], "answer": "Abrimos das 9 às 18."},
]
MULTILINGUAL: dict[str, Any] = {
    "wahub": {"language": "en", "languages": ["en", "ru", "pt"]},
    "conversations": QUICK,
    "ai": [{"platform": "faq", "name": "faq", "entries": FAQ}],
    "router": {
        "rules": [
            {
                "match": {"keyword": ["hello", "привет", "olá"]},
                "reply": {"en": "Hello!", "ru": "Здравствуйте!", "pt": "Olá!"},
            },
            {
                "match": {"keyword": ["operator", "оператор", "atendente"]},
                "handoff": {"en": "A person will answer.", "ru": "Вам ответит оператор.", "pt": "Uma pessoa responde."},
            },
        ],
        "fallback": "faq",
        "default_reply": {"en": "Sorry?", "ru": "Простите?", "pt": "Desculpe?"},
    },
}


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
    model: FakeOpenAIServer, *, ai: Mapping[str, Any] | None = None, more_ai: Iterable[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The raw configuration (no database yet): the greeting rule, then the model
    for what no rule matches, with the ``QUICK`` burst window."""
    return {
        "wahub": {"api_tokens": [TOKEN], "log_level": "warning"},
        "conversations": dict(QUICK),
        "router": {"rules": [GREETING_RULE], "fallback": "assistant"},
        "ai": [*more_ai, model_entry(model, **(ai or {}))],
    }


def closed_around_today() -> list[str]:
    """Yesterday, today and tomorrow (UTC): closed whenever the test runs, even across midnight."""
    today = dt.datetime.now(dt.UTC).date()
    return [(today + dt.timedelta(days=offset)).isoformat() for offset in (-1, 0, 1)]


@dataclass(eq=False)  # pluggy keeps plugins in sets
class TurnRecorder:
    """A plugin that answers every bot turn with one text naming the messages
    it saw, and keeps the texts of each turn's messages."""

    turns: list[list[str]] = field(default_factory=list)

    @hookimpl
    def route_message(self, hub: Hub, message: InboundMessage) -> Route:
        return Route(handler="recorder", respond=self._respond)

    async def _respond(self, hub: Hub, turn: Turn) -> list[OutgoingMessage]:
        texts = [message.text() for message in turn.messages]
        self.turns.append(texts)
        return [OutgoingMessage.text(turn.message.sender, f"Read {len(texts)}: " + " / ".join(texts))]


def text_of(message: Mapping[str, Any]) -> str:
    """The text a user reads in a message as the API shows it (a text, or buttons' body)."""
    body = message["message"]
    if body["type"] == "interactive":
        return str(body["interactive"]["body"]["text"])
    return str(body["text"]["body"])


def events_of(conversation: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """The conversation's owner changes as ``(change, from, to, actor)``."""
    return [(e["change"], e["from"], e["to"], e["actor"]) for e in conversation["events"]]


@dataclass
class Chat:
    """The user's side (webhooks) and the business's side (the REST API) of one daemon."""

    url: str
    http: aiohttp.ClientSession
    #: How many webhook events are stored and not yet handled.
    unfinished: Callable[[], Awaitable[int]]
    #: The daemon when it runs in this process: its hub is at hand.
    daemon: RunningDaemon | None = None

    @property
    def hub(self) -> Hub:
        """The hub of the in-process daemon (a daemon in another process has none here)."""
        if self.daemon is None:
            raise AssertionError("the daemon runs in another process: its hub is out of reach")
        return self.daemon.hub

    # -- the user's side

    async def post(self, events: list[dict[str, Any]]) -> None:
        """Post a signed sandbox webhook carrying ``events``; the daemon stores them before it answers."""
        body, headers = signed_sandbox_webhook(events)
        async with self.http.post(f"{self.url}/webhooks/sandbox", data=body, headers=headers) as response:
            assert response.status == 200, await response.text()

    async def send(self, text: str, *, sender: str = USER, message_id: str | None = None) -> str:
        """The user sends ``text``; returns its message id once the daemon stored it, not handled it."""
        event = sandbox_message(text, sender=sender, name="Ana", message_id=message_id)
        await self.post([event])
        return str(event["id"])

    async def say(self, text: str, *, sender: str = USER) -> str:
        """The user sends ``text``; returns its message id once the daemon has
        handled it (and any burst it ends): its replies, if any, are queued by then."""
        message_id = await self.send(text, sender=sender)
        await self.handled()
        return message_id

    async def handled(self) -> None:
        """Wait until every stored webhook event has run: its replies, if any, are queued by then."""

        async def idle() -> bool:
            return await self.unfinished() == 0

        await wait_until(idle, within=20)

    # -- the business's side

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The status and JSON answer of an API request with the test token."""
        async with self.http.request(method, f"{self.url}{path}", json=body, headers=AUTH) as response:
            return response.status, await response.json()

    async def ok(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        """The JSON answer of an API request that must answer ``expect``."""
        status, answer = await self.call(method, path, body)
        assert status == expect, (status, answer)
        return answer

    async def contacts(self, sender: str = USER) -> list[dict[str, Any]]:
        """The contacts the API finds for ``sender`` now."""
        found: list[dict[str, Any]] = (await self.ok("GET", f"/api/v1/contacts?q={sender}"))["contacts"]
        return found

    async def contact(self, sender: str = USER) -> dict[str, Any]:
        """The one contact of ``sender``, once its first message was handled."""
        [contact] = await wait_until(lambda: self.contacts(sender))
        return dict(contact)

    async def conversation_id(self, sender: str = USER) -> int:
        contact = await self.contact(sender)
        [conversation_id] = (await self.ok("GET", f"/api/v1/contacts/{contact['id']}"))["conversations"]
        return int(conversation_id)

    async def conversation(self, sender: str = USER) -> dict[str, Any]:
        """``GET /api/v1/conversations/{id}``: the owner, its events and the messages, newest first."""
        found: dict[str, Any] = await self.ok("GET", f"/api/v1/conversations/{await self.conversation_id(sender)}")
        return found

    async def change(self, verb: str, body: Any = None, sender: str = USER) -> dict[str, Any]:
        """``POST /api/v1/conversations/{id}/{verb}`` (handoff, resolve, assign)."""
        path = f"/api/v1/conversations/{await self.conversation_id(sender)}/{verb}"
        changed: dict[str, Any] = await self.ok("POST", path, body)
        return changed

    async def bot_messages(self, sender: str = USER) -> list[dict[str, Any]]:
        """Every message the business sent or kept (dropped, refused), oldest first."""
        messages = (await self.conversation(sender))["messages"]
        return [m for m in messages[::-1] if m["direction"] == "out"]

    async def replies(self, sender: str = USER) -> list[dict[str, Any]]:
        """The bot's replies in the conversation, oldest first, failed ones included."""
        return [m for m in await self.bot_messages(sender) if m["origin"] == "reply"]

    async def settled(self, sender: str = USER) -> list[dict[str, Any]]:
        """Wait until every event stored so far was handled and every message of
        the conversation left the queue; returns the business's messages then."""

        async def done() -> tuple[list[dict[str, Any]]] | None:
            if await self.unfinished():
                return None
            messages = await self.bot_messages(sender)
            # In a tuple: no message at all is settled too.
            return None if any(m["status"] == "queued" for m in messages) else (messages,)

        settled: tuple[list[dict[str, Any]]] = await wait_until(done, within=20)
        return settled[0]

    async def sent_texts(self, count: int, sender: str = USER) -> list[str]:
        """The texts of the bot's replies once at least ``count`` of them went to the
        provider and all else settled (those kept as failed, never sent, left out)."""

        async def enough() -> list[str] | None:
            messages = await self.settled(sender)
            sent = [text_of(m) for m in messages if m["origin"] == "reply" and m["status"] != "failed"]
            return sent if len(sent) >= count else None

        texts: list[str] = await wait_until(enough, within=30)
        return texts


@asynccontextmanager
async def running_chat(
    database_url: str,
    raw: Mapping[str, Any],
    *,
    plugins: Iterable[object] = (),
    clock: Clock | None = None,
) -> AsyncIterator[Chat]:
    """The daemon configured with ``raw`` (plus the test's API token) on
    ``database_url``, validated as ``wahub run`` does, in this process; and a client of it."""
    pm = plugin_manager(plugins)
    config = build_config(
        {**raw, "wahub": {"api_tokens": [TOKEN], **raw.get("wahub", {})}}, database=database_url, pm=pm
    )
    async with running_daemon(config, pm=pm, clock=clock) as daemon, aiohttp.ClientSession() as http:

        async def unfinished() -> int:
            count, _ = await daemon.hub.storage.inbox_depth()
            return count

        yield Chat(daemon.url, http, unfinished, daemon)


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


def meta_echo(graph: FakeGraphServer, text: str, *, to: str) -> dict[str, Any]:
    """The ``value`` of a ``smb_message_echoes`` change, as Meta posts what the
    business sent ``to`` from the WhatsApp Business app."""
    metadata = {"display_phone_number": graph.display_phone_number, "phone_number_id": graph.phone_number_id}
    echo = {
        "from": graph.display_phone_number,
        "to": to,
        "id": f"wamid.ECHO{uuid.uuid4().hex}",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": text},
    }
    return {"messaging_product": "whatsapp", "metadata": metadata, "message_echoes": [echo]}
