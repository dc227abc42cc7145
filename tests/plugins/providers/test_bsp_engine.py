"""The engine tests every provider passes, against its fake cloud in
``wahub.testing`` (a ``FakeBSP``): the daemon on a real socket, the fake on
another, webhooks and sends over real HTTP, signed as the provider signs them.

They are the ones the Cloud API providers pass in ``test_cloud_api.py``, said in
provider-neutral words: a webhook is stored once however often it comes, forged
ones are refused, the service window and consent hold, statuses only move
forward, sends retry through an outage and an idempotency key sends once.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.providers.bsp_daemon import USER, BspDaemon, bsp_daemon
from wahub.testing.fake_bsp import FakeBSP

#: platform: the fake standing for its cloud, as ``module:Class`` (imported when used).
FAKES = {
    "twilio": "wahub.testing.fake_twilio:FakeTwilio",
    "infobip": "wahub.testing.fake_infobip:FakeInfobip",
    "vonage": "wahub.testing.fake_vonage:FakeVonage",
    "bird": "wahub.testing.fake_bird:FakeBird",
}


def fake_for(platform: str, **options: Any) -> FakeBSP:
    module, _, name = FAKES[platform].partition(":")
    fake: FakeBSP = getattr(importlib.import_module(module), name)(**options)
    return fake


@pytest.fixture(params=sorted(FAKES))
async def bsp(request: pytest.FixtureRequest, sqlite_url: str, tmp_path: Path) -> AsyncIterator[BspDaemon]:
    async with bsp_daemon(fake_for(request.param), sqlite_url, tmp_path) as running:
        yield running


async def test_a_webhook_is_stored_once_however_often_it_comes(bsp: BspDaemon) -> None:
    body, headers = bsp.fake.inbound_text(USER, "hello there")
    for _ in range(3):
        assert (await bsp.fake.send_webhook(body, headers)).status == 200
    rows = await bsp.history()
    assert [(row["direction"], row["body"]["text"]["body"]) for row in rows] == [("in", "hello there")]


async def test_a_forged_or_unsigned_webhook_is_refused_and_nothing_stored(bsp: BspDaemon) -> None:
    body, headers = bsp.fake.inbound_text(USER, "forged")
    assert (await bsp.fake.send_webhook(body, headers, signed=False)).status == 401
    if bsp.fake.signs_body:
        signed = bsp.fake.sign(bsp.fake.webhook_url(), body, dict(headers))
        tampered = body.replace(b"forged", b"f0rged")
        assert (await bsp.fake.send_webhook(tampered, {**headers, **signed}, signed=False)).status == 401
    assert await bsp.daemon.hub.storage.inbox_depth() == (0, 0.0)
    assert await bsp.daemon.hub.storage.messages.history("main", USER) == []


async def test_a_reply_in_the_window_is_sent_and_its_statuses_only_move_forward(bsp: BspDaemon) -> None:
    await bsp.user_writes("hi")
    status, answer = await bsp.post_message({"to": USER, "type": "text", "text": {"body": "welcome"}})
    assert status == 202, answer
    await bsp.status_becomes(answer["id"], "read")
    await bsp.fake.settle()
    [sent] = [s for s in bsp.fake.sent if s.text == "welcome"]
    assert (sent.to, sent.kind) == (USER, "text")
    # A late "delivered" after "read" changes nothing.
    assert await bsp.fake.post_status(sent, "delivered") == 200
    await bsp.history()
    assert (await bsp.message(answer["id"]))["status"] == "read"


async def test_free_text_outside_the_window_is_refused_before_the_provider(bsp: BspDaemon) -> None:
    status, answer = await bsp.post_message({"to": USER, "type": "text", "text": {"body": "cold"}})
    assert status == 422 and answer["error"]["code"] == "window_closed", answer
    assert bsp.fake.sent == []


async def test_an_opt_out_stops_what_the_business_sends(bsp: BspDaemon) -> None:
    await bsp.user_writes("STOP")
    status, answer = await bsp.post_message({"to": USER, "type": "text", "text": {"body": "still there?"}})
    assert status == 422 and answer["error"]["code"] == "opted_out", answer
    assert [s for s in bsp.fake.sent if s.text == "still there?"] == []


async def test_sends_retry_through_an_outage_and_an_idempotency_key_sends_once(bsp: BspDaemon) -> None:
    await bsp.user_writes("hi")
    bsp.fake.statuses = False
    bsp.fake.fail_for(2.0)
    body = {"to": USER, "type": "text", "text": {"body": "after the outage"}}
    first = await bsp.post_message(body, **{"Idempotency-Key": "k-1"})
    again = await bsp.post_message(body, **{"Idempotency-Key": "k-1"})
    assert first[0] == 202 and again[1]["id"] == first[1]["id"]
    await bsp.status_becomes(first[1]["id"], "sent")
    assert [s.text for s in bsp.fake.sent].count("after the outage") == 1
    assert any(call.startswith("POST") for call in bsp.fake.calls)


async def test_a_failed_status_keeps_the_providers_code(bsp: BspDaemon) -> None:
    await bsp.user_writes("hi")
    bsp.fake.statuses = False
    status, answer = await bsp.post_message({"to": USER, "type": "text", "text": {"body": "doomed"}})
    assert status == 202, answer
    await bsp.status_becomes(answer["id"], "sent")
    [sent] = [s for s in bsp.fake.sent if s.text == "doomed"]
    assert await bsp.fake.post_status(sent, "failed", error=bsp.fake.undeliverable_code) == 200
    failed = await bsp.status_becomes(answer["id"], "failed")
    assert failed["error"]["code"] == bsp.fake.undeliverable_code, failed
