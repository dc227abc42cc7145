"""A notification to 1,000 contacts across a crash: a real daemon process, a
fake provider cloud on a real socket, a SQLite file on disk, ``kill -9`` in
the middle of the sending, then a restart."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import aiohttp

from tests.e2e.daemon import Daemon, free_port, start_daemon
from tests.e2e.test_engine_processes import PLUGIN, in_flight, write_config
from tests.helpers import AUTH
from wahub.testing import wait_until
from wahub.testing.fake_provider import FakeProviderServer

RECIPIENTS = [f"1555600{n:04d}" for n in range(1000)]
OPTED_OUT = RECIPIENTS[7::33][:30]


def count(db: Path, query: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(query).fetchone()[0])


async def opt_out(url: str, http: aiohttp.ClientSession) -> None:
    for address in OPTED_OUT:
        body = {"action": "opt_out", "evidence": {"form": "unsubscribe page"}}
        async with http.post(f"{url}/api/v1/contacts/fake/{address}/consent", json=body, headers=AUTH) as response:
            assert response.status == 200, await response.text()


async def test_kill_9_while_sending_a_notification_to_1000_contacts(tmp_path: Path) -> None:
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
            await opt_out(daemon.url, http)
            body = {"template": "order_update", "language": "en", "to": RECIPIENTS, "parameters": {"1": "Ana"}}
            headers = {**AUTH, "Idempotency-Key": "spring-sale"}
            async with http.post(f"{daemon.url}/api/v1/notifications", json=body, headers=headers) as response:
                assert response.status == 202, await response.text()
                assert (await response.json())["refused"] == {"opted_out": 30}

            async def about_400_sent() -> bool:
                return len(server.accepted()) >= 400

            await wait_until(about_400_sent, within=60)
            daemon.kill()
            recorded = count(db, "SELECT count(*) FROM messages WHERE direction = 'out' AND status != 'queued'")

            await server.drained()  # what it had on the wire at the kill counts as in flight
            open_at_kill = in_flight(server, recorded)
            assert recorded < 900, "the kill came after nearly every message was sent"

            restarted = start_daemon(config, tmp_path, port, plugins=PLUGIN)
            restarted.wait_healthy()

            async def all_sent() -> bool:
                return count(db, "SELECT count(*) FROM messages WHERE status = 'sent'") == 970

            await wait_until(all_sent, within=120)
        calls = Counter(call.body["to"] for call in server.accepted())
        assert set(calls) == set(RECIPIENTS) - set(OPTED_OUT)
        doubled = sum(times - 1 for times in calls.values())
        print(f"kill -9 during a notification: {recorded} recorded, {open_at_kill} in flight, {doubled} duplicates")
        assert doubled <= open_at_kill
        assert count(db, "SELECT count(*) FROM messages WHERE campaign_id IS NOT NULL") == 970
        with sqlite3.connect(db) as conn:
            state, position, refused = conn.execute("SELECT state, position, refused FROM campaigns").fetchone()
        assert (state, position, json.loads(refused)) == ("queued", 1000, {"opted_out": 30})
    finally:
        if restarted is not None:
            restarted.terminate()
        await server.close()
