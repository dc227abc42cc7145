"""What the conversation acceptance tests share: a daemon on a real socket and a
real database, a client that writes as the user (signed sandbox webhooks) and
works as an operator (the REST API with a bearer token), and a plugin that
answers every turn and keeps what each turn saw."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

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

USER = "15551234567"
#: A short burst window, for the tests that are not about it.
QUICK = {"debounce_seconds": 0.3}
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


def reply_text(message: Mapping[str, Any]) -> str:
    """The text a user reads in a message the business sent (a text, or buttons' body)."""
    body = message["message"]
    if body["type"] == "interactive":
        return str(body["interactive"]["body"]["text"])
    return str(body["text"]["body"])


@dataclass
class Desk:
    """The user's side (webhooks) and the operator's side (the REST API) of one daemon."""

    daemon: RunningDaemon
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The status and JSON answer of an API request with the test token."""
        async with self.http.request(method, f"{self.daemon.url}{path}", json=body, headers=AUTH) as response:
            return response.status, await response.json()

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self.call(method, path, body)
        assert status in (200, 202), (status, answer)
        return answer

    async def post(self, events: list[dict[str, Any]]) -> None:
        """Post a signed sandbox webhook carrying ``events``; the daemon stores them before it answers."""
        body, headers = signed_sandbox_webhook(events)
        async with self.http.post(f"{self.daemon.url}/webhooks/sandbox", data=body, headers=headers) as response:
            assert response.status == 200, await response.text()

    async def say(self, text: str, *, sender: str = USER) -> None:
        """The user sends ``text``; returns once the daemon has handled it (and any burst it ends)."""
        await self.post([sandbox_message(text, sender=sender)])
        await self.settled()

    async def settled(self) -> None:
        """Wait until every stored webhook event has run: its replies, if any, are queued by then."""

        async def idle() -> bool:
            depth, _ = await self.daemon.hub.storage.inbox_depth()
            return depth == 0

        await wait_until(idle)

    async def conversation_id(self, sender: str = USER) -> int:
        [contact] = await self.contacts(sender)
        [conversation_id] = (await self.ok("GET", f"/api/v1/contacts/{contact['id']}"))["conversations"]
        return int(conversation_id)

    async def contacts(self, sender: str = USER) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.ok("GET", f"/api/v1/contacts?q={sender}"))["contacts"]
        return found

    async def conversation(self, sender: str = USER) -> dict[str, Any]:
        """``GET /api/v1/conversations/{id}`` of the user's conversation."""
        found: dict[str, Any] = await self.ok("GET", f"/api/v1/conversations/{await self.conversation_id(sender)}")
        return found

    async def change(self, verb: str, body: Any = None, sender: str = USER) -> dict[str, Any]:
        """``POST /api/v1/conversations/{id}/{verb}`` (handoff, resolve, assign)."""
        path = f"/api/v1/conversations/{await self.conversation_id(sender)}/{verb}"
        changed: dict[str, Any] = await self.ok("POST", path, body)
        return changed

    async def replies(self, sender: str = USER) -> list[dict[str, Any]]:
        """The bot's replies in the conversation, oldest first, failed ones included."""
        messages = (await self.conversation(sender))["messages"]
        return [m for m in messages[::-1] if m["direction"] == "out" and m["origin"] == "reply"]

    async def sent_replies(self, count: int, sender: str = USER) -> list[str]:
        """The texts of the bot's replies, once exactly ``count`` of them went to the
        provider (those kept as failed, never sent, left out)."""

        async def sent() -> list[str] | None:
            replies = [reply for reply in await self.replies(sender) if reply["status"] != "failed"]
            if len(replies) != count or any(reply["status"] == "queued" for reply in replies):
                return None
            return [reply_text(reply) for reply in replies]

        texts: list[str] = await wait_until(sent)
        return texts


def events_of(conversation: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """The conversation's owner changes as ``(change, from, to, actor)``."""
    return [(e["change"], e["from"], e["to"], e["actor"]) for e in conversation["events"]]


@asynccontextmanager
async def desk(
    database_url: str,
    raw: Mapping[str, Any],
    *,
    plugins: Iterable[object] = (),
    clock: Clock | None = None,
) -> AsyncIterator[Desk]:
    """The daemon configured with ``raw`` (plus the test's API token) on ``database_url``."""
    pm = plugin_manager(plugins)
    config = build_config(
        {**raw, "wahub": {"api_tokens": [TOKEN], **raw.get("wahub", {})}}, database=database_url, pm=pm
    )
    async with running_daemon(config, pm=pm, clock=clock) as daemon, aiohttp.ClientSession() as http:
        yield Desk(daemon, http)


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
