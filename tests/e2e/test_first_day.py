"""A new user's first day, as the README and the operations guide tell it: start
the daemon on the example configuration with a token from ``wahub token``, chat
once with ``wahub chat``, then send with the guide's own curl example."""

from __future__ import annotations

import json
import re
import shlex
import string
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.e2e.daemon import REPO, Daemon, free_port, start_daemon
from tests.e2e.test_daemon import rows, run_cli
from wahub.testing import wait_until

TOKEN_CHARACTERS = set(string.ascii_letters + string.digits + "-_")


def test_token_prints_one_strong_token_per_call(tmp_path: Path) -> None:
    first, second = run_cli("token", cwd=tmp_path), run_cli("token", cwd=tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr
    token = first.stdout.removesuffix("\n")
    assert "\n" not in token and first.stderr == ""
    assert len(token) >= 43 and set(token) <= TOKEN_CHARACTERS
    assert second.stdout != first.stdout


def guide_send_example() -> tuple[str, dict[str, str], bytes]:
    """The URL, headers and body of the operations guide's ``POST /api/v1/messages`` curl."""
    guide = (REPO / "docs" / "operations.md").read_text()
    block = next(
        b for b in re.findall(r"```sh\n(.*?)```", guide, re.S) if "curl -X POST" in b and "/api/v1/messages " in b
    )
    words = shlex.split(block.replace("\\\n", " "))
    headers = dict(h.split(": ", 1) for h in (words[i + 1] for i, w in enumerate(words) if w == "-H"))
    body = words[words.index("-d") + 1].encode()
    return words[words.index("-X") + 2], headers, body


def post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def first_config(tmp_path: Path) -> str:
    """config.example.yaml with the token set up as the guide says; returns the token."""
    token = run_cli("token", cwd=tmp_path).stdout.strip()
    (tmp_path / "secrets.yaml").write_text(f"api_token: {token}\n")
    example = (REPO / "config.example.yaml").read_text()
    assert "\n  api_tokens: []\n" in example
    config = example.replace("\n  api_tokens: []\n", "\n  api_tokens: [!secret api_token]\n")
    (tmp_path / "config.yaml").write_text(config)
    (tmp_path / "faq.example.yaml").write_text((REPO / "faq.example.yaml").read_text())  # the example's FAQ (!include)
    return token


async def chat_once(daemon: Daemon, db: Path) -> None:
    """Say hi through ``wahub chat`` (its default user) and wait for the bot's answer."""
    chat = subprocess.Popen(  # noqa: ASYNC220 - a second process, as a user opens a second terminal
        [sys.executable, "-m", "wahub", "chat", "--url", daemon.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert chat.stdin is not None
        chat.stdin.write("hi\n")
        chat.stdin.flush()

        async def answered() -> bool:
            return bool(rows(db, "SELECT count(*) FROM messages WHERE direction = 'out'")[0][0])

        await wait_until(answered, within=15)
    finally:
        output, _ = chat.communicate(timeout=10)  # closes its input: the chat ends
    assert re.search(r"^you  \d\d:\d\d  hi$", output, re.M), output


def log_lines(daemon: Daemon, level: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in daemon.log.read_text().splitlines() if f" {level} " in line]


async def test_the_guides_send_example_answers_202_after_one_chat(tmp_path: Path) -> None:
    token = first_config(tmp_path)
    port = free_port()
    daemon = start_daemon(tmp_path / "config.yaml", tmp_path, port)
    try:
        daemon.wait_healthy(within=15)
        await chat_once(daemon, tmp_path / "data" / "wahub.db")
        url, headers, body = guide_send_example()
        headers["Authorization"] = headers["Authorization"].replace("$WAHUB_TOKEN", token)
        status, answer = post(url.replace("127.0.0.1:8080", f"127.0.0.1:{port}"), headers, body)
        assert (status, answer.get("status")) == (202, "queued"), answer

        # The same message to a number that never wrote: the window the guide explains.
        stranger = json.dumps({**json.loads(body), "to": "15550009999"}).encode()
        del headers["Idempotency-Key"]
        status, answer = post(f"{daemon.url}/api/v1/messages", headers, stranger)
        assert status == 422 and answer["error"]["code"] == "window_closed"  # type: ignore[index]
    finally:
        assert daemon.terminate() == 0
    infos = log_lines(daemon, "INFO")
    assert infos[0] == "database: applied migration 0001 (initial schema)"
    assert [line for line in infos if line.startswith("database")][1].startswith("database: applied migration 0002")
    assert "this process no longer runs scheduler (shutting down)" in infos
    assert log_lines(daemon, "WARNING") == [] and log_lines(daemon, "ERROR") == []

    again = start_daemon(tmp_path / "config.yaml", tmp_path, free_port())
    try:
        again.wait_healthy(within=15)
    finally:
        assert again.terminate() == 0
    database_lines = [line for line in log_lines(again, "INFO") if line.startswith("database")]
    assert len(database_lines) == 1 and database_lines[0].startswith("database schema is up to date at revision ")
