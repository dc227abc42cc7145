"""Webhook intake and the pipeline, through a real daemon over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from tests.helpers import post_raw
from wahub.core.storage.schema import messages
from wahub.testing import (
    RunningDaemon,
    build_config,
    running_daemon,
    sandbox_message,
    sandbox_status,
    signed_sandbox_webhook,
    wait_until,
)

ROUTER = {"rules": [{"match": {"keyword": ["hi", "hello"]}, "reply": "Hello! How can I help?"}]}


@pytest.fixture
async def daemon(database_url: str) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(build_config({"router": ROUTER}, database=database_url)) as running:
        yield running


async def post(daemon: RunningDaemon, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def count(daemon: RunningDaemon, query: str) -> int:
    async with daemon.hub.storage.engine.connect() as conn:
        return int((await conn.execute(sa.text(query))).scalar_one())


async def outgoing(daemon: RunningDaemon) -> list[dict[str, Any]]:
    async with daemon.hub.storage.engine.connect() as conn:
        rows = await conn.execute(sa.select(messages).where(messages.c.direction == "out"))
        return [dict(row._mapping) for row in rows]


async def test_forged_signature_gets_401_and_stores_nothing(daemon: RunningDaemon) -> None:
    body, headers = signed_sandbox_webhook([sandbox_message("hi")], secret="not-the-secret-at-all-0000")
    assert (await post(daemon, body, headers))[0] == 401
    assert (await post(daemon, body, {"Content-Type": "application/json"}))[0] == 401
    assert await count(daemon, "SELECT count(*) FROM inbox") == 0
    assert await count(daemon, "SELECT count(*) FROM quarantine") == 0


async def test_unparsable_body_gets_400_and_is_quarantined(daemon: RunningDaemon) -> None:
    for body in (b"{not json", json.dumps({"object": "something else"}).encode()):
        _, headers = signed_sandbox_webhook([])
        from wahub.core.provider import sign_body
        from wahub.plugins.providers.sandbox.provider import SIGNATURE_HEADER

        headers[SIGNATURE_HEADER] = sign_body("wahub-test-secret-0123456789abcdef", body)
        status, answer = await post(daemon, body, headers)
        assert status == 400 and answer["error"]["code"] == "unparsable_webhook"
    assert await count(daemon, "SELECT count(*) FROM quarantine") == 2
    assert await count(daemon, "SELECT count(*) FROM inbox") == 0


async def test_message_is_answered_by_rule_and_statuses_advance(daemon: RunningDaemon) -> None:
    status, answer = await post(daemon, *signed_sandbox_webhook([sandbox_message("Hello there")]))
    assert (status, answer) == (200, {"ok": True, "events": 1})
    [reply] = await wait_until(lambda: _sent(daemon))
    assert reply["body"]["text"] == {"body": "Hello! How can I help?"}
    provider_id = reply["provider_message_id"]
    for step in ("delivered", "read", "delivered"):  # the late 'delivered' must not win
        assert (await post(daemon, *signed_sandbox_webhook([sandbox_status(provider_id, step)])))[0] == 200
    await wait_until(lambda: count(daemon, "SELECT count(*) FROM inbox WHERE state = 'done'"), within=10)
    await wait_until(lambda: _inbox_drained(daemon))
    assert [m["status"] for m in await outgoing(daemon)] == ["read"]
    assert await count(daemon, "SELECT count(*) FROM status_events") == 2


async def test_redelivered_webhook_is_stored_and_answered_once(daemon: RunningDaemon) -> None:
    event = sandbox_message("hi", message_id="sbx.in.same")
    for _ in range(3):
        assert (await post(daemon, *signed_sandbox_webhook([event])))[0] == 200
    # and once more inside a body that carries it twice:
    assert (await post(daemon, *signed_sandbox_webhook([event, event])))[0] == 200
    await wait_until(lambda: _sent(daemon))
    await wait_until(lambda: _inbox_drained(daemon))
    assert await count(daemon, "SELECT count(*) FROM inbox") == 1
    assert len(await outgoing(daemon)) == 1


async def test_every_event_of_a_body_is_stored(daemon: RunningDaemon) -> None:
    events = [sandbox_message(f"msg {i}", sender=f"1555000000{i % 3}") for i in range(9)]
    assert (await post(daemon, *signed_sandbox_webhook(events)))[1]["events"] == 9
    await wait_until(lambda: _inbox_drained(daemon))
    assert await count(daemon, "SELECT count(*) FROM messages WHERE direction = 'in'") == 9
    assert await count(daemon, "SELECT count(*) FROM contacts") == 3


async def test_health_readiness_and_metrics(daemon: RunningDaemon) -> None:
    await post(daemon, *signed_sandbox_webhook([sandbox_message("hi")]))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{daemon.url}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{daemon.url}/readyz") as response:
            assert response.status == 200
            assert await response.json() == {
                "status": "ready",
                "database": "ok",
                "providers": {"sandbox": True},
                "roles": ["dispatch:sandbox", "scheduler"],
            }
        async with session.get(f"{daemon.url}/metrics") as response:
            text = await response.text()
    assert 'wahub_webhook_events_total{kind="message",provider="sandbox"} 1.0' in text
    assert "wahub_inbox_depth" in text and "wahub_webhook_latency_seconds_bucket" in text


async def test_unknown_provider_is_404(daemon: RunningDaemon) -> None:
    body, _ = signed_sandbox_webhook([sandbox_message("hi")])
    async with aiohttp.ClientSession() as session, session.post(f"{daemon.url}/webhooks/nope", data=body) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "unknown_provider"


async def _sent(daemon: RunningDaemon) -> list[dict[str, Any]]:
    return [m for m in await outgoing(daemon) if m["provider_message_id"]]


async def _inbox_drained(daemon: RunningDaemon) -> bool:
    return await count(daemon, "SELECT count(*) FROM inbox WHERE state IN ('pending', 'processing')") == 0


async def test_a_bad_event_fails_only_its_own_request(daemon: RunningDaemon) -> None:
    good = sandbox_message("hi")
    too_long = sandbox_message("hi", message_id="x" * 300)
    not_finite = json.dumps({"object": "wahub_sandbox", "events": [{**sandbox_message("hi"), "timestamp": 1}]})
    results = await asyncio.gather(
        post(daemon, *signed_sandbox_webhook([good])),
        post(daemon, *signed_sandbox_webhook([too_long])),
        post(daemon, *_signed(not_finite.replace('"timestamp": 1', '"timestamp": NaN').encode())),
    )
    # NaN is not JSON: that whole body is refused. The over-long id is set aside, answered 200.
    assert [status for status, _ in results] == [200, 200, 400]
    assert results[1][1] == {"ok": True, "events": 0, "quarantined": 1}
    assert await count(daemon, "SELECT count(*) FROM inbox") == 1
    assert await count(daemon, "SELECT count(*) FROM quarantine") == 2


def _signed(body: bytes) -> tuple[bytes, dict[str, str]]:
    from wahub.core.provider import sign_body
    from wahub.plugins.providers.sandbox.provider import SIGNATURE_HEADER
    from wahub.testing import TEST_SECRET

    return body, {SIGNATURE_HEADER: sign_body(TEST_SECRET, body), "Content-Type": "application/json"}


async def quarantined(daemon: RunningDaemon) -> list[dict[str, Any]]:
    async with daemon.hub.storage.engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT reason, headers, body FROM quarantine ORDER BY id"))
        return [dict(row._mapping) for row in rows]


async def test_hostile_events_are_quarantined_one_by_one_and_the_rest_answered(
    daemon: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    events = [
        sandbox_message("hi", sender="15550000001"),
        sandbox_message("hi", sender="1555\udc00"),  # a lone surrogate: legal JSON, not UTF-8
        {**sandbox_message("hi", sender="15550000002"), "timestamp": "HUGE"},
        sandbox_message("hi", sender="15550000003", message_id="x" * 10_000),
        sandbox_message("nul \x00 inside", sender="15550000004"),
        {**sandbox_message("hi", sender="15550000005"), "name": ["a", "list"]},  # wrong type: kept, unsupported
    ]
    body, _ = signed_sandbox_webhook(events)
    body = body.replace(b'"HUGE"', b"1e400")
    status, answer = await post(daemon, *_signed(body))
    assert (status, answer) == (200, {"ok": True, "events": 2, "quarantined": 4})
    [reply] = await wait_until(lambda: _sent(daemon))
    assert reply["address"] == "15550000001"
    await wait_until(lambda: _inbox_drained(daemon))
    assert await count(daemon, "SELECT count(*) FROM inbox WHERE state = 'done'") == 2
    assert await count(daemon, "SELECT count(*) FROM inbox WHERE kind = 'unsupported'") == 1
    reasons = [row["reason"] for row in await quarantined(daemon)]
    assert reasons[0].endswith(": sender: text that is not valid Unicode (a lone surrogate)")
    assert reasons[1].endswith(": raw.item.timestamp: the number 1e400 is out of range")
    assert "the event id is longer than 160 characters" in reasons[2]
    assert reasons[3].endswith(": content.text.body: text holding a NUL character")
    for row in await quarantined(daemon):
        kept = row["headers"] if isinstance(row["headers"], dict) else json.loads(row["headers"])
        assert {key.lower() for key in kept} <= {"content-type", "content-length", "user-agent"}
        kept_event = json.loads(bytes(row["body"]))  # the event as read, escaped to ASCII
        assert kept_event["kind"] in ("message", "unsupported") and kept_event["raw"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    # and the next message is answered as usual
    await post(daemon, *signed_sandbox_webhook([sandbox_message("hello", sender="15550000009")]))
    await wait_until(lambda: _sent_to(daemon, "15550000009"))


async def test_a_body_that_is_not_json_keeps_no_signature_in_the_quarantine(daemon: RunningDaemon) -> None:
    status, _ = await post(daemon, *_signed(b"\xff\xfe not json"))
    assert status == 400
    [row] = await quarantined(daemon)
    kept = row["headers"] if isinstance(row["headers"], dict) else json.loads(row["headers"])
    assert "X-Wahub-Signature-256" not in kept and kept["Content-Type"] == "application/json"
    assert bytes(row["body"]) == b"\xff\xfe not json"


async def test_signature_bytes_that_are_not_utf8_get_401(
    daemon: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    body, _ = signed_sandbox_webhook([sandbox_message("hi")])
    status, answer = await post_raw(
        f"{daemon.url}/webhooks/sandbox", b"X-Wahub-Signature-256: sha256=\xff\xfe\x80", body
    )
    assert status == 401 and answer["error"]["code"] == "invalid_signature"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    assert await count(daemon, "SELECT count(*) FROM inbox") == 0


async def _sent_to(daemon: RunningDaemon, address: str) -> list[dict[str, Any]]:
    return [m for m in await _sent(daemon) if m["address"] == address]


async def test_many_bad_events_are_quarantined_together_and_logged_in_short(
    daemon: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    bad = [sandbox_message(f"hi {i}\x00") for i in range(50)]
    status, answer = await post(daemon, *signed_sandbox_webhook([*bad, sandbox_message("hi")]))
    assert (status, answer) == (200, {"ok": True, "events": 1, "quarantined": 50})
    assert await count(daemon, "SELECT count(*) FROM quarantine") == 50
    logged = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    assert len(logged) == 11 and logged[-1] == "webhook for sandbox: 40 more events quarantined"
    await wait_until(lambda: _sent(daemon))
