"""The daemon as a process: start-up, graceful stop, crashes under load."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.daemon import REPO, free_port, start_daemon
from tests.helpers import install_plugin
from wahub.testing import TEST_SECRET, sandbox_message, signed_sandbox_webhook, wait_until

CONFIG = f"""
wahub:
  http: {{port: !env_var WAHUB_PORT}}
  database: sqlite:///data/wahub.db
  log_level: warning
providers:
  - platform: sandbox
    name: sandbox
    secret: {TEST_SECRET}
router:
  rules:
    - match: {{keyword: hi}}
      reply: Hello!
"""


def rows(db: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def pending_is_zero(db: Path) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return rows(db, "SELECT count(*) FROM inbox WHERE state != 'done'")[0][0] == 0

    return check


def reply_sent(db: Path) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(rows(db, "SELECT count(*) FROM messages WHERE direction = 'out' AND status != 'queued'")[0][0])

    return check


def test_readme_run_command_serves_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    shutil.copy(REPO / "config.example.yaml", tmp_path / "config.yaml")
    shutil.copy(REPO / "faq.example.yaml", tmp_path)  # the example's FAQ (!include)
    daemon = start_daemon(tmp_path / "config.yaml", tmp_path, free_port())
    try:
        assert daemon.wait_healthy(within=10.0) < 10.0
    finally:
        started = time.monotonic()
        assert daemon.terminate(within=10.0) == 0
    assert time.monotonic() - started < 10.0
    assert (tmp_path / "data" / "wahub.db").exists()


def test_requests_aiohttp_cannot_parse_are_one_warning_line_not_a_traceback(tmp_path: Path) -> None:
    shutil.copy(REPO / "config.example.yaml", tmp_path / "config.yaml")
    shutil.copy(REPO / "faq.example.yaml", tmp_path)  # the example's FAQ (!include)
    daemon = start_daemon(tmp_path / "config.yaml", tmp_path, free_port())
    try:
        daemon.wait_healthy()
        port = int(daemon.url.rsplit(":", 1)[1])
        malformed = [
            b"GET /api/v1/messages/" + b"9" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # line too long
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",  # header too long
            b"GET /api/v1/messages/ 1 HTTP/1.1\r\nHost: x\r\n\r\n",  # a bad request line
        ]
        for request in malformed:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request)
                assert sock.recv(100).split(b" ")[1] == b"400"
        daemon.wait_healthy()
    finally:
        assert daemon.terminate() == 0
    log = daemon.log.read_text()
    assert "Traceback" not in log and " ERROR " not in log
    assert log.count("WARNING aiohttp.server: malformed request from 127.0.0.1 refused (400)") == len(malformed)


async def post_webhooks(
    url: str, count: int, acked: list[str], halfway: asyncio.Event, *, concurrency: int = 32
) -> None:
    """Post ``count`` unique messages; record the ids that got a 200, and set
    ``halfway`` once 300 did."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            queue.get_nowait()
            event = sandbox_message("load", sender=f"1555{uuid.uuid4().int % 10**7:07d}")
            body, headers = signed_sandbox_webhook([event])
            try:
                async with session.post(f"{url}/webhooks/sandbox", data=body, headers=headers) as response:
                    if response.status == 200:
                        acked.append(event["id"])
                        if len(acked) >= 300:
                            halfway.set()
            except aiohttp.ClientError:
                return  # the daemon is gone

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


async def test_kill_9_under_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    port = free_port()
    daemon = start_daemon(tmp_path / "config.yaml", tmp_path, port)
    daemon.wait_healthy()
    acked: list[str] = []
    halfway = asyncio.Event()
    load = asyncio.create_task(post_webhooks(daemon.url, 100_000, acked, halfway))
    async with asyncio.timeout(30):
        await halfway.wait()  # kill it in the middle of the load
    daemon.kill()
    await load
    db = tmp_path / "data" / "wahub.db"
    stored = {row[0] for row in rows(db, "SELECT external_id FROM inbox")}
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged events were lost"

    # After a restart every stored event runs through the pipeline.
    restarted = start_daemon(tmp_path / "config.yaml", tmp_path, port)
    try:
        restarted.wait_healthy()
        await wait_until(pending_is_zero(db), within=60)
        inbound = {row[0] for row in rows(db, "SELECT provider_message_id FROM messages WHERE direction = 'in'")}
        assert set(acked) <= inbound
    finally:
        restarted.terminate()


CRASH_PLUGIN = """
import os, signal, pathlib
from wahub import hookimpl

MARKER = pathlib.Path(os.environ["WAHUB_CRASH_MARKER"])
WHERE = os.environ["WAHUB_CRASH_IN"]

def _crash_once(hook):
    if hook == WHERE and not MARKER.exists():
        MARKER.write_text(hook)
        os.kill(os.getpid(), signal.SIGKILL)

@hookimpl
def inbound_message(message):
    _crash_once("inbound_message")

@hookimpl
def outbound_message(message, result):
    _crash_once("outbound_message")
"""


