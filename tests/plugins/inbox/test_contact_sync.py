"""The contact panel's "Synced with" in a real headless Chromium, on SQLite and
PostgreSQL: the real daemon with the four ``crm:`` entries of
tests/core/test_deliveries_api.py, a user handed to a person, and an
operator's page showing, per entry, the contact synced (with the entry's id
of it), waiting with the last error, or given up; and synced once the entry
is back and the delivery replayed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.core.test_deliveries_api import ANA, ERRORS, Scripted, ahead, deliveries_config, scripted_pm, users_write
from tests.e2e.conftest import chromium_page
from tests.plugins.inbox.kit import desk
from wahub.plugins.inbox.auth import COOKIE
from wahub.testing import RunningDaemon, running_daemon, wait_until

try:
    from playwright.async_api import Page, expect
except ImportError:  # the page fixture skips (or fails in CI) with the reason
    Page = Any  # type: ignore[misc,assignment]
else:
    expect.set_options(timeout=10_000)

pytestmark = pytest.mark.browser

SHOT = Path("/tmp/inbox-sync.png")
HANDOFF = {"rules": [{"match": {"keyword": ["operator"]}, "handoff": "A person will answer."}]}


@pytest.fixture
async def daemon(database_url: str) -> AsyncIterator[RunningDaemon]:
    Scripted.healed, Scripted.taken = set(), []
    config = deliveries_config(database_url, router=HANDOFF, inbox={"session_idle_hours": 720})
    async with running_daemon(config, pm=scripted_pm(), clock=ahead()) as running:
        yield running


@pytest.fixture
async def page() -> AsyncIterator[object]:
    async with chromium_page(lambda error: False) as new_page:
        yield new_page


async def signed_in(page: Page, daemon: RunningDaemon) -> None:
    """The page of operator ana, signed in (a session made in the store), the inbox live."""
    async with aiohttp.ClientSession() as http:
        operator = await desk(daemon, http, "ana")
    await page.context.add_cookies([{"name": COOKIE, "value": operator.token, "url": daemon.url}])
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.goto(f"{daemon.url}/inbox")
    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")


async def opened(page: Page, conversation_id: int) -> None:
    await page.locator(f'li.conv[data-id="{conversation_id}"]').get_by_role("button").click()
    await expect(page.locator("body")).to_have_attribute("data-open", str(conversation_id))


def synced_with(page: Page, endpoint: str) -> Any:
    return page.locator(f'#contact-sync li.sync__entry[data-endpoint="{endpoint}"]')


async def test_the_contact_panel_shows_where_the_contact_stands_with_each_entry(
    daemon: RunningDaemon, page: Page
) -> None:
    await users_write(daemon, ANA, text="operator")

    async def queued() -> list[dict[str, Any]]:
        return list((await daemon.hub.storage.conversations.list(owners=["queued"])).items)

    [conversation] = await wait_until(queued)
    contact_id = conversation["contact_id"]
    await signed_in(page, daemon)

    await opened(page, conversation["id"])

    await expect(page.locator("#contact-sync-title")).to_have_text("Synced with")
    await expect(page.locator("#contact-sync li.sync__entry")).to_have_count(4)
    books = synced_with(page, "books")
    await expect(books).to_have_attribute("data-state", "synced")
    await expect(books.locator(".sync__remote")).to_have_text(f"id R{contact_id}")
    await expect(books.locator(".sync__line")).to_have_text(re.compile(r"^synced at (\d{4}-\d\d-\d\d )?\d\d:\d\d$"))
    await expect(books.locator(".sync__platform")).to_have_text("scripted")
    waiting = synced_with(page, "desk")
    await expect(waiting).to_have_attribute("data-state", "pending")
    await expect(waiting.locator(".sync__line")).to_have_text(
        re.compile(r"^1 pending, next try (\d{4}-\d\d-\d\d )?\d\d:\d\d$")
    )
    await expect(waiting.locator(".sync__error")).to_have_text(ERRORS["retry"])
    await expect(waiting.locator(".sync__remote")).to_have_count(0)
    given_up = synced_with(page, "audit")
    await expect(given_up).to_have_attribute("data-state", "failed")
    await expect(given_up.locator(".sync__line")).to_have_text("1 failed")
    gone = synced_with(page, "hook")
    await expect(gone).to_have_attribute("data-state", "pending")
    await expect(gone.locator(".sync__line")).to_have_text("1 pending, the entry is disabled")
    await expect(gone.locator(".sync__error")).to_have_text(ERRORS["gone"])
    await expect(page.locator("#contact-pane")).to_contain_text("Synced with")
    await asyncio.to_thread(SHOT.parent.mkdir, parents=True, exist_ok=True)
    await page.locator("#contact-pane").screenshot(path=str(SHOT))

    # The CRM is back: the waiting delivery is replayed and delivered; the page shows it on the next look.
    Scripted.healed.add("desk")
    pending, _ = await daemon.hub.storage.deliveries.listing(endpoint="desk", contact_id=contact_id)
    await daemon.hub.storage.deliveries.replay(ids=[row["id"] for row in pending], now=daemon.hub.clock.time())
    await wait_until(lambda: _desk_delivered(daemon, contact_id))
    await page.locator(f'li.conv[data-id="{conversation["id"]}"]').get_by_role("button").click()

    await expect(waiting).to_have_attribute("data-state", "synced")
    await expect(waiting.locator(".sync__remote")).to_have_text(f"id R{contact_id}")
    await expect(waiting.locator(".sync__error")).to_have_count(0)


async def _desk_delivered(daemon: RunningDaemon, contact_id: int) -> bool:
    rows, _ = await daemon.hub.storage.deliveries.listing(endpoint="desk", contact_id=contact_id)
    return bool(rows) and all(row["state"] == "delivered" for row in rows)
