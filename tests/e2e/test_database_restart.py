"""PostgreSQL restarts under load: two real daemon processes on a private
cluster, webhooks and API sends arriving, the fake provider cloud answering
slowly so that sends are in flight when the server goes away."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import sqlalchemy as sa

from tests.e2e.daemon import Daemon, free_port, start_daemon
from tests.e2e.private_postgres import PrivateCluster
from tests.helpers import AUTH, TOKEN
from wahub.core.models import OutgoingMessage
from wahub.core.storage.leadership import Leadership
from wahub.core.storage.leases import database_unreachable
from wahub.core.storage.store import Storage
from wahub.testing import signed_sandbox_webhook, wait_until
from wahub.testing.fake_provider import DEFAULT_SECRET, FakeProviderServer

USERS = [f"1555200{n:04d}" for n in range(40)]
PINGS = 150
NOTICES = 150
#: The old leases (inbox 120 s, outbox 60 s) would keep interrupted rows waiting far longer than this.
RETAKEN_WITHIN = 10.0

# An observer that takes a while (a CRM call, say), so that inbox rows are in progress at the restart.
SLOW_OBSERVER = """
import asyncio
from wahub import hookimpl

@hookimpl
async def inbound_message(hub, message):
    await asyncio.sleep(0.2)
"""


def write_config(path: Path, database: str, server: FakeProviderServer) -> Path:
    config = {
        "wahub": {
            "database": database,
            "api_tokens": [TOKEN],
            "http": {"port": "!port"},
            "log_level": "info",
            "workers": 16,
        },
        "providers": [server.provider_entry(messages_per_second=None, pair_limit=None)],
        "router": {"rules": [{"match": {"regex": r"ping (\d+)"}, "reply": "pong {1}"}]},
        # Every ping gets its own pong, however fast a user pings.
        "conversations": {"debounce_seconds": 0},
    }
    path.write_text(json.dumps(config).replace('"!port"', "!env_var WAHUB_PORT"))
    return path


async def post_until_accepted(http: aiohttp.ClientSession, url: str, ok: int, **request: Any) -> None:
    """Retry like a provider or an integrator does while the database is away."""
    deadline = time.monotonic() + 60
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            async with http.post(url, **request) as response:
                if response.status == ok:
                    return
                last = f"{response.status} {await response.text()}"
        except aiohttp.ClientError as exc:
            last = repr(exc)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered {ok} within 60 s; last: {last}")


async def load(urls: list[str], http: aiohttp.ClientSession) -> None:
    """Each user pings (the bot answers "pong N"), then gets notices through the REST API."""
    # Few webhooks at once: more would make the intake's commits large, and the workers
    # step back then (intake first), which is not what this test is about.
    webhooks, api_calls = asyncio.Semaphore(2), asyncio.Semaphore(8)

    async def ping(n: int) -> None:
        user = USERS[n % len(USERS)]
        event = {
            "type": "message",
            "id": f"ping-{n}",
            "from": user,
            "timestamp": time.time(),
            "message": {"type": "text", "text": {"body": f"ping {n}"}},
        }
        body, headers = signed_sandbox_webhook([event], secret=DEFAULT_SECRET)
        async with webhooks:
            await post_until_accepted(http, f"{urls[n % len(urls)]}/webhooks/fake", 200, data=body, headers=headers)

    async def notice(n: int) -> None:
        body = {"to": USERS[n % len(USERS)], "type": "text", "text": {"body": f"notice {n}"}}
        headers = {**AUTH, "Idempotency-Key": f"notice-{n}"}
        async with api_calls:
            # Refused (window_closed) until the user's first ping is processed; retried like the rest.
            await post_until_accepted(http, f"{urls[n % len(urls)]}/api/v1/messages", 202, json=body, headers=headers)

    tasks = []
    try:
        for n in range(max(PINGS, NOTICES)):
            if n < PINGS:
                tasks.append(asyncio.create_task(ping(n)))
            if n < NOTICES:
                tasks.append(asyncio.create_task(notice(n)))
            await asyncio.sleep(0.03)
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class RoleWatch:
    """Samples every daemon's /readyz roles; a conflict is two daemons dispatching between two samples of one."""

    def __init__(self, daemons: list[Daemon], http: aiohttp.ClientSession) -> None:
        self.daemons = daemons
        self.http = http
        self.conflicts: list[str] = []
        self.holders: list[tuple[float, list[str]]] = []

    async def roles(self, daemon: Daemon) -> list[str]:
        try:
            async with self.http.get(f"{daemon.url}/readyz", timeout=aiohttp.ClientTimeout(total=5)) as response:
                body: dict[str, Any] = await response.json()
        except (aiohttp.ClientError, TimeoutError):
            return []
        roles: list[str] = body["roles"]
        return roles

    async def run(self) -> None:
        first, second = self.daemons
        while True:
            before = "dispatch:fake" in await self.roles(first)
            other = "dispatch:fake" in await self.roles(second)
            after = "dispatch:fake" in await self.roles(first)
            if before and other and after:
                self.conflicts.append(f"both daemons dispatched at {time.time():.3f}")
            holders = [d.url for d, held in ((first, before and after), (second, other)) if held]
            self.holders.append((time.time(), holders))
            await asyncio.sleep(0.1)

    def first_holder_after(self, moment: float) -> float | None:
        return next((at for at, holders in self.holders if at >= moment and holders), None)


