"""``wahub operators``: add, list, passwd, disable, enable, straight on the database."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import yaml

from wahub.core.storage.store import Storage
from wahub.plugins.inbox.passwords import Passwords
from wahub.testing import TEST_SECRET

PASSWORD = "a long enough password"


async def cli(*args: str, stdin: str = "") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wahub",
        "operators",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin.encode())
    return process.returncode or 0, out.decode(), err.decode()


def write_config(tmp_path: Path, database_url: str) -> str:
    path = tmp_path / "config.yaml"
    raw = {
        "wahub": {"database": database_url},
        "providers": [{"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET}],
    }
    path.write_text(yaml.safe_dump(raw))
    return str(path)


async def stored_hash(database_url: str, name: str) -> str:
    storage = await Storage.open(database_url)
    try:
        found = await storage.operators.credentials(name)
        assert found is not None
        return found[1]
    finally:
        await storage.close()


async def lock_account(database_url: str, name: str) -> None:
    storage = await Storage.open(database_url)
    try:
        keys = [f"account:{name}"]
        await storage.operators.record_failure(keys, now=1e9, window=900, lock_after={"account": 1}, lock_seconds=1e9)
    finally:
        await storage.close()


async def account_failures(database_url: str, name: str) -> list[int]:
    storage = await Storage.open(database_url)
    try:
        return [t.failures for t in await storage.operators.throttles([f"account:{name}"], now=1e9)]
    finally:
        await storage.close()


async def test_add_list_passwd_disable_enable(database_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, database_url)
    code, out, err = await cli("list", "-c", config)
    assert code == 0 and out == "" and "wahub operators add NAME --admin" in err
    code, out, _ = await cli("add", "ana", "--admin", "-c", config, stdin=PASSWORD + "\n")
    assert code == 0 and out.strip() == "added admin ana"
    assert (await cli("add", "bo", "-c", config, stdin=PASSWORD + "\n"))[0] == 0
    assert await Passwords().verify(await stored_hash(database_url, "ana"), PASSWORD)

    code, out, _ = await cli("list", "-c", config)
    rows = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and [row[:3] for row in rows] == [["ana", "admin", "enabled"], ["bo", "operator", "enabled"]]

    await lock_account(database_url, "bo")
    code, out, _ = await cli("passwd", "bo", "-c", config, stdin="another password\n")
    assert code == 0 and "sessions have ended" in out
    assert await account_failures(database_url, "bo") == []
    bo_hash = await stored_hash(database_url, "bo")
    assert await Passwords().verify(bo_hash, "another password")
    assert not await Passwords().verify(bo_hash, PASSWORD)

    assert (await cli("disable", "bo", "-c", config))[0] == 0
    code, out, _ = await cli("list", "-c", config)
    assert "bo\toperator\tdisabled" in out
    code, out, _ = await cli("enable", "bo", "-c", config)
    assert code == 0 and out.strip() == "enabled bo"
    assert "bo\toperator\tenabled" in (await cli("list", "-c", config))[1]


async def test_refusals_name_the_problem(database_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, database_url)
    assert (await cli("add", "ana", "-c", config, stdin=PASSWORD + "\n"))[0] == 0

    code, _, err = await cli("add", "ana", "-c", config, stdin=PASSWORD + "\n")
    assert code == 1 and "an operator named ana already exists" in err
    code, _, err = await cli("add", "cy", "-c", config, stdin="short\n")
    assert code == 1 and "too short: at least 8 characters" in err
    code, _, err = await cli("add", "Not Valid", "-c", config, stdin=PASSWORD + "\n")
    assert code == 1 and "invalid operator name 'Not Valid'" in err
    for action in ("disable", "enable"):
        code, _, err = await cli(action, "nobody", "-c", config)
        assert code == 1 and "no operator named nobody" in err
    code, _, err = await cli("passwd", "nobody", "-c", config, stdin=PASSWORD + "\n")
    assert code == 1 and "no operator named nobody" in err
    # A password is never taken as an argument.
    code, _, err = await cli("add", "dee", PASSWORD, "-c", config)
    assert code == 2 and "unrecognized arguments" in err
    code, out, _ = await cli("list", "-c", config)
    assert [line.split("\t")[0] for line in out.splitlines()] == ["ana"]
