"""``wahub notify`` against a running daemon, piped (no terminal): the
notification is sent once however often the command runs, its progress
printed as plain lines; refusals, a refused token, a daemon that is not
running and one that does not answer in time are each told plainly."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.core.test_engine import Engine, engine_for
from tests.e2e.daemon import free_port
from tests.helpers import TOKEN
from wahub.cli.notify import _Refused, add_parser, idempotency_key, request_body
from wahub.core.storage.policy import Template
from wahub.testing import TEST_SECRET

ANA, BRUNO, CARLA = "15554000001", "15554000002", "15554000003"


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[Engine]:
    async for engine in engine_for(sqlite_url, messages_per_second=None, pair_limit=None):
        storage = engine.daemon.hub.storage
        await storage.policy.upsert_template("fake", Template("order_update", "en", "UTILITY", "APPROVED"))
        await storage.policy.upsert_template("fake", Template("winter_sale", "en", "MARKETING", "PAUSED"))
        yield engine


def config_file(tmp_path: Path, port: int) -> str:
    """A configuration naming the daemon's port and token, as a user's file would."""
    path = tmp_path / "config.yaml"
    raw = {
        "wahub": {"database": f"sqlite:///{tmp_path / 'unused.db'}", "api_tokens": [TOKEN], "http": {"port": port}},
        "providers": [{"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET}],
    }
    path.write_text(yaml.safe_dump(raw))
    return str(path)


async def notify(config: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wahub",
        "notify",
        "-c",
        config,
        "--every",
        "0.1",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


def port_of(engine: Engine) -> int:
    return int(engine.daemon.url.rsplit(":", 1)[1])


async def test_notify_sends_once_and_follows_to_the_end(engine: Engine, tmp_path: Path) -> None:
    config = config_file(tmp_path, port_of(engine))
    recipients = tmp_path / "recipients.csv"
    recipients.write_text(f"phone,1\n{ANA},Ana\n{BRUNO},Bruno\n{CARLA},\n")
    args = ("--template", "order_update", "--language", "en", "--csv", str(recipients), "--param", "1=friend")
    args += ("--key", "orders-2026-12-01")

    code, out, err = await notify(config, *args)

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "notification 1 (expanding): 3 recipients, none refused"
    assert lines[-1] == "done: 3 messages, none refused"
    assert all(line.startswith("notification 1 ") for line in lines[1:-1])
    assert "\r" not in out and "\033" not in out
    sent = {
        call.body["to"]: call.body["template"]["components"][0]["parameters"][0]["text"]
        for call in engine.server.accepted()
    }
    assert sent == {ANA: "Ana", BRUNO: "Bruno", CARLA: "friend"}

    code, again, err = await notify(config, *args)

    assert code == 0, err
    assert again.splitlines()[:2] == [
        "already sent as notification 1; showing its progress",
        "notification 1 (queued): 3 recipients, none refused",
    ]
    assert len(engine.server.accepted()) == 3

    code, other, err = await notify(config, *args[:-1], "orders-2026-12-08")

    assert code == 0, err
    assert other.splitlines()[0] == "notification 2 (expanding): 3 recipients, none refused"


def test_the_default_key_is_the_same_for_the_same_request_that_day_only() -> None:
    body = {"template": "weekly_tips", "segment": {"tags": ["newsletter"]}}
    monday = idempotency_key(body, dt.date(2026, 11, 30))

    assert idempotency_key({**body, "dry_run": True}, dt.date(2026, 11, 30)) == monday
    assert idempotency_key(body, dt.date(2026, 12, 7)) != monday
    assert idempotency_key({**body, "template": "other"}, dt.date(2026, 11, 30)) != monday


async def test_notify_dry_run_and_refusals(engine: Engine, tmp_path: Path) -> None:
    config = config_file(tmp_path, port_of(engine))

    code, out, err = await notify(config, "--template", "order_update", "--language", "en", "--to", ANA, "--dry-run")
    assert (code, out) == (0, "dry run: 1 recipients, none refused; nothing was sent\n"), err

    code, out, err = await notify(config, "--template", "winter_sale", "--language", "en", "--to", ANA)
    assert code == 1 and out == ""
    assert err.startswith("wahub notify: the notification was refused: template_not_approved: template 'winter_sale'")

    code, out, err = await notify(config, "--template", "order_update", "--to", ANA, "--token", "x" * 32)
    assert code == 1 and "refused the API token" in err

    code, out, err = await notify(config, "--template", "order_update", "--to", ANA, "--param", "oops")
    assert code == 1 and "--param 'oops': write it as KEY=VALUE" in err
    assert engine.server.accepted() == []


async def test_notify_says_when_no_daemon_runs(tmp_path: Path) -> None:
    config = config_file(tmp_path, free_port())

    code, out, err = await notify(config, "--template", "order_update", "--to", ANA)

    assert code == 69 and out == ""
    assert "no wahub daemon answers at http://127.0.0.1:" in err and "wahub run" in err


def test_a_buttons_parameter_is_given_by_its_index() -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = ["notify", "-c", "c.yaml", "--template", "order_update", "--to", ANA]
    given = parser.parse_args([*args, "--param", "name=Ana", "--param", "header=42", "--param", "buttons.0=42"])
    assert request_body(given)["parameters"] == {"name": "Ana", "header": "42", "buttons": {"0": "42"}}
    with pytest.raises(_Refused, match=r"a button is named by its index, as in buttons\.0=42"):
        request_body(parser.parse_args([*args, "--param", "buttons.first=42"]))


async def test_notify_says_when_the_daemon_takes_the_request_but_does_not_answer(tmp_path: Path) -> None:
    released = asyncio.Event()

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await released.wait()
        writer.close()

    server = await asyncio.start_server(never_answers, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        code, out, err = await notify(
            config_file(tmp_path, port), "--template", "order_update", "--to", ANA, "--timeout", "0.5"
        )
    finally:
        released.set()
        server.close()
        await server.wait_closed()

    assert code == 75 and out == ""
    assert "took the request but did not answer within 0.5 s" in err and "no wahub daemon" not in err
