"""Inbox rows that cannot be processed, through a real daemon over HTTP: they
fail alone, give up soon when the fault is in their data, are listed and
replayed through the REST API and the CLI, and /readyz says when processing
is stuck."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
import yaml

from tests.helpers import AUTH, TOKEN
from wahub.core.inbound.failures import is_permanent
from wahub.core.privacy import mask_digits
from wahub.core.storage.store import Storage
from wahub.testing import (
    TEST_SECRET,
    RunningDaemon,
    build_config,
    plugin_manager,
    running_daemon,
    sandbox_message,
    signed_sandbox_webhook,
    wait_until,
)
from wahub.testing.fake_graph import FakeGraphServer

ROUTER = {"rules": [{"match": {"keyword": ["hi"]}, "reply": "Hello!"}]}


def raw_config(database: str, **wahub: Any) -> dict[str, Any]:
    return {"wahub": {"database": database, "api_tokens": [TOKEN], **wahub}, "router": ROUTER}


@pytest.fixture
async def daemon(database_url: str) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(build_config(raw_config(database_url), database=database_url)) as running:
        yield running


async def webhook(daemon: RunningDaemon, *events: dict[str, Any]) -> None:
    body, headers = signed_sandbox_webhook(list(events))
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as response,
    ):
        assert response.status == 200


async def api(daemon: RunningDaemon, method: str, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{daemon.url}{path}", headers=AUTH) as response,
    ):
        return response.status, await response.json()


async def scalar(daemon: RunningDaemon, query: str) -> Any:
    async with daemon.hub.storage.engine.connect() as conn:
        return (await conn.execute(sa.text(query))).scalar()


async def replies(daemon: RunningDaemon) -> int:
    return int(await scalar(daemon, "SELECT count(*) FROM messages WHERE direction = 'out'"))


async def failed(daemon: RunningDaemon) -> list[dict[str, Any]]:
    status, body = await api(daemon, "GET", "/api/v1/inbox/failed")
    assert status == 200
    events: list[dict[str, Any]] = body["events"]
    return events


async def insert_raw_row(
    daemon: RunningDaemon,
    url: str,
    external_id: str,
    payload: bytes,
    key: bytes,
    *,
    provider: str = "sandbox",
    kind: str = "message",
) -> None:
    """Write a row straight into the database, as an older version or another program could."""
    now = time.time()
    columns = "(provider, external_id, kind, contact_key, payload, state, attempts, received_at)"
    if url.startswith("sqlite"):

        def write() -> None:
            db = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
            try:
                db.execute(
                    f"INSERT INTO inbox {columns} VALUES (?, ?, ?, CAST(? AS TEXT), CAST(? AS TEXT), 'pending', 0, ?)",
                    (provider, external_id, kind, key, payload, now),
                )
                db.commit()
            finally:
                db.close()

        # In a thread: the daemon's own transactions need the event loop to finish.
        await asyncio.to_thread(write)
    else:
        async with daemon.hub.storage.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    f"INSERT INTO inbox {columns} VALUES (:provider, :e, :kind, :k, CAST(:p AS JSON), 'pending', 0, :t)"
                ),
                {
                    "provider": provider,
                    "kind": kind,
                    "e": external_id,
                    "k": key.decode(),
                    "p": payload.decode(),
                    "t": now,
                },
            )
    daemon.hub.inbox_ready.set()


async def test_a_row_that_cannot_be_read_fails_alone_and_can_be_replayed(
    daemon: RunningDaemon, database_url: str
) -> None:
    if database_url.startswith("sqlite"):
        # A lone surrogate written without checks: bytes that are not UTF-8, in the key and the payload.
        payload, key = b'{"kind": "message", "sender": "\xed\xa0\x80"}', b"sandbox:\xed\xa0\x80"
        reason = "contact_key is not valid UTF-8"
    else:  # PostgreSQL cannot hold invalid UTF-8: a payload that makes no event
        payload, key = b'{"kind": "message", "sender": "15551234567"}', b"sandbox:15551234567"
        reason = "the payload is no 'message' event: TypeError"
    await insert_raw_row(daemon, database_url, "hostile", payload, key)
    await webhook(daemon, *(sandbox_message("hi", sender=f"1555000000{n}") for n in range(3)))

    assert await wait_until(lambda: replies(daemon)) and await wait_until(lambda: _count(replies(daemon), 3))
    [event] = await wait_until(lambda: failed(daemon))
    assert (event["provider"], event["kind"], event["attempts"]) == ("sandbox", "message", 1)
    assert reason in event["error"] and "15551234567" not in json.dumps(event)
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/readyz") as response:
        assert response.status == 200
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/metrics") as response:
        assert "wahub_inbox_failed 1.0" in await response.text()

    assert await api(daemon, "POST", f"/api/v1/inbox/{event['id']}/retry") == (
        200,
        {"id": event["id"], "state": "pending"},
    )
    # It runs again (and, still unreadable, fails again at its first attempt).
    await wait_until(lambda: _attempted(daemon, event["id"]))
    [again] = await wait_until(lambda: failed(daemon))
    assert (again["id"], again["attempts"]) == (event["id"], 1)
    status, body = await api(daemon, "POST", "/api/v1/inbox/999999/retry")
    assert (status, body["error"]["code"]) == (404, "not_found")
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/api/v1/inbox/failed") as response:
        assert response.status == 401  # the token is required
    status, body = await api(daemon, "GET", "/api/v1/inbox/failed?limit=0")
    assert (status, body["error"]["code"]) == (400, "invalid_limit")


async def _count(value: Any, wanted: int) -> bool:
    return bool(await value == wanted)


async def _attempted(daemon: RunningDaemon, row_id: int) -> bool:
    return await scalar(daemon, f"SELECT state FROM inbox WHERE id = {row_id}") == "failed"


async def test_a_row_failing_on_its_data_gives_up_after_three_attempts(
    daemon: RunningDaemon, database_url: str
) -> None:
    # A status whose message id is a list: the database refuses the value, every time.
    status = {"kind": "status", "provider": "sandbox", "external_id": "s1", "message_id": ["wamid.1"]}
    payload = json.dumps({**status, "status": "read", "timestamp": 1.0}).encode()
    await insert_raw_row(daemon, database_url, "list-id", payload, b"sandbox:15551234567")

    [event] = await wait_until(lambda: failed(daemon), within=20)

    assert event["attempts"] == 3
    assert "list" in event["error"]
    await webhook(daemon, sandbox_message("hi"))
    await wait_until(lambda: replies(daemon))


def test_failures_are_told_apart_by_cause() -> None:
    sqlite_error = _sqlite_binding_error()
    assert is_permanent(sqlite_error)
    assert is_permanent(TypeError("unhashable type: 'list'")) and is_permanent(KeyError("kind"))
    assert not is_permanent(TimeoutError()) and not is_permanent(ConnectionRefusedError())
    assert not is_permanent(sa.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked")))
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as exc:
            raise ValueError("while reading the answer") from exc
    except ValueError as exc:
        assert is_permanent(exc)  # the outermost known cause decides


@pytest.mark.postgres
async def test_postgresql_errors_are_told_apart_by_their_sqlstate(postgres_url: str) -> None:
    storage = await Storage.open(postgres_url)
    errors = []
    try:
        for query in ("SELECT 1 / 0", "SELECT CAST('x' AS INTEGER)", "SELECT * FROM no_such_table"):
            try:
                async with storage.engine.connect() as conn:
                    await conn.execute(sa.text(query))
            except sa.exc.DBAPIError as exc:
                errors.append(exc)
    finally:
        await storage.close()
    assert [is_permanent(exc) for exc in errors] == [True, True, False]  # data errors; a schema problem is not


def _sqlite_binding_error() -> Exception:
    engine = sa.create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x TEXT)"))
            conn.execute(sa.text("INSERT INTO t VALUES (:x)"), {"x": ["en"]})
    except sa.exc.StatementError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("SQLite took a list")


def test_phone_numbers_are_masked_to_their_last_four_digits() -> None:
    assert mask_digits("sandbox:15551234567 row 42") == "sandbox:***4567 row 42"


async def _refuse_claims(daemon: RunningDaemon, refuse: bool) -> None:
    """A database fault: every UPDATE of the inbox (so every claim) is refused."""
    async with daemon.hub.storage.engine.begin() as conn:
        if daemon.hub.storage.is_sqlite:
            if refuse:
                await conn.execute(
                    sa.text(
                        "CREATE TRIGGER refuse_claims BEFORE UPDATE ON inbox"
                        " BEGIN SELECT RAISE(ABORT, 'claims refused'); END"
                    )
                )
            else:
                await conn.execute(sa.text("DROP TRIGGER refuse_claims"))
        elif refuse:
            await conn.execute(
                sa.text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql"
                    " AS $$ BEGIN RAISE EXCEPTION 'claims refused'; END $$"
                )
            )
            await conn.execute(
                sa.text("CREATE TRIGGER refuse_claims BEFORE UPDATE ON inbox FOR EACH ROW EXECUTE FUNCTION refuse()")
            )
        else:
            await conn.execute(sa.text("DROP TRIGGER refuse_claims ON inbox"))


async def readiness(daemon: RunningDaemon) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/readyz") as response:
        return response.status, await response.json()


async def test_readyz_is_503_while_claims_keep_failing_and_ready_again_after(database_url: str) -> None:
    config = build_config(raw_config(database_url, inbox_stuck_after=1), database=database_url)
    async with running_daemon(config) as daemon:
        await _refuse_claims(daemon, True)
        await webhook(daemon, sandbox_message("hi"))

        async def stuck() -> dict[str, Any] | None:
            status, body = await readiness(daemon)
            return body if status == 503 else None

        body = await wait_until(stuck, within=15)
        assert body["status"] == "not_ready" and body["inbox"] == "inbox_claims_failing"
        assert body["database"] == "ok"

        await _refuse_claims(daemon, False)
        await wait_until(lambda: replies(daemon), within=15)
        status, body = await readiness(daemon)
        assert status == 200 and "inbox" not in body


async def _refuse_inserts(daemon: RunningDaemon, refuse: bool) -> None:
    """A database fault: every new inbox row (so every webhook's commit) is refused."""
    async with daemon.hub.storage.engine.begin() as conn:
        if daemon.hub.storage.is_sqlite:
            statement = (
                "CREATE TRIGGER refuse_inserts BEFORE INSERT ON inbox BEGIN SELECT RAISE(ABORT, 'refused'); END"
                if refuse
                else "DROP TRIGGER refuse_inserts"
            )
            await conn.execute(sa.text(statement))
        elif refuse:
            await conn.execute(
                sa.text(
                    "CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql"
                    " AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$"
                )
            )
            await conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse_inserts BEFORE INSERT ON inbox FOR EACH ROW EXECUTE FUNCTION refuse_insert()"
                )
            )
        else:
            await conn.execute(sa.text("DROP TRIGGER refuse_inserts ON inbox"))


