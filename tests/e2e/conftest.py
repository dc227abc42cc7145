"""A real headless Chromium for page tests (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

# The private PostgreSQL cluster, for tests that restart the server.
from tests.e2e.private_postgres import private_postgres  # noqa: F401

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# CI sets this so a missing browser fails the run instead of skipping the page tests.
REQUIRE_BROWSER = os.environ.get("WAHUB_REQUIRE_BROWSER") == "1"


def _browser_missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed: pip install -e '.[test]'"
    if shutil.which(CHROMIUM) is None:
        return f"Chromium not installed at {CHROMIUM}: apt-get install chromium"
    return None


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Headless Chromium, closed on leaving; the test skips (fails in CI) without it."""
    missing = _browser_missing()
    if missing:
        if REQUIRE_BROWSER:
            pytest.fail(f"browser tests are required (WAHUB_REQUIRE_BROWSER=1): {missing}")
        pytest.skip(missing)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def chromium_page(expected: Callable[[str], bool]) -> AsyncIterator[Any]:
    """A fresh page in headless Chromium (UTC); on leaving, any page error or
    console error for which ``expected`` is false fails the test."""
    errors: list[str] = []
    async with chromium() as browser:
        context = await browser.new_context(timezone_id="UTC")
        new_page = await context.new_page()
        new_page.on("pageerror", lambda error: errors.append(str(error)))
        new_page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        yield new_page
    assert [error for error in errors if not expected(error)] == []


@pytest.fixture
async def page() -> AsyncIterator[object]:
    """A fresh page in headless Chromium (UTC); fails the test on any page error."""
    # A refused reconnection attempt is logged by Chromium itself; anything else is a page bug.
    async with chromium_page(lambda error: "503" in error) as new_page:
        yield new_page
