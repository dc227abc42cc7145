"""``wahub deliveries`` as a process, on SQLite and PostgreSQL: the deliveries
of a daemon with four ``crm:`` entries (see tests/core/test_deliveries_api.py)
listed, filtered and shown, each entry counted, a gone entry enabled and
failed deliveries replayed; beside a running daemon on PostgreSQL, while on
SQLite it says to stop the daemon or use the REST API."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import yaml

from tests.core.test_deliveries_api import (
    ANA,
    BRUNO,
    ERRORS,
    Scripted,
    ahead,
    deliveries_config,
    entries_raw,
    scripted_pm,
    users_write,
)
from wahub.cli import deliveries as deliveries_cli
from wahub.core.storage.deliveries import STATES as storage_states
from wahub.core.storage.store import Storage
from wahub.testing import TEST_SECRET, running_daemon, wait_until

ROOT = Path(__file__).parents[1]
#: The module with the entries' backend, loaded by the command as a plugin.
PLUGIN = "tests.core.test_deliveries_api"
COLUMNS = ["ID", "ENDPOINT", "TYPE", "EVENT", "STATE", "ATTEMPTS", "NEXT", "ATTEMPT", "CREATED", "LAST"]


async def cli(config: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wahub",
        "deliveries",
        *args,
        "-c",
        config,
        "-p",
        PLUGIN,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


def write_config(tmp_path: Path, database_url: str) -> str:
    """The daemon's configuration as a user's file holds it."""
    path = tmp_path / "config.yaml"
    raw = {
        "wahub": {"database": database_url, "media": {"directory": str(tmp_path / "media")}},
        "providers": [{"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET}],
        "crm": entries_raw(),
    }
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def rows(out: str) -> list[list[str]]:
    """A table's lines split into cells (the last, free text, kept whole)."""
    return [line.split(None, 8) for line in out.splitlines()[1:]]


async def stored(database_url: str, delivery_id: int) -> str:
    storage = await Storage.open(database_url)
    try:
        found = await storage.deliveries.get(delivery_id)
        assert found is not None
        return str(found["state"])
    finally:
        await storage.close()