async def pg(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://"), timeout=5)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()


async def claimed_now(url: str) -> tuple[set[int], set[int], float]:
    """Inbox rows in progress, queued messages under a claim, and the end of the latest lease."""
    inbox = await pg(url, "SELECT id, lease_until FROM inbox WHERE state = 'processing'")
    outbox = await pg(url, "SELECT id, lease_until FROM messages WHERE status = 'queued' AND lease_until IS NOT NULL")
    last = max((row["lease_until"] for row in [*inbox, *outbox]), default=0.0)
    return {row["id"] for row in inbox}, {row["id"] for row in outbox}, last


async def take_down(cluster: PrivateCluster, outage: str, last_lease: float) -> float:
    """Restart the cluster, or keep it down until every lease taken before has run out; returns when it is back."""
    if outage == "restart":
        return await asyncio.to_thread(cluster.restart)
    await asyncio.to_thread(cluster.stop)

    async def leases_over() -> bool:
        return time.time() > last_lease

    await wait_until(leases_over, within=30, every=0.1)
    return await asyncio.to_thread(cluster.start)


@pytest.mark.postgres
@pytest.mark.parametrize("outage", ["restart", "longer_than_the_leases"])
async def test_rows_claimed_at_a_restart_are_taken_again_at_once_and_sent_once(
    tmp_path: Path, private_postgres: PrivateCluster, outage: str
) -> None:
    cluster = private_postgres
    server = await FakeProviderServer(latency=0.3, statuses=False).start()
    (tmp_path / "slow_observer.py").write_text(SLOW_OBSERVER)
    config = write_config(tmp_path / "config.yaml", cluster.url, server)
    plugins = ("wahub.testing.fake_provider", "slow_observer")
    daemons = [start_daemon(config, tmp_path, free_port(), pythonpath=tmp_path, plugins=plugins) for _ in range(2)]
    background: list[asyncio.Task[None]] = []
    try:
        for daemon in daemons:
            daemon.wait_healthy(within=30)
        async with aiohttp.ClientSession() as http:
            watch = RoleWatch(daemons, http)
            watching = asyncio.create_task(watch.run())
            loading = asyncio.create_task(load([d.url for d in daemons], http))
            background.extend([watching, loading])

            async def busy() -> bool:
                inbox, outbox, _last = await claimed_now(cluster.url)
                return len(server.accepted()) >= 40 and bool(inbox) and len(outbox) >= 5

            await wait_until(busy, within=60, every=0.05)
            inbox_claimed, outbox_claimed, last_lease = await claimed_now(cluster.url)
            went_down = time.time()
            back = await take_down(cluster, outage, last_lease)

            await loading
            loaded = time.time()

            async def all_done() -> bool:
                unfinished = await pg(
                    cluster.url,
                    "SELECT (SELECT count(*) FROM inbox WHERE state != 'done')"
                    " + (SELECT count(*) FROM messages WHERE direction = 'out' AND status != 'sent') AS n",
                )
                return unfinished[0]["n"] == 0

            await wait_until(all_done, within=60, every=0.2)
            finished = time.time()
            watching.cancel()

        inbox = await pg(cluster.url, "SELECT id, attempts, processed_at FROM inbox")
        sent = await pg(
            cluster.url, "SELECT id, attempts, updated_at FROM messages WHERE direction = 'out' AND status = 'sent'"
        )
        # Every event processed, every reply and notice sent exactly once.
        assert len(inbox) == PINGS
        expected = {f"pong {n}" for n in range(PINGS)} | {f"notice {n}" for n in range(NOTICES)}
        assert len(sent) == len(expected)
        texts = server.bodies_by_text()
        assert set(texts) == expected
        assert {text: count for text, count in texts.items() if count > 1} == {}

        # Rows under a claim when the server went down and finished only after it came back
        # were taken again (or their results stored) within seconds, not after their old leases.
        interrupted_inbox = [r for r in inbox if r["id"] in inbox_claimed and r["processed_at"] > went_down]
        interrupted_sends = [r for r in sent if r["id"] in outbox_claimed and r["updated_at"] > went_down]
        finishes = [r["processed_at"] for r in interrupted_inbox] + [r["updated_at"] for r in interrupted_sends]
        print(
            f"restart: back {back - went_down:.1f} s after going down; {len(interrupted_inbox)} inbox events and "
            f"{len(interrupted_sends)} sends interrupted, all finished {max(finishes, default=back) - back:.1f} s "
            "after it; "
            f"load done {loaded - back:.1f} s and all done "
            f"{finished - back:.1f} s after; roles back {(watch.first_holder_after(back) or 0) - back:.1f} s after"
        )
        assert interrupted_inbox or interrupted_sends, "the restart interrupted nothing"
        for row in interrupted_inbox:
            assert row["processed_at"] - back <= RETAKEN_WITHIN, dict(row)
        for row in interrupted_sends:
            assert row["updated_at"] - back <= RETAKEN_WITHIN, dict(row)

        # One dispatcher at a time, and one again soon after the database came back.
        assert watch.conflicts == []
        regained = watch.first_holder_after(back)
        assert regained is not None and regained - back <= RETAKEN_WITHIN
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for daemon in daemons:
            if daemon.process.poll() is None:
                daemon.terminate(within=30)
        await server.close()


@pytest.mark.postgres
async def test_roles_come_back_after_a_restart_held_by_one_process_and_only_their_loss_warns(
    private_postgres: PrivateCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wahub.core.storage.leadership")
    stores = [await Storage.open(private_postgres.url) for _ in range(2)]
    replicas = [Leadership(store, ["dispatch:meta", "scheduler"]) for store in stores]
    try:
        for replica in replicas:
            await replica.start()

        async def holders(role: str, expect: int) -> bool:
            found = [replica for replica in replicas if replica.holds(role)]
            assert len(found) <= 1, f"two processes hold {role}"
            return len(found) == expect

        assert await holders("dispatch:meta", 1) and await holders("scheduler", 1)
        await asyncio.to_thread(private_postgres.stop)
        # The server ended the sessions: the holder knows at once, not at its next check.
        await wait_until(lambda: holders("dispatch:meta", 0), within=1.5)

        async def retried_while_down() -> bool:
            return sum("cannot take replica roles yet" in r.getMessage() for r in caplog.records) >= 2

        await wait_until(retried_while_down, within=15)
        back = await asyncio.to_thread(private_postgres.start)

        async def both_held_once() -> bool:
            return await holders("dispatch:meta", 1) and await holders("scheduler", 1)

        await wait_until(both_held_once, within=10, every=0.05)
        regained = time.time() - back
    finally:
        for replica in replicas:
            await replica.stop()
        for store in stores:
            await store.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3, warnings  # the lost connection, then each role lost
    lost = sorted(warnings)[1:]
    assert lost == ["this process no longer runs dispatch:meta", "this process no longer runs scheduler"]
    print(f"roles held again {regained:.1f} s after the database came back")


@pytest.mark.postgres
async def test_no_lease_runs_out_in_the_first_seconds_after_a_restart(private_postgres: PrivateCluster) -> None:
    storage = await Storage.open(private_postgres.url)
    try:
        await storage.insert_inbox(
            [{"provider": "meta", "external_id": "e1", "kind": "message", "contact_key": "A", "payload": {}}]
        )
        await storage.messages.enqueue("meta", OutgoingMessage.text("1555", "x"), idempotency_key="k")
        # Claims whose leases end while the server is away, by a process that is still alive.
        [event] = await storage.claim_inbox(10, lease_seconds=0.5)
        [send] = await storage.outbox.claim_outbox(10, 0.5, ["meta"])
        await asyncio.to_thread(private_postgres.restart)

        # Their process gets the time to renew them first...
        assert await storage.claim_inbox(10, lease_seconds=60) == []
        assert await storage.outbox.claim_outbox(10, 60, ["meta"]) == []
        # ...then they are free, as a dead process's are.
        [event_again] = await wait_until(lambda: storage.claim_inbox(10, lease_seconds=60), within=15, every=0.2)
        [send_again] = await wait_until(lambda: storage.outbox.claim_outbox(10, 60, ["meta"]), within=15)
        assert (event_again.id, send_again.id) == (event.id, send.id)
    finally:
        await storage.close()


@pytest.mark.postgres
async def test_a_database_going_away_is_told_from_a_refused_query(private_postgres: PrivateCluster) -> None:
    storage = await Storage.open(private_postgres.url)
    try:
        async with storage.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
            await asyncio.to_thread(private_postgres.stop)
            with pytest.raises(sa.exc.DBAPIError) as ended:
                await conn.execute(sa.text("SELECT 1"))
        with pytest.raises(OSError) as refused:
            await storage.ping()
        await asyncio.to_thread(private_postgres.start)
        with pytest.raises(sa.exc.DBAPIError) as bad_query:
            async with storage.engine.connect() as conn:
                await conn.execute(sa.text("SELECT * FROM no_such_table"))
    finally:
        await storage.close()
    assert database_unreachable(ended.value)
    assert database_unreachable(refused.value, from_storage=True)
    assert not database_unreachable(bad_query.value, from_storage=True)
