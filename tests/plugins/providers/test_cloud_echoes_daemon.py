"""Coexistence echoes through a real daemon: posted by the fake Graph API (as
Meta signs them, as 360dialog forwards them), screened one by one, stored in
the inbox under the user's own key and read back as the same events."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from wahub.core.models import EchoMessage, event_from_json
from wahub.core.storage.schema import inbox, quarantine
from wahub.plugins.providers.cloud.webhook import parse_cloud_webhook
from wahub.testing import RunningDaemon, build_config, running_daemon, wait_until
from wahub.testing.fake_graph import FakeGraphServer

FIXTURES = Path(__file__).parents[2] / "fixtures" / "cloud"
USER = "16505550142"


def echo_change(name: str) -> dict[str, Any]:
    """The ``value`` of a fixture's ``smb_message_echoes`` change."""
    body = json.loads((FIXTURES / f"{name}.json").read_text())
    value: dict[str, Any] = copy.deepcopy(body["entry"][0]["changes"][0]["value"])
    return value


@pytest.fixture(params=["meta_cloud", "dialog360"])
async def graph(request: pytest.FixtureRequest) -> AsyncIterator[FakeGraphServer]:
    server = FakeGraphServer(platform=request.param)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def daemon(graph: FakeGraphServer, database_url: str) -> AsyncIterator[RunningDaemon]:
    config = build_config({"providers": [graph.provider_entry("main")]}, database=database_url)
    async with running_daemon(config) as running:
        graph.attach(running.url, "main")
        yield running


async def rows(daemon: RunningDaemon, table: sa.Table) -> list[dict[str, Any]]:
    async with daemon.hub.storage.engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(sa.select(table).order_by(table.c.id))]


async def drained(daemon: RunningDaemon) -> bool:
    return (await daemon.hub.storage.inbox_depth())[0] == 0


async def test_an_echo_is_stored_under_the_users_key_and_reads_back_whole(
    graph: FakeGraphServer, daemon: RunningDaemon
) -> None:
    assert await graph.send_inbound({"type": "text", "text": {"body": "Is it ready?"}}, wa_id=USER) == 200
    value = echo_change("smb_message_echoes_bsuid")
    assert await graph.deliver(value, field="smb_message_echoes") == 200
    await wait_until(lambda: drained(daemon))
    message_row, echo_row = await rows(daemon, inbox)
    assert (message_row["kind"], echo_row["kind"]) == ("message", "echo")
    assert message_row["contact_key"] == echo_row["contact_key"] == f"main:{USER}"
    assert echo_row["state"] == "done"
    stored = event_from_json(echo_row["payload"])
    body = {"object": "whatsapp_business_account", "entry": [{"id": graph.waba_id, "changes": []}]}
    body["entry"][0]["changes"] = [{"field": "smb_message_echoes", "value": value}]
    (parsed,) = parse_cloud_webhook(json.dumps(body).encode(), default="main", numbers={}, accounts={})
    assert isinstance(stored, EchoMessage)
    assert stored == parsed
    assert stored.recipient == "US.13491208655302741918"


async def test_a_bad_echo_is_quarantined_alone_and_an_unreadable_one_kept(
    graph: FakeGraphServer, daemon: RunningDaemon
) -> None:
    value = echo_change("smb_message_echoes")
    good = value["message_echoes"][0]
    unstorable = {**good, "id": "wamid.unstorable", "text": {"body": "half a pair \udc00"}}
    unreadable = {key: item for key, item in good.items() if key != "id"}
    value["message_echoes"] = [unstorable, good, unreadable]
    assert await graph.deliver(value, field="smb_message_echoes") == 200
    await wait_until(lambda: drained(daemon))
    stored = await rows(daemon, inbox)
    assert [(row["kind"], row["state"]) for row in stored] == [("echo", "done"), ("unsupported", "done")]
    assert stored[0]["external_id"] == good["id"]
    (kept,) = await rows(daemon, quarantine)
    assert kept["reason"].startswith("echo event 'wamid.unstorable': ")
    assert kept["reason"].endswith("content.text.body: text that is not valid Unicode (a lone surrogate)")
    assert json.loads(bytes(kept["body"]))["kind"] == "echo"
    # Delivered again: the stored ones are deduplicated, the unreadable one too.
    assert await graph.deliver(value, field="smb_message_echoes") == 200
    assert len(await rows(daemon, inbox)) == 2