async def test_deliveries_are_listed_shown_counted_and_an_entry_enabled(database_url: str, tmp_path: Path) -> None:
    Scripted.healed, Scripted.taken = set(), []
    config = write_config(tmp_path, database_url)
    async with running_daemon(
        deliveries_config(database_url, wahub={"media": {"directory": str(tmp_path / "media")}}),
        pm=scripted_pm(),
        clock=ahead(),
    ) as daemon:
        await users_write(daemon, ANA, BRUNO)
        [ana] = (await daemon.hub.storage.contacts.search(ANA, after=None, limit=2))[0]

    code, out, err = await cli(config, "list")
    assert code == 0, err
    assert out.splitlines()[0].split() == COLUMNS
    listed = rows(out)
    ids = [int(row[0]) for row in listed]
    assert len(ids) == 8 and ids == sorted(ids, reverse=True)
    assert {(row[1], row[4]) for row in listed} == {
        ("books", "delivered"),
        ("desk", "pending"),
        ("audit", "failed"),
        ("hook", "pending"),
    }
    [desk, _] = [row for row in listed if row[1] == "desk"]
    assert (desk[2], desk[5]) == ("message.received", "1") and desk[8].endswith(ERRORS["retry"])
    # The gone entry's deliveries wait for it to be enabled, whatever their next attempt.
    assert {row[6] for row in listed if row[1] == "hook"} == {"disabled"}
    assert {row[6] for row in listed if row[1] in ("books", "audit")} == {"-"}

    code, out, err = await cli(config, "list", "--json", "--contact", str(ana["id"]))
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(line["endpoint"] for line in lines) == ["audit", "books", "desk", "hook"]
    assert {line["contact_id"] for line in lines} == {ana["id"]}
    [refused] = [line for line in lines if line["endpoint"] == "audit"]
    assert (refused["state"], refused["last_status"], refused["last_error"]) == ("failed", 422, ERRORS["refuse"])

    code, out, err = await cli(config, "list", "--endpoint", "desk", "--state", "pending", "--limit", "1")
    assert code == 0 and [row[1] for row in rows(out)] == ["desk"]
    assert "the newest 1 shown; more with a larger --limit" in err
    code, out, err = await cli(config, "list", "--endpoint", "nope")
    assert (code, out) == (1, "")
    assert "no crm: entry named 'nope' (the entries: books, desk, audit, hook)" in err

    code, out, err = await cli(config, "show", str(refused["id"]))
    assert code == 0, err
    head, payload = out.split("payload:\n")
    assert f"id: {refused['id']}" in head.splitlines() and "state: failed" in head.splitlines()
    assert f"last_error: {ERRORS['refuse']}" in head.splitlines()
    event = json.loads(payload)
    assert (event["type"], event["data"]["message"]["text"]) == ("message.received", "hi")
    assert payload.startswith('{\n  "type"')
    code, out, err = await cli(config, "show", "999999")
    assert (code, out) == (1, "") and "no delivery 999999" in err

    code, out, err = await cli(config, "endpoints")
    assert code == 0, err
    counted = {line.split()[0]: line.split(None, 5) for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split() == ["ENTRY", "PLATFORM", "PENDING", "DELIVERED", "FAILED", "STATE"]
    assert counted["books"] == ["books", "scripted", "0", "2", "0", "enabled"]
    assert counted["audit"][2:] == ["0", "0", "2", "enabled"]
    assert counted["hook"][2:5] == ["2", "0", "0"]
    assert counted["hook"][5].startswith("disabled since ") and counted["hook"][5].endswith(ERRORS["gone"])
    assert "wahub deliveries retry --failed" in err

    [hook] = [line for line in lines if line["endpoint"] == "hook"]
    code, out, err = await cli(config, "retry", str(hook["id"]))
    assert code == 0, err
    assert out.splitlines() == [
        f"1 delivery pending again, due now: {hook['id']}",
        f"hook is disabled ({ERRORS['gone']}): they wait for 'wahub deliveries enable hook'",
    ]

    code, out, err = await cli(config, "enable", "hook")
    assert (code, out) == (0, "enabled hook: 2 deliveries pending, due now\n"), err
    code, out, err = await cli(config, "enable", "hook")
    assert (code, out) == (0, "hook was not disabled: nothing changed\n"), err
    code, out, err = await cli(config, "enable", "nope")
    assert code == 1 and "no crm: entry named 'nope'" in err
    code, out, err = await cli(config, "endpoints")
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["enabled"] * 4

    code, out, err = await cli(config, "retry", str(refused["id"]), "999999")
    assert code == 1 and out == f"1 delivery pending again, due now: {refused['id']}\n"
    assert "no delivery 999999" in err
    assert await stored(database_url, refused["id"]) == "pending"


async def test_retry_and_enable_reach_the_daemon(database_url: str, tmp_path: Path) -> None:
    """On PostgreSQL beside the running daemon; on SQLite the command says to
    stop it first, and what it made due is delivered when it starts again."""
    Scripted.healed, Scripted.taken = set(), []
    config = write_config(tmp_path, database_url)
    daemon_config = deliveries_config(database_url, wahub={"media": {"directory": str(tmp_path / "media")}})
    on_sqlite = database_url.startswith("sqlite")

    async def every_one_delivered() -> bool:
        storage = daemon.hub.storage
        states = [row["state"] for row in (await storage.deliveries.listing(limit=100))[0]]
        return states == ["delivered"] * 4 and await storage.deliveries.disabled("hook") is None

    async with running_daemon(daemon_config, pm=scripted_pm(), clock=ahead()) as daemon:
        await users_write(daemon, ANA)
        Scripted.healed |= {"audit", "hook", "desk"}
        if on_sqlite:
            code, out, err = await cli(config, "retry", "--failed")
            assert (code, out) == (69, "")
            assert "another wahub process uses" in err and "Stop the daemon first, or ask it:" in err
            assert "POST /api/v1/deliveries/retry" in err and "POST /api/v1/crm/<name>/enable" in err
            assert [name for name, _event in Scripted.taken] == ["books"]
        else:
            await replay(config)
            await wait_until(every_one_delivered)
    if on_sqlite:
        await replay(config)
        async with running_daemon(daemon_config, pm=scripted_pm(), clock=ahead()) as daemon:
            await wait_until(every_one_delivered)
    assert sorted(name for name, _event in Scripted.taken) == ["audit", "books", "desk", "hook"]


async def replay(config: str) -> None:
    """Every failed delivery of audit and every pending one of desk, again; hook enabled."""
    code, out, err = await cli(config, "retry", "--failed", "--endpoint", "audit")
    assert code == 0 and out.startswith("1 delivery pending again, due now: "), err
    code, out, err = await cli(config, "list", "--json", "--endpoint", "desk")
    [desk] = [json.loads(line)["id"] for line in out.splitlines()]
    code, out, err = await cli(config, "retry", str(desk))
    assert (code, out) == (0, f"1 delivery pending again, due now: {desk}\n"), err
    code, out, err = await cli(config, "enable", "hook")
    assert (code, out) == (0, "enabled hook: 1 delivery pending, due now\n"), err
    code, out, err = await cli(config, "retry", "--failed")
    assert (code, out) == (0, "no failed deliveries: nothing to retry\n"), err


async def test_wrong_arguments_are_refused_before_the_database_is_opened(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'never.db'}")
    for args, says in [
        (("retry",), "name the deliveries' ids, or --failed (not both)"),
        (("retry", "3", "--failed"), "name the deliveries' ids, or --failed (not both)"),
        (("retry", "3", "--endpoint", "audit"), "--endpoint goes with --failed"),
        (("list", "--state", "lost"), "invalid choice: 'lost'"),
        (("list", "--limit", "5000"), "--limit is at most 1000"),
        (("show", "first"), "'first' is not an id"),
    ]:
        code, out, err = await cli(config, *args)
        assert (code, out) == (2, ""), (args, err)
        assert says in err, (args, err)
    assert not (tmp_path / "never.db").exists()
    # The command names the states without importing the storage; they must be the same.
    assert storage_states == deliveries_cli.STATES
