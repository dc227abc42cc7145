"""What the inbox's API, live and assignment tests share: a daemon whose router
hands a conversation to a person on "operator", operators signed in with a
session of their own, and the user writing through the sandbox's signed webhook."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from wahub.core.clock import Clock
from wahub.testing import (
    TEST_SECRET,
    RunningDaemon,
    build_config,
    running_daemon,
    sandbox_message,
    signed_sandbox_webhook,
    wait_until,
)

USER = "15551234567"
TEMPLATE = {"name": "order_ready", "language": "en", "text": "Hello {{1}}, your order {{2}} is ready"}


def inbox_config(database_url: str, **inbox: Any) -> dict[str, Any]:
    raw = {
        "providers": [{"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET, "templates": [TEMPLATE]}],
        "router": {"rules": [{"match": {"keyword": ["operator"]}, "handoff": "A person will answer."}]},
        "inbox": {
            "session_idle_hours": 24 * 30,
            "session_days": 365,
            "canned_replies": [{"title": "Thanks", "text": {"en": "Thank you!", "pt": "Obrigado!"}}],
            **inbox,
        },
    }
    return build_config(raw, database=database_url)


@asynccontextmanager
async def inbox_daemon(database_url: str, *, clock: Clock | None = None, **inbox: Any) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(inbox_config(database_url, **inbox), clock=clock) as daemon:
        yield daemon


@dataclass
class Desk:
    """One operator's signed-in page: the JSON API and the socket with their session."""

    daemon: RunningDaemon
    http: aiohttp.ClientSession
    name: str
    token: str
    csrf: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": f"wahub_session={self.token}", "Origin": self.daemon.url, "X-CSRF-Token": self.csrf}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        url = f"{self.daemon.url}/inbox/api{path}"
        async with self.http.request(method, url, json=body, headers=self.headers) as answer:
            return answer.status, await answer.json()

    async def ok(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        status, answer = await self.call(method, path, body)
        assert status == expect, (status, answer)
        return answer

    @asynccontextmanager
    async def socket(self, after: int | None = None) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        query = "" if after is None else f"?after={after}"
        async with self.http.ws_connect(f"{self.daemon.url}/inbox/ws{query}", headers=self.headers) as ws:
            yield ws


async def frame(ws: aiohttp.ClientWebSocketResponse, within: float = 10.0) -> dict[str, Any]:
    message = await ws.receive(timeout=within)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    data: dict[str, Any] = json.loads(message.data)
    return data


class Follower:
    """The activity events one socket received, all kept, to wait for one among them."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    def _matching(self, wanted: Mapping[str, Any]) -> bool:
        for event in self.events:
            entry = event["entry"] or {}
            if event["kind"] == wanted["kind"] and all(entry.get(k) == v for k, v in wanted.items() if k != "kind"):
                return True
        return False

    async def until(self, wanted: Mapping[str, Any], within: float = 10.0) -> list[dict[str, Any]]:
        """Every event received once one of kind ``wanted["kind"]`` whose entry holds ``wanted``'s other keys is."""
        deadline = time.monotonic() + within
        while not self._matching(wanted):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {wanted} event within {within} s; got {self.events}")
            got = await frame(self.ws, within=max(0.1, deadline - time.monotonic()))
            if got["type"] == "activity":
                self.events.extend(got["events"])
        return self.events


async def desk(daemon: RunningDaemon, http: aiohttp.ClientSession, name: str, *, admin: bool = False) -> Desk:
    """A new operator ``name`` with a signed-in session."""
    store = daemon.hub.storage.operators
    operator = await store.add(name, "$argon2id$unused", admin=admin, now=time.time())
    assert operator is not None
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
    now = time.time()
    await store.start_session(
        operator.id,
        hashlib.sha256(token.encode()).hexdigest(),
        csrf,
        address=None,
        user_agent=None,
        now=now,
        expires_at=now + 10 * 365 * 86400,
    )
    return Desk(daemon, http, name, token, csrf)


async def user_says(daemon: RunningDaemon, http: aiohttp.ClientSession, text: str, *, sender: str = USER) -> None:
    """The user sends ``text``; returns once the daemon has handled it."""
    body, headers = signed_sandbox_webhook([sandbox_message(text, sender=sender, name="Ana")])
    async with http.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as answer:
        assert answer.status == 200, await answer.text()

    async def idle() -> bool:
        count, _ = await daemon.hub.storage.inbox_depth()
        return count == 0

    await wait_until(idle, within=20)


async def queued_conversation(daemon: RunningDaemon, http: aiohttp.ClientSession, *, sender: str = USER) -> int:
    """The user asks for a person; the id of their conversation, queued."""
    await user_says(daemon, http, "operator", sender=sender)
    page = await daemon.hub.storage.conversations.list(owners=["queued"])
    [row] = [row for row in page.items if row["address"] == sender]
    return int(row["id"])
