"""The daemon running one provider entry ``main`` against a fake provider cloud
(a ``FakeBSP``), and the calls the provider tests make to it over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import AUTH, TOKEN
from wahub.testing import RunningDaemon, build_config, plugin_manager, running_daemon, wait_until
from wahub.testing.fake_bsp import FakeBSP

USER = "16505551234"


@dataclass
class BspDaemon:
    daemon: RunningDaemon
    fake: FakeBSP
    http: aiohttp.ClientSession
    #: the user the tests speak with
    user: str = USER

    async def post_message(self, body: dict[str, Any], **headers: str) -> tuple[int, dict[str, Any]]:
        """POST ``body`` to the messages API; the status and the answer."""
        url = f"{self.daemon.url}/api/v1/messages"
        async with self.http.post(url, json=body, headers={**AUTH, **headers}) as response:
            answer: dict[str, Any] = await response.json()
            return response.status, answer

    async def send(self, body: dict[str, Any]) -> dict[str, Any]:
        """A message accepted by the messages API (202); its answer."""
        status, answer = await self.post_message(body)
        assert status == 202, answer
        return answer

    async def message(self, message_id: int) -> dict[str, Any]:
        async with self.http.get(f"{self.daemon.url}/api/v1/messages/{message_id}", headers=AUTH) as response:
            assert response.status == 200
            found: dict[str, Any] = await response.json()
            return found

    async def status_becomes(self, message_id: int, *statuses: str, within: float = 20) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            found = await self.message(message_id)
            return found if found["status"] in statuses else None

        result: dict[str, Any] = await wait_until(reached, within=within)
        return result

    async def processed(self) -> None:
        """Once every webhook received is processed."""

        async def empty() -> bool:
            depth, _ = await self.daemon.hub.storage.inbox_depth()
            return depth == 0

        await wait_until(empty, within=15)

    async def history(self, address: str | None = None) -> list[dict[str, Any]]:
        """The messages of entry ``main`` exchanged with ``address`` (the user), once every webhook is processed."""
        await self.processed()
        return await self.daemon.hub.storage.messages.history("main", address or self.user)

    async def user_writes(self, text: str = "hi") -> None:
        assert await self.fake.send_inbound(self.user, text) == 200
        await self.history()


@asynccontextmanager
async def bsp_daemon(
    fake: FakeBSP,
    database: str,
    tmp_path: Path,
    *,
    entries: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
    public_url: bool = False,
) -> AsyncIterator[BspDaemon]:
    """The daemon with ``fake``'s entry ``main`` (or those ``entries()`` gives once the
    fake listens), the fake started and attached to it; with ``public_url``, ``main``
    hands out files under the daemon's URL."""
    await fake.start()
    raw = {
        "wahub": {"api_tokens": [TOKEN], "database": database, "media": {"directory": str(tmp_path / "media")}},
        "providers": list(entries()) if entries is not None else [fake.provider_entry("main", pair_limit=None)],
    }
    pm = plugin_manager()
    try:
        config = build_config(raw, database=database, pm=pm)
        async with running_daemon(config, pm=pm, public_url_for=["main"] if public_url else []) as daemon:
            fake.attach(daemon.url, "main")
            async with aiohttp.ClientSession() as http:
                yield BspDaemon(daemon, fake, http)
    finally:
        await fake.close()
