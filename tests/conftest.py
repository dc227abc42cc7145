"""Shared fixtures: every storage-touching test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wahub.core.storage.store import Storage

POSTGRES_URL = os.environ.get("WAHUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# CI sets this so an unreachable PostgreSQL fails the run instead of skipping.
REQUIRE_POSTGRES = os.environ.get("WAHUB_REQUIRE_POSTGRES") == "1"


async def _postgres_database() -> str | None:
    """Create a throwaway database on the test server and return its URL."""
    import asyncpg

    try:
        admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql://", "postgres://"), timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required (WAHUB_REQUIRE_POSTGRES=1) but unreachable: {exc}")
        return None
    name = f"wahub_test_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


async def _drop_postgres_database(url: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(POSTGRES_URL, timeout=3)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'wahub.db'}"
        return
    async for url in _fresh_postgres():
        yield url


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, for behaviour only PostgreSQL has (several daemons)."""
    async for url in _fresh_postgres():
        yield url


async def _fresh_postgres() -> AsyncIterator[str]:
    url = await _postgres_database()
    if url is None:
        pytest.skip(f"no PostgreSQL reachable at {POSTGRES_URL} (set WAHUB_TEST_POSTGRES_URL to run these tests)")
    try:
        yield url
    finally:
        await _drop_postgres_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'wahub.db'}"


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[Storage]:
    """The daemon's storage, opened (and migrated) on each test database."""
    store = await Storage.open(database_url)
    yield store
    await store.close()