@pytest.mark.parametrize("crash_in", ["inbound_message", "outbound_message"])
async def test_event_interrupted_by_a_crash_runs_again_without_a_second_reply(
    tmp_path: Path, crash_in: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    site = install_plugin(tmp_path / "site", "wahub_crash_test", CRASH_PLUGIN)
    monkeypatch.setenv("WAHUB_CRASH_MARKER", str(tmp_path / "crashed"))
    monkeypatch.setenv("WAHUB_CRASH_IN", crash_in)
    port = free_port()
    daemon = start_daemon(tmp_path / "config.yaml", tmp_path, port, pythonpath=site)
    daemon.wait_healthy()
    async with aiohttp.ClientSession() as session:
        body, headers = signed_sandbox_webhook([sandbox_message("hi", message_id="sbx.in.crash")])
        async with session.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as response:
            assert response.status == 200
    assert daemon.process.wait(timeout=10) == -9  # the plugin killed it mid-pipeline
    assert (tmp_path / "crashed").read_text() == crash_in

    restarted = start_daemon(tmp_path / "config.yaml", tmp_path, port, pythonpath=site)
    db = tmp_path / "data" / "wahub.db"
    try:
        restarted.wait_healthy()
        await wait_until(pending_is_zero(db), within=20)
        await wait_until(reply_sent(db), within=20)
    finally:
        restarted.terminate()
    replies = rows(db, "SELECT status, provider_message_id FROM messages WHERE direction = 'out'")
    assert len(replies) == 1 and replies[0][0] == "sent", replies
    assert rows(db, "SELECT count(*) FROM messages WHERE direction = 'in'")[0][0] == 1


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wahub", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    result = run_cli("check-config", "-c", str(REPO / "config.example.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_check_config_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "secrets.yaml").write_text("api_token: s3cr3t-value-never-printed\n")
    (tmp_path / "config.yaml").write_text(
        "wahub:\n"  # 1
        "  http:\n"  # 2
        "    port: abc\n"  # 3  wrong type
        "  api_tokens: [!secret api_token]\n"  # 4  defined, but too short to be a token
        "  databse: sqlite:///x.db\n"  # 5  unknown key
        "providers:\n"  # 6
        "  - platform: sandbox\n"  # 7  missing name
        "    secret: !secret sandbox_secret\n"  # 8  undefined secret
    )
    result = run_cli("check-config", "-c", str(tmp_path / "config.yaml"), cwd=tmp_path)
    assert result.returncode == 78
    out = result.stderr
    config = str(tmp_path / "config.yaml")
    assert f"{config}:3: wahub.http.port:" in out
    assert f"{config}:5: wahub.databse: unknown key 'databse' (did you mean 'database'?)" in out
    assert f"{config}:7: providers[0]: required key 'name' is missing" in out
    assert f"{config}:8: providers[0].secret: secret 'sandbox_secret' is not defined" in out
    assert "s3cr3t" not in out + result.stdout


def test_plugins_command_lists_hooks(tmp_path: Path) -> None:
    result = run_cli("plugins", cwd=tmp_path)
    assert result.returncode == 0
    assert "wahub.plugins.router\n    lifespan\n    register_config_sections\n    route_message\n" in result.stdout
    assert "wahub.plugins.ai.faq\n    register_ai_backends\n" in result.stdout


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", "-c", "config.yaml", cwd=tmp_path, env={"WAHUB_PORT": str(port)})
    assert result.returncode == 69
    assert f"wahub: cannot listen on 127.0.0.1:{port}:" in result.stderr
    assert "Traceback" not in result.stderr and "Unclosed" not in result.stderr


def test_plugin_that_fails_to_import_stops_start_up_with_its_error(tmp_path: Path) -> None:
    site = install_plugin(tmp_path / "site", "wahub_broken_test", "import no_such_module_anywhere\n")
    result = run_cli("plugins", cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert result.returncode == 78
    assert "plugin 'wahub_broken_test' (wahub_broken_test) failed to load" in result.stderr
    assert "no_such_module_anywhere" in result.stderr


async def test_sigterm_under_load_exits_within_10_s_keeping_every_acknowledged_event(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    daemon = start_daemon(tmp_path / "config.yaml", tmp_path, free_port())
    daemon.wait_healthy()
    acked: list[str] = []
    halfway = asyncio.Event()
    load = asyncio.create_task(post_webhooks(daemon.url, 100_000, acked, halfway))
    async with asyncio.timeout(30):
        await halfway.wait()
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    returncode = await asyncio.to_thread(daemon.process.wait, 15)
    assert time.monotonic() - started < 10.0
    assert returncode == 0, daemon.log.read_text()
    await load
    stored = {row[0] for row in rows(tmp_path / "data" / "wahub.db", "SELECT external_id FROM inbox")}
    assert set(acked) <= stored


def test_unreachable_database_is_a_clear_start_up_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        CONFIG.replace("sqlite:///data/wahub.db", "postgresql://wahub:pw-not-printed@127.0.0.1:1/none")
    )
    result = run_cli("run", "-c", "config.yaml", cwd=tmp_path, env={"WAHUB_PORT": str(free_port())})
    assert result.returncode == 69
    assert "wahub: start-up failed:" in result.stderr
    assert "Traceback" not in result.stderr and "pw-not-printed" not in result.stderr
