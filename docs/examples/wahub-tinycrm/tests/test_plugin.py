"""TinyCRM against a stand-in of the CRM's API, with the daemon, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from wahub_tinycrm import plugin

from wahub.testing import (
    build_config,
    plugin_manager,
    running_daemon,
    sandbox_message,
    serve_on_loopback,
    wait_until,
)

KEY, TOKEN = "crm-key-123", "api-token-0123456789abcdef"


class FakeCRM:
    def __init__(self) -> None:
        self.contacts: dict[str, dict[str, Any]] = {}  # phone -> contact
        self.notes: dict[str, str] = {}
        self.app = web.Application()
        self.app.router.add_put("/contacts/by-phone/{phone}", self.put_contact)
        self.app.router.add_put("/contacts/{id}/notes/{key}", self.put_note)

    def authorized(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            raise web.HTTPUnauthorized()

    async def put_contact(self, request: web.Request) -> web.Response:
        self.authorized(request)
        phone = request.match_info["phone"]
        contact = self.contacts.setdefault(phone, {"id": len(self.contacts) + 1})
        contact.update(await request.json())
        return web.json_response(contact)

    async def put_note(self, request: web.Request) -> web.Response:
        self.authorized(request)
        self.notes[request.match_info["key"]] = (await request.json())["text"]
        return web.json_response({})


@pytest.fixture
async def crm() -> AsyncIterator[tuple[FakeCRM, str]]:
    fake = FakeCRM()
    runner, url = await serve_on_loopback(fake.app)
    yield fake, url
    await runner.cleanup()


async def test_contacts_appear_once_and_a_resolve_is_a_note(crm: tuple[FakeCRM, str], tmp_path: Any) -> None:
    fake, url = crm
    pm = plugin_manager([plugin])
    raw = {
        "wahub": {"api_tokens": [TOKEN]},
        "router": {"default_reply": "Thanks, we will get back to you."},
        "crm": [{"platform": "tinycrm", "name": "tiny", "url": url, "api_key": KEY}],
    }
    config = build_config(raw, database=f"sqlite:///{tmp_path}/wahub.db", pm=pm)
    async with running_daemon(config, pm=pm) as daemon:
        await daemon.post_sandbox([sandbox_message("Hello", name="Ana", message_id="wamid.1")])
        await daemon.post_sandbox([sandbox_message("Are you there?", name="Ana", message_id="wamid.2")])
        await wait_until(lambda: _has(fake.contacts, "+15551234567"))
        assert list(fake.contacts) == ["+15551234567"]
        assert fake.contacts["+15551234567"]["name"] == "Ana"

        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.get(f"{daemon.url}/api/v1/conversations") as response:
                conversation = (await response.json())["conversations"][0]["id"]
            async with http.post(f"{daemon.url}/api/v1/conversations/{conversation}/handoff", json={}) as response:
                assert response.status == 200, await response.text()
            async with http.post(f"{daemon.url}/api/v1/conversations/{conversation}/resolve", json={}) as response:
                assert response.status == 200, await response.text()
        await wait_until(lambda: _has(fake.notes))
        (note,) = fake.notes.values()
        assert "Ana: Hello" in note and "Thanks, we will get back to you." in note


async def _has(found: dict[str, Any], key: str | None = None) -> bool:
    return bool(found) if key is None else key in found
