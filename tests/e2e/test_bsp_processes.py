"""Each provider through ``kill -9``: a real daemon process sending to the
provider's fake cloud on a real socket, killed in the middle of its sends and
right after accepting a webhook, then started again on the same SQLite file.
Nothing accepted is lost and nothing is sent twice beyond what was in flight."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.daemon import Daemon, free_port, start_daemon
from tests.helpers import AUTH, TOKEN
from tests.plugins.providers.test_bsp_engine import FAKES, USER, fake_for
from wahub.testing import wait_until
from wahub.testing.fake_bsp import FakeBSP

NOTICES = 40


def _write_config(path: Path, database: str, fake: FakeBSP) -> Path:
    entry = fake.provider_entry("main", pair_limit=None, messages_per_second=10)
    config = {
        "wahub": {"database": database, "api_tokens": [TOKEN], "http": {"port": "!port"}, "log_level": "warning"},
        "providers": [entry],
        "router": {"rules": [{"match": {"keyword": "ping"}, "reply": "pong"}]},
    }
    path.write_text(json.dumps(config).replace('"!port"', "!env_var WAHUB_PORT"))
    return path


def _count(db: Path, query: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(query).fetchone()[0])


def _texts(fake: FakeBSP, text: str) -> int:
    return sum(1 for sent in fake.sent if sent.text == text)


@pytest.mark.parametrize("platform", sorted(FAKES))
async def test_kill_9_loses_nothing_accepted_and_sends_nothing_twice(platform: str, tmp_path: Path) -> None:
    # Slow answers keep sends in flight, so the kill lands in the middle of them.
    fake = await fake_for(platform, statuses=False, latency=0.2).start()
    db = tmp_path / "wahub.db"
    config = _write_config(tmp_path / "config.yaml", f"sqlite:///{db}", fake)
    port = free_port()
    daemon: Daemon | None = start_daemon(config, tmp_path, port)
    restarted: Daemon | None = None
    try:
        assert daemon is not None
        await asyncio.to_thread(daemon.wait_healthy, 20)
        fake.attach(daemon.url, "main")
        async with aiohttp.ClientSession() as http:
            assert await fake.send_inbound(USER, "hello") == 200
            for n in range(NOTICES):
                body = {"to": USER, "type": "text", "text": {"body": f"notice {n}"}}
                for _attempt in range(100):  # until the window the webhook opened is processed
                    headers = {**AUTH, "Idempotency-Key": f"notice-{n}"}
                    async with http.post(f"{daemon.url}/api/v1/messages", json=body, headers=headers) as response:
                        if response.status == 202:
                            break
                        assert (await response.json())["error"]["code"] == "window_closed"
                    await asyncio.sleep(0.05)
            await wait_until(lambda: _sent_at_least(fake, 5), within=30)
            # The webhook is answered 200 once stored: a kill right after it loses nothing.
            assert await fake.send_inbound(USER, "ping") == 200
            daemon.kill()
            daemon = None
            await fake.settle()  # the sends the fake was still answering count as in flight
            recorded = _count(db, "SELECT count(*) FROM messages WHERE direction = 'out' AND status != 'queued'")
            in_flight = len(fake.sent) - recorded
            assert recorded < NOTICES, "the kill came after every notice was sent"

            restarted = start_daemon(config, tmp_path, port)
            await asyncio.to_thread(restarted.wait_healthy, 20)

            async def everything_sent() -> bool:
                notices = all(_texts(fake, f"notice {n}") for n in range(NOTICES))
                return notices and _texts(fake, "pong") >= 1

            await wait_until(everything_sent, within=60)
        doubled = sum(_texts(fake, f"notice {n}") - 1 for n in range(NOTICES))
        assert doubled <= max(in_flight, 0)
        assert _texts(fake, "pong") == 1
        assert _count(db, "SELECT count(*) FROM messages WHERE direction = 'in'") == 2
    finally:
        for process in (daemon, restarted):
            if process is not None:
                process.terminate()
        await fake.close()


async def _sent_at_least(fake: FakeBSP, count: int) -> bool:
    return len(fake.sent) >= count
