"""Shared fixtures: every storage-touching test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from wahub.core.storage.store import Storage

POSTGRES_URL = os.environ.get("WAHUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# CI sets this so an unreachable PostgreSQL fails the run instead of skipping.
REQUIRE_POSTGRES = os.environ.get("WAHUB_REQUIRE_POSTGRES") == "1"
T = TypeVar("T")


async def _admin() -> asyncpg.Connection | None:
    try:
        return await asyncpg.connect(POSTGRES_URL, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required (WAHUB_REQUIRE_POSTGRES=1) but unreachable: {exc}")
        return None


def _url_of(name: str) -> str:
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


async def _postgres_database(template: str | None = None) -> str | None:
    """Create a throwaway database on the test server (a copy of ``template``,
    else empty) and return its URL."""
    admin = await _admin()
    if admin is None:
        return None
    name = f"wahub_test_{uuid.uuid4().hex[:12]}"
    try:
        for wait in (0.05, 0.1, 0.2, 0.4, 0.8, 0):
            try:
                await admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
                break
            except asyncpg.ObjectInUseError:  # the template's last connection is still closing
                if not wait:
                    raise
                await asyncio.sleep(wait)
    finally:
        await admin.close()
    return _url_of(name)


async def _drop_postgres_database(url: str) -> None:
    admin = await asyncpg.connect(POSTGRES_URL, timeout=3)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


async def _migrated(url: str) -> None:
    store = await Storage.open(url)
    await store.close()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end from a session fixture, which a test's
    fixture may ask for inside its own event loop."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with wahub's schema, made once and copied for each test:
    migrating costs more than most tests do."""
    path = tmp_path_factory.mktemp("template") / "wahub.db"
    _run(_migrated(f"sqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def migrated_postgres() -> Iterator[str | None]:
    """A PostgreSQL database with wahub's schema, the template of each test's
    database (None when there is no server)."""
    url = _run(_postgres_database())
    if url is None:
        yield None
        return
    try:
        _run(_migrated(url))
        yield url.rsplit("/", 1)[1]
    finally:
        _run(_drop_postgres_database(url))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database with wahub's schema: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), tmp_path / "wahub.db")
        yield f"sqlite:///{tmp_path / 'wahub.db'}"
        return
    async for url in _fresh_postgres(request.getfixturevalue("migrated_postgres")):
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database, for what a first start-up does: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'wahub.db'}"
        return
    async for url in _fresh_postgres(None):
        yield url


@pytest.fixture
async def postgres_url(migrated_postgres: str | None) -> AsyncIterator[str]:
    """A fresh PostgreSQL database with wahub's schema, for behaviour only
    PostgreSQL has (several daemons)."""
    async for url in _fresh_postgres(migrated_postgres):
        yield url


@pytest.fixture
async def empty_postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database (replicas migrating it together)."""
    async for url in _fresh_postgres(None):
        yield url


async def _fresh_postgres(template: str | None) -> AsyncIterator[str]:
    url = await _postgres_database(template)
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