async def test_readyz_is_503_while_webhooks_cannot_be_stored_and_ready_again_after(database_url: str) -> None:
    config = build_config(raw_config(database_url), database=database_url)
    async with running_daemon(config) as daemon, aiohttp.ClientSession() as session:
        assert (await readiness(daemon))[0] == 200
        await _refuse_inserts(daemon, True)
        body, headers = signed_sandbox_webhook([sandbox_message("hi")])
        async with session.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as response:
            assert response.status == 503  # not stored: the provider delivers it again
        status, ready = await readiness(daemon)
        assert (status, ready["inbox"], ready["database"]) == (503, "intake_commits_failing", "ok")

        await _refuse_inserts(daemon, False)
        async with session.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as response:
            assert response.status == 200  # the redelivery is stored
        status, ready = await readiness(daemon)
        assert status == 200 and "inbox" not in ready
        await wait_until(lambda: replies(daemon), within=15)


async def test_a_burst_never_makes_readyz_flap(sqlite_url: str) -> None:
    config = build_config(raw_config(sqlite_url, inbox_stuck_after=1, workers=1), database=sqlite_url)
    async with running_daemon(config) as daemon:
        for batch in range(2):
            await webhook(daemon, *(sandbox_message("hi", sender=f"155500{batch}{n:04d}") for n in range(100)))
        answers, oldest = set(), 0.0

        async def drained() -> bool:
            nonlocal oldest
            answers.add((await readiness(daemon))[0])
            waiting, age = await daemon.hub.storage.inbox_depth()
            oldest = max(oldest, age)
            return waiting == 0

        await wait_until(drained, within=120, every=0.2)
        assert answers == {200}
        assert oldest > 1  # events waited longer than the threshold, yet processing was never stuck


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wahub", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_the_cli_lists_and_replays_failed_events(sqlite_url: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    raw = {**raw_config(sqlite_url), "providers": [{"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET}]}
    config.write_text(yaml.safe_dump(raw))
    async with running_daemon(build_config(raw, database=sqlite_url)) as daemon:
        payload = b'{"kind": "message", "sender": "15551234567"}'
        await insert_raw_row(daemon, sqlite_url, "no-event", payload, b"sandbox:15551234567")
        [event] = await wait_until(lambda: failed(daemon))
        code, _, err = await _cli("inbox", "failed", "-c", str(config))
        assert code == 69 and "/api/v1/inbox/failed" in err  # the daemon holds the file: ask it instead

    code, out, err = await _cli("inbox", "failed", "-c", str(config))
    assert code == 0, err
    [line] = out.splitlines()
    fields = line.split("\t")
    assert fields[:4] == [str(event["id"]), "sandbox", "message", "1"]
    assert fields[5] == "sandbox:***4567" and "payload is no 'message' event" in fields[6]
    assert "15551234567" not in out

    assert (await _cli("inbox", "retry", "-c", str(config)))[0] == 2  # neither ids nor --all
    code, out, err = await _cli("inbox", "retry", str(event["id"]), "424242", "-c", str(config))
    assert code == 1 and out.strip() == f"1 events back in the queue: {event['id']}" and "424242" in err
    storage = await Storage.open(sqlite_url)
    try:
        assert await storage.failed_inbox() == []
        assert (await storage.inbox_depth())[0] == 1
    finally:
        await storage.close()


async def test_a_template_update_with_a_list_for_its_language_fails_after_three_attempts(database_url: str) -> None:
    server = FakeGraphServer()
    await server.start()
    pm = plugin_manager()
    raw = {"wahub": {"database": database_url, "api_tokens": [TOKEN]}, "providers": [server.provider_entry("main")]}
    try:
        async with running_daemon(build_config(raw, database=database_url, pm=pm), pm=pm) as daemon:
            field = "message_template_status_update"
            data = {"event": "APPROVED", "message_template_name": "order_ready", "message_template_language": ["en"]}
            event = {"kind": "account", "provider": "main", "external_id": "t1", "field": field, "event": "APPROVED"}
            payload = json.dumps({**event, "data": data, "timestamp": 1.0}).encode()
            await insert_raw_row(daemon, database_url, "t1", payload, b"main:account", provider="main", kind="account")

            [failure] = await wait_until(lambda: failed(daemon), within=20)
            assert (failure["provider"], failure["kind"], failure["attempts"]) == ("main", "account", 3)
            assert "list" in failure["error"]
    finally:
        await server.close()
