"""Replica roles: what the log says when a process gets, gives up and loses them."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from wahub.core.storage.leadership import SCHEDULER_ROLE, Leadership, dispatch_role
from wahub.core.storage.store import Storage
from wahub.testing import wait_until

ROLES = [dispatch_role("sandbox"), SCHEDULER_ROLE]


def leader_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "wahub.core.storage.leadership"]


async def test_a_clean_stop_gives_up_roles_at_info(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wahub.core.storage.leadership")
    storage = await Storage.open(database_url)
    leadership = Leadership(storage, ROLES)
    try:
        await leadership.start()
        assert leadership.held == set(ROLES)
        await leadership.stop()
    finally:
        await storage.close()
    lines = leader_lines(caplog)
    assert lines[:2] == [
        ("INFO", "this process now runs dispatch:sandbox"),
        ("INFO", "this process now runs scheduler"),
    ]
    assert sorted(lines[2:]) == [
        ("INFO", "this process no longer runs dispatch:sandbox (shutting down)"),
        ("INFO", "this process no longer runs scheduler (shutting down)"),
    ]


async def test_roles_lost_while_running_are_a_warning(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wahub.core.storage.leadership")
    storage = await Storage.open(postgres_url)
    leadership = Leadership(storage, ROLES)
    try:
        await leadership.start()
        # The database ends the session that holds the advisory locks (a restart, a failover).
        async with storage.engine.begin() as conn:
            holders = await conn.execute(
                sa.text("SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = :space"),
                {"space": 0x7761},
            )
            for (pid,) in holders.all():
                await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        async def warned() -> list[str]:
            return [message for level, message in leader_lines(caplog) if level == "WARNING"]

        lost = await wait_until(warned)
        await leadership.stop()
    finally:
        await storage.close()
    assert "lost the database connection that holds replica roles" in lost[0]
    assert {"this process no longer runs dispatch:sandbox", "this process no longer runs scheduler"} <= set(lost)
