"""A client of the REST API for the conversation and contact tests: a daemon
on a real socket and a real database, with the sandbox provider, a rule that
answers "hi", and a plugin that keeps the ``conversation_changed`` calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.helpers import AUTH, TOKEN
from wahub import hookimpl
from wahub.core.models import Conversation, OwnershipChange
from wahub.testing import (
    RunningDaemon,
    build_config,
    plugin_manager,
    running_daemon,
    sandbox_message,
    signed_sandbox_webhook,
    wait_until,
)

ANA, BRUNO, CARLA = "15551230001", "15551230002", "15551230003"
DAY = 86400.0
ROUTER = {"router": {"rules": [{"match": {"keyword": "hi"}, "reply": "Hello!"}]}}


@dataclass(eq=False)  # pluggy keeps plugins in sets
class Observer:
    """A plugin that keeps every ``conversation_changed`` it is told of."""

    seen: list[tuple[Conversation, OwnershipChange]] = field(default_factory=list)

    @hookimpl
    def conversation_changed(self, conversation: Conversation, change: OwnershipChange) -> None:
        self.seen.append((conversation, change))


@dataclass
class Api:
    daemon: RunningDaemon
    http: aiohttp.ClientSession
    observer: Observer

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        """The status and JSON answer of a request with the test token."""
        async with self.http.request(
            method, f"{self.daemon.url}{path}", json=body, params=params or None, headers=AUTH
        ) as response:
            assert response.content_type == "application/json", await response.text()
            return response.status, await response.json()

    async def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        status, answer = await self.call(method, path, body, **params)
        assert status == 200, answer
        return answer

    async def webhook(self, events: list[dict[str, Any]]) -> None:
        body, headers = signed_sandbox_webhook(events)
        async with self.http.post(f"{self.daemon.url}/webhooks/sandbox", data=body, headers=headers) as response:
            assert response.status == 200, await response.text()
        await self.settled()

    async def settled(self) -> None:
        """Wait until every stored webhook event has run."""

        async def idle() -> bool:
            depth, _ = await self.daemon.hub.storage.inbox_depth()
            return depth == 0

        await wait_until(idle)

    async def write(self, text: str, *, sender: str, name: str = "Ana", at: float | None = None) -> dict[str, Any]:
        """A user's message through the webhook; the conversation it is in, once it shows there."""
        event = sandbox_message(text, sender=sender, name=name)
        if at is not None:
            event["timestamp"] = at
        await self.webhook([event])
        [contact] = (await self.ok("GET", "/api/v1/contacts", q=sender))["contacts"]
        [conversation_id] = (await self.ok("GET", f"/api/v1/contacts/{contact['id']}"))["conversations"]
        found: dict[str, Any] = await self.ok("GET", f"/api/v1/conversations/{conversation_id}")
        assert event["id"] in [message["provider_message_id"] for message in found["messages"]]
        return found


@asynccontextmanager
async def running_api(database_url: str) -> AsyncIterator[Api]:
    """The daemon on ``database_url`` and a client of its API."""
    observer = Observer()
    pm = plugin_manager([observer])
    config = build_config({"wahub": {"api_tokens": [TOKEN]}, **ROUTER}, database=database_url, pm=pm)
    async with running_daemon(config, pm=pm) as daemon, aiohttp.ClientSession() as http:
        yield Api(daemon, http, observer)
