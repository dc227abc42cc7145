"""Quiet hours at dispatch, over real HTTP against the fake Graph API (and
360dialog): a business message whose retry falls inside the contact's quiet
hours goes out at their end, on a controllable clock."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_engine_policy import QUIET_HOURS, quiet_hours_ahead
from tests.plugins.providers.test_cloud_api import PLATFORMS, USER, Cloud, _cloud, _template
from wahub.testing import ManualClock, wait_until

TEMPLATE = {
    "to": USER,
    "type": "template",
    "template": {
        "name": "order_update",
        "language": {"code": "en_US"},
        # The account's template has one body placeholder: a send gives it.
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "A-17"}]}],
    },
}


async def failed_once(cloud: Cloud, message_id: int) -> dict[str, Any] | None:
    """The message once an attempt to send it failed (it keeps the error while it waits)."""
    found = await cloud.message(message_id)
    return found if found["error"] is not None else None


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_retry_falling_in_quiet_hours_reaches_the_graph_api_at_their_end(
    platform: str, database_url: str, tmp_path: Path
) -> None:
    start, quiet = quiet_hours_ahead()
    clock = ManualClock(start - 0.5)  # the retry's backoff (0.5 to 1 s) ends inside quiet hours
    account = ({**_template(1), "name": "order_update"},)
    sections = {"policy": {"quiet_hours": quiet}}
    async for cloud in _cloud(platform, database_url, tmp_path, sections=sections, templates=account, clock=clock):
        cloud.server.fail_next(131016, http_status=503, message="Service unavailable")
        sent = await cloud.send(TEMPLATE)

        await wait_until(functools.partial(failed_once, cloud, sent["id"]))
        stored = await cloud.daemon.hub.storage.messages.get(sent["id"])
        assert stored is not None and stored["status"] == "queued"
        assert stored["next_attempt_at"] == start + QUIET_HOURS * 3600
        assert cloud.server.messages == []  # the refused attempt is not a message the API took

        clock.set(start + QUIET_HOURS * 3600)
        await cloud.status_becomes(sent["id"], "delivered")
        assert [message["template"]["name"] for message in cloud.server.messages] == ["order_update"]
