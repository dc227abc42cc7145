"""The send path across crashes and replicas: real daemon processes, a fake
provider cloud on a real socket, SQLite and PostgreSQL files on disk."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.e2e.daemon import Daemon, free_port, start_daemon
from tests.helpers import AUTH, TOKEN
from wahub.testing import signed_sandbox_webhook, wait_until
from wahub.testing.fake_provider import DEFAULT_SECRET, FakeProviderServer

PLUGIN = ("wahub.testing.fake_provider",)
USERS = [f"1555100{n:04d}" for n in range(50)]


def write_config(path: Path, database: str, server: FakeProviderServer) -> Path:
    entry = server.provider_entry(messages_per_second=None, pair_limit=None)
    config = {
        "wahub": {"database": database, "api_tokens": [TOKEN], "http": {"port": "!port"}, "log_level": "warning"},
        "providers": [entry],
    }
    # The port comes from WAHUB_PORT, so one file serves several daemons.
    text = json.dumps(config).replace('"!port"', "!env_var WAHUB_PORT")
    path.write_text(text)
    return path


async def open_windows(urls: list[str], http: aiohttp.ClientSession) -> None:
    """Every user writes once (to any replica), opening their service window."""
    for index, user in enumerate(USERS):
        event = {
            "type": "message",
            "id": f"hello-{user}",
            "from": user,
            "timestamp": time.time(),
            "message": {"type": "text", "text": {"body": "hello"}},
        }
        body, headers = signed_sandbox_webhook([event], secret=DEFAULT_SECRET)
        async with http.post(f"{urls[index % len(urls)]}/webhooks/fake", data=body, headers=headers) as response:
            assert response.status == 200


async def queue_messages(urls: list[str], http: aiohttp.ClientSession, count: int) -> None:
    """``count`` notifications through the REST API, spread over users and replicas."""
    semaphore = asyncio.Semaphore(16)

    async def one(n: int) -> None:
        body = {"to": USERS[n % len(USERS)], "type": "text", "text": {"body": f"notice {n}"}}
        headers = {**AUTH, "Idempotency-Key": f"notice-{n}"}
        async with semaphore:
            # Retried like an integrator would: while the window is still opening on a busy
            # replica, or while a daemon restarts; the Idempotency-Key keeps it to one message.
            for _attempt in range(150):
                try:
                    async with http.post(f"{urls[n % len(urls)]}/api/v1/messages", json=body, headers=headers) as resp:
                        if resp.status == 202:
                            return
                        answer = await resp.json()
                        assert answer["error"]["code"] == "window_closed", answer
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            raise AssertionError(f"notice {n} was never accepted")

    await asyncio.gather(*(one(n) for n in range(count)))


def duplicates(server: FakeProviderServer) -> int:
    return sum(count - 1 for count in server.bodies_by_text().values())


def in_flight(server: FakeProviderServer, recorded: int) -> int:
    """Calls the provider had taken (or was still answering) that the database had not recorded."""
    taken = sum(1 for call in server.calls if call.status in (200, None))
    return taken - recorded


async def test_kill_9_while_sending_1000_messages(tmp_path: Path) -> None:
    # Slow answers keep many sends in flight, so the kill lands in the middle of them.
    server = await FakeProviderServer(latency=0.3, statuses=False).start()
    db = tmp_path / "wahub.db"
    config = write_config(tmp_path / "config.yaml", f"sqlite:///{db}", server)
    port = free_port()
    daemon = start_daemon(config, tmp_path, port, plugins=PLUGIN)
    restarted: Daemon | None = None
    try:
        daemon.wait_healthy()
        async with aiohttp.ClientSession() as http:
            await open_windows([daemon.url], http)
            queueing = asyncio.create_task(queue_messages([daemon.url], http, 1000))
            await wait_until(lambda: _at_least(server, 300), within=60)
            daemon.kill()
            # Requests still unread in socket buffers at the kill were on the wire too.
            await server.drained()
            recorded = _sqlite_count(db, "SELECT count(*) FROM messages WHERE direction = 'out' AND status != 'queued'")
            open_at_kill = in_flight(server, recorded)
            assert recorded < 900, "the kill came after nearly every message was sent"

            restarted = start_daemon(config, tmp_path, port, plugins=PLUGIN)
            restarted.wait_healthy()
            await queueing

            async def all_sent() -> bool:
                return (
                    _sqlite_count(db, "SELECT count(*) FROM messages WHERE direction = 'out' AND status = 'sent'")
                    == 1000
                )

            await wait_until(all_sent, within=120)
        texts = server.bodies_by_text()
        assert set(texts) == {f"notice {n}" for n in range(1000)}
        doubled = duplicates(server)
        print(f"kill -9 while sending: {recorded} recorded, {open_at_kill} in flight at the kill, {doubled} duplicates")
        assert doubled <= open_at_kill
    finally:
        if restarted is not None:
            restarted.terminate()
        await server.close()


@pytest.mark.postgres
async def test_three_replicas_share_the_work_and_hand_over_dispatching(tmp_path: Path, empty_postgres_url: str) -> None:
    server = await FakeProviderServer(latency=0.05, statuses=False).start()
    config = write_config(tmp_path / "config.yaml", empty_postgres_url, server)
    daemons = [start_daemon(config, tmp_path, free_port(), plugins=PLUGIN) for _ in range(3)]
    try:
        for daemon in daemons:
            daemon.wait_healthy(within=20)
        urls = [d.url for d in daemons]
        async with aiohttp.ClientSession() as http:
            holder = await _dispatcher(daemons, http)
            await open_windows(urls, http)
            await queue_messages(urls, http, 1000)
            await wait_until(lambda: _at_least(server, 300), within=60)

            holder.kill()
            killed_at = time.monotonic()
            await server.drained()  # only the holder sends: the others have no connection here
            recorded = await _pg_count(
                empty_postgres_url, "SELECT count(*) FROM messages WHERE direction = 'out' AND status != 'queued'"
            )
            open_at_kill = in_flight(server, recorded)
            survivors = [d for d in daemons if d is not holder]
            successor = await _dispatcher(survivors, http, within=15)
            handover = time.monotonic() - killed_at

            async def all_sent() -> bool:
                sent = "SELECT count(*) FROM messages WHERE direction = 'out' AND status = 'sent'"
                return await _pg_count(empty_postgres_url, sent) == 1000

            await wait_until(all_sent, within=120)
            inbound = await _pg_count(empty_postgres_url, "SELECT count(*) FROM messages WHERE direction = 'in'")
        assert inbound == len(USERS)  # each webhook stored once, whichever replica took it
        assert set(server.bodies_by_text()) == {f"notice {n}" for n in range(1000)}
        doubled = duplicates(server)
        print(
            f"replicas: {successor.url} took over dispatching {handover:.1f} s after the kill; "
            f"{open_at_kill} sends in flight at the kill, {doubled} duplicates"
        )
        assert handover <= 10
        assert doubled <= open_at_kill
    finally:
        for daemon in daemons:
            if daemon.process.poll() is None:
                daemon.terminate()
        await server.close()


async def _dispatcher(daemons: list[Daemon], http: aiohttp.ClientSession, within: float = 10.0) -> Daemon:
    """The one daemon that runs the fake number's dispatcher (per /readyz)."""

    async def holder() -> Daemon | None:
        found = []
        for daemon in daemons:
            async with http.get(f"{daemon.url}/readyz") as response:
                body: dict[str, Any] = await response.json()
            if "dispatch:fake" in body["roles"]:
                found.append(daemon)
        assert len(found) <= 1, "two replicas dispatch for one number"
        return found[0] if found else None

    result: Daemon = await wait_until(holder, within=within, every=0.2)
    return result


async def _at_least(server: FakeProviderServer, count: int) -> bool:
    return len(server.accepted()) >= count


def _sqlite_count(db: Path, query: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(query).fetchone()[0])


async def _pg_count(url: str, query: str) -> int:
    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://"))
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()
