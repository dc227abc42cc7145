"""Templates known from the first minute: the start-up sync (on the replica
holding the scheduler role, readiness untouched), and the refresh a send naming
an unknown template asks for. Over real HTTP against the fake Graph API (and
360dialog), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.plugins.providers.test_cloud_api import (
    AUTH,
    PLATFORMS,
    USER,
    Cloud,
    _cloud,
    _raw_config,
    _template,
    templates_synced,
)
from wahub.core.storage.leadership import SCHEDULER_ROLE
from wahub.testing import build_config, plugin_manager, running_daemon, wait_until
from wahub.testing.fake_graph import FakeGraphServer

ACCOUNT = (
    {**_template(1), "name": "order_update"},
    {**_template(2), "name": "old_offer", "status": "PAUSED"},
)


def _body(name: str) -> dict[str, Any]:
    """A send of one of the account's templates, whose body is ``Notice <n>: {{1}}``."""
    body = [{"type": "body", "parameters": [{"type": "text", "text": "42"}]}]
    return {
        "to": USER,
        "type": "template",
        "template": {"name": name, "language": {"code": "en_US"}, "components": body},
    }


async def _post(cloud: Cloud, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with cloud.http.post(f"{cloud.daemon.url}/api/v1/messages", json=body, headers=AUTH) as response:
        return response.status, await response.json()


@pytest.fixture(params=PLATFORMS)
async def cloud(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> AsyncIterator[Cloud]:
    """A daemon started on an empty database, once its start-up sync is done; the
    account has ``order_update`` (approved) and ``old_offer`` (paused)."""
    async for running in _cloud(request.param, database_url, tmp_path, templates=ACCOUNT):
        yield running


async def test_a_fresh_daemon_knows_the_accounts_templates_without_a_manual_sync(cloud: Cloud) -> None:
    stored = await cloud.daemon.hub.storage.policy.templates("main")
    assert [(t["name"], t["status"]) for t in stored] == [("old_offer", "PAUSED"), ("order_update", "APPROVED")]

    sent = await cloud.send(_body("order_update"))
    await cloud.status_becomes(sent["id"], "delivered")
    assert cloud.server.messages[-1]["template"]["name"] == "order_update"
    status, answer = await _post(cloud, _body("old_offer"))
    assert status == 422 and answer["error"]["code"] == "template_not_approved"
    assert cloud.server.listings == 1  # the start-up sync; nothing was missing since


async def test_a_template_created_after_start_up_is_sent_after_one_refresh(cloud: Cloud) -> None:
    cloud.server.add_template({**_template(3), "name": "shipping_update"})

    sent = await cloud.send(_body("shipping_update"))
    await cloud.status_becomes(sent["id"], "delivered")
    assert cloud.server.messages[-1]["template"]["name"] == "shipping_update"
    assert cloud.server.listings == 2
    # Now stored: the next send needs no refresh.
    await cloud.status_becomes((await cloud.send(_body("shipping_update")))["id"], "delivered")
    assert cloud.server.listings == 2


async def test_concurrent_misses_share_one_refresh_and_are_refused_saying_so(cloud: Cloud) -> None:
    answers = await asyncio.gather(*(_post(cloud, _body(f"unknown_{index}")) for index in range(10)))

    for status, answer in answers:
        assert status == 422 and answer["error"]["code"] == "template_not_found"
        assert "the templates were refreshed from the provider" in answer["error"]["message"]
    assert cloud.server.listings == 2  # the start-up sync and one refresh for all ten
    # Within the minute after it, a miss is refused without listing again.
    status, answer = await _post(cloud, _body("unknown_10"))
    assert status == 422 and "refreshed from the provider" in answer["error"]["message"]
    assert cloud.server.listings == 2


async def test_a_failed_refresh_is_named_in_the_refusal(cloud: Cloud) -> None:
    cloud.server.fail_next(2, http_status=503, message="Service temporarily unavailable")

    status, answer = await _post(cloud, _body("unknown"))
    assert status == 422 and answer["error"]["code"] == "template_not_found"
    assert "refreshing the templates from the provider failed" in answer["error"]["message"]


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_readyz_stays_ready_while_the_start_up_sync_waits_for_a_slow_listing(
    platform: str, sqlite_url: str
) -> None:
    server = FakeGraphServer(platform=platform)
    for template in ACCOUNT:
        server.add_template(template)
    server.hold_listings()
    await server.start()
    pm = plugin_manager()
    raw = _raw_config(server, sqlite_url)
    try:
        async with running_daemon(build_config(raw, database=sqlite_url, pm=pm), pm=pm) as daemon:

            async def listing_asked() -> bool:
                return server.listings == 1

            await wait_until(listing_asked)
            async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/readyz") as response:
                assert response.status == 200 and (await response.json())["status"] == "ready"
            assert await daemon.hub.storage.policy.templates("main") == []

            server.release_listings()
            await templates_synced(daemon)
            assert len(await daemon.hub.storage.policy.templates("main")) == 2
    finally:
        await server.close()


async def test_only_the_replica_holding_the_scheduler_role_syncs_at_start_up(postgres_url: str) -> None:
    server = FakeGraphServer()
    for template in ACCOUNT:
        server.add_template(template)
    await server.start()
    raw = _raw_config(server, postgres_url)
    try:
        async with contextlib.AsyncExitStack() as stack:
            first_pm, second_pm = plugin_manager(), plugin_manager()
            async with running_daemon(build_config(raw, database=postgres_url, pm=first_pm), pm=first_pm) as leader:
                await templates_synced(leader)
                assert server.listings == 1
                other = await stack.enter_async_context(
                    running_daemon(build_config(raw, database=postgres_url, pm=second_pm), pm=second_pm)
                )
                assert not other.hub.leadership.holds(SCHEDULER_ROLE)
                assert "templates_synced_at" not in other.hub.providers["main"].account
                assert server.listings == 1
            # The first replica stopped: the one taking the scheduler role over syncs as it does so.
            await templates_synced(other)
            assert other.hub.leadership.holds(SCHEDULER_ROLE) and server.listings == 2
    finally:
        await server.close()


async def test_a_listing_that_cannot_be_read_is_tried_once_and_named_in_the_refusals(cloud: Cloud) -> None:
    cloud.server.templates.append({"id": "1", "language": "en_US", "status": "APPROVED"})  # no name

    for _ in range(2):
        status, answer = await _post(cloud, _body("unknown"))
        assert status == 422 and answer["error"]["code"] == "template_not_found"
        assert "refreshing the templates from the provider failed: KeyError" in answer["error"]["message"]
    assert cloud.server.listings == 2
