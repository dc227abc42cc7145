"""The REST API's page, ``/api/v1/docs``, in real headless Chromium: it renders
every operation of the served document (method, path, summary, parameters,
body and answers) and the shared schemas, with no token and nothing loaded
from another host."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.helpers import TOKEN
from wahub.testing import RunningDaemon, build_config, running_daemon

with contextlib.suppress(ImportError):  # the page fixture skips (or fails in CI) with the reason
    from playwright.async_api import expect

pytestmark = pytest.mark.browser


@pytest.fixture
async def daemon(sqlite_url: str) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(build_config({"wahub": {"api_tokens": [TOKEN]}}, database=sqlite_url)) as running:
        yield running


async def test_the_page_shows_every_operation_of_the_document(daemon: RunningDaemon, page: Any) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/api/v1/openapi.json") as answer:
        described = await answer.json()
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
    await page.goto(f"{daemon.url}/api/v1/docs")
    operations = page.locator("section.operation")
    count = sum(len(item) for item in described["paths"].values())
    await expect(operations).to_have_count(count)
    send = page.locator("#op-send_message")
    await expect(send.locator("h3")).to_have_text("POST/api/v1/messages")
    await expect(send).to_contain_text("Queue a message")
    await expect(send).to_contain_text("Idempotency-Key")
    await expect(send).to_contain_text("422: The request is well-formed but refused")
    await expect(send.get_by_role("link", name="Error").first).to_be_visible()
    await expect(page.locator("#op-openapi_document")).to_contain_text("No token needed.")
    await expect(page.locator("#schema-Conversation")).to_be_visible()
    assert hosts == {daemon.url.split("/")[2]}
