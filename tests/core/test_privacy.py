"""What the daemon lets out about its users and its upstreams, over real HTTP:
log lines show only the last four digits of an address, and the unauthenticated
``/readyz`` shows state codes only (the reasons need a token)."""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
import pytest

from tests.helpers import AUTH, TOKEN
from wahub.testing import (
    build_config,
    plugin_manager,
    running_daemon,
    sandbox_message,
    signed_sandbox_webhook,
    wait_until,
)
from wahub.testing.fake_graph import FakeGraphServer

USER = "15551234567"


async def test_a_warning_about_a_user_shows_only_the_last_four_digits(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = build_config({"router": {"default_reply": "hello"}}, database=database_url)
    async with running_daemon(config) as daemon, aiohttp.ClientSession() as http:
        # Written 25 hours ago: the reply falls outside the service window and is refused.
        old = {**sandbox_message("hi", sender=USER), "timestamp": time.time() - 25 * 3600}
        with caplog.at_level(logging.DEBUG, logger="wahub"):
            body, headers = signed_sandbox_webhook([old])
            async with http.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as response:
                assert response.status == 200

            async def refused() -> bool:
                return any("refused (window_closed)" in record.getMessage() for record in caplog.records)

            await wait_until(refused)
    warning = next(r for r in caplog.records if "refused (window_closed)" in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert "***4567" in warning.getMessage()
    assert all(USER not in record.getMessage() for record in caplog.records)


async def test_readyz_shows_no_upstream_host_or_error_text(sqlite_url: str) -> None:
    graph = FakeGraphServer(platform="meta_cloud")
    await graph.start()
    entry = graph.provider_entry("main", pair_limit=None)
    await graph.close()  # the Graph API is unreachable from the start
    raw = {"wahub": {"api_tokens": [TOKEN]}, "providers": [entry]}
    pm = plugin_manager()
    config = build_config(raw, database=sqlite_url, pm=pm)
    async with running_daemon(config, pm=pm) as daemon, aiohttp.ClientSession() as http:

        async def failing() -> dict[str, Any] | None:
            async with http.get(f"{daemon.url}/api/v1/status", headers=AUTH) as response:
                assert response.status == 200
                found: dict[str, Any] = await response.json()
            return found if "error" in found["providers"]["main"]["account"] else None

        status = await wait_until(failing)
        assert "127.0.0.1" in status["providers"]["main"]["account"]["error"]
        assert status["database"] == {"state": "ok"}
        async with http.get(f"{daemon.url}/readyz") as response:
            text = await response.text()
        assert "127.0.0.1" not in text and "no answer" not in text and "error" not in text
        async with http.get(f"{daemon.url}/api/v1/status") as response:
            assert response.status == 401
