"""The sandbox chat page in real headless Chromium against the real daemon.

The person's message goes page -> WebSocket -> signed webhook over HTTP ->
inbox -> pipeline -> rules router -> outbox -> sandbox provider -> page, and
the receipts come back the same way as status webhooks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from wahub.testing import RunningDaemon, build_config, running_daemon, wait_until

try:
    from playwright.async_api import expect
except ImportError:  # the page fixture skips (or fails in CI) with the reason
    pass
else:
    expect.set_options(timeout=15_000)

ROUTER = {
    "rules": [
        {"match": {"keyword": ["hi", "hello"]}, "reply": "Hello! How can I help?"},
        {
            "match": {"keyword": "menu"},
            "reply": {"text": "What would you like?", "buttons": ["Opening hours", "Delivery"]},
        },
        {"match": {"keyword": "opening hours"}, "reply": "Monday to Friday, 9 to 18."},
    ],
    "default_reply": "Sorry, I did not understand.",
}


@pytest.fixture
async def daemon(database_url: str) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(build_config({"router": ROUTER}, database=database_url)) as running:
        yield running


def bubble(page: Any, direction: str, text: str) -> Any:
    return page.locator(f'li.msg[data-direction="{direction}"]').filter(has_text=text)


async def test_message_gets_rule_reply_and_ticks_advance_to_read(daemon: RunningDaemon, page: Any) -> None:
    await page.goto(f"{daemon.url}/sandbox")
    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
    composer = page.get_by_label("Message")
    await composer.fill("hi there")
    await composer.press("Enter")

    await expect(bubble(page, "in", "hi there")).to_be_visible()
    reply = bubble(page, "out", "Hello! How can I help?")
    await expect(reply).to_be_visible()
    await expect(reply).to_have_attribute("data-status", "read")
    await expect(reply.locator(".msg__tick")).to_have_attribute("aria-label", "read")

    # The stored message went the whole way too, and a reload shows the same history.
    async def stored_status() -> Any:
        async with daemon.hub.storage.engine.connect() as conn:
            query = sa.text("SELECT status FROM messages WHERE direction = 'out'")
            return (await conn.execute(query)).scalar_one_or_none() == "read"

    await wait_until(stored_status)
    await page.reload()
    await expect(bubble(page, "out", "Hello! How can I help?")).to_have_attribute("data-status", "read")
    await expect(bubble(page, "in", "hi there")).to_have_count(1)


async def test_tapping_a_reply_button_is_routed_like_text(daemon: RunningDaemon, page: Any) -> None:
    await page.goto(f"{daemon.url}/sandbox")
    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
    await page.get_by_label("Message").fill("menu")
    await page.get_by_label("Message").press("Enter")
    menu = bubble(page, "out", "What would you like?")
    await expect(menu.get_by_role("button")).to_have_text(["Opening hours", "Delivery"])
    await menu.get_by_role("button", name="Opening hours").click()
    await expect(bubble(page, "out", "Monday to Friday, 9 to 18.")).to_have_attribute("data-status", "read")
