"""Hostile webhook bodies, correctly signed, against a running daemon over real
HTTP, with the fake Graph API (or 360dialog) as the provider's cloud.

A body may hold values no database stores (lone surrogates, ``1e400``, deep
nesting, ids of 10 kB) or items of the wrong shape. Whatever it holds, the
daemon answers without a 5xx, stores every valid event, sets the bad ones
aside in the quarantine, and goes on answering the next message.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import post_raw
from wahub.core.provider import sign_body
from wahub.testing import RunningDaemon, build_config, plugin_manager, running_daemon, wait_until
from wahub.testing.fake_graph import FakeGraphServer

ROUTER = {"rules": [{"match": {"keyword": ["hi"]}, "reply": "Hello! How can I help?"}]}
USER = "16505551234"
REPLY = {"body": "Hello! How can I help?"}


@asynccontextmanager
async def daemon_for(server: FakeGraphServer, database: str, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    """The daemon with one provider (``main``) on ``server``, on ``database``."""
    raw = {
        "wahub": {"database": database, "media": {"directory": str(tmp_path / "media")}},
        "providers": [server.provider_entry("main", pair_limit=None)],
        "router": ROUTER,
    }
    pm = plugin_manager()
    async with running_daemon(build_config(raw, database=database, pm=pm), pm=pm) as daemon:
        server.attach(daemon.url, "main")
        yield daemon


@asynccontextmanager
async def fake_cloud(platform: str = "meta_cloud") -> AsyncIterator[FakeGraphServer]:
    server = FakeGraphServer(platform=platform)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def message(text: str, *, sender: str = USER, message_id: str | None = None) -> dict[str, Any]:
    return {
        "from": sender,
        "id": message_id or f"wamid.{uuid.uuid4().hex}",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": text},
    }


def button_reply(title: str, *, sender: str = USER) -> dict[str, Any]:
    """A tapped reply button, as Meta reports it."""
    reply = {"type": "button_reply", "button_reply": {"id": "b1", "title": title}}
    return {
        "from": sender,
        "id": f"wamid.{uuid.uuid4().hex}",
        "timestamp": str(int(time.time())),
        "type": "interactive",
        "interactive": reply,
    }


def contact(wa_id: str = USER) -> dict[str, Any]:
    return {"profile": {"name": "Ana"}, "wa_id": wa_id}


def envelope(server: FakeGraphServer, *changes: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": server.waba_id, "time": int(time.time()), "changes": list(changes)}],
    }


def messages_change(server: FakeGraphServer, **value: Any) -> dict[str, Any]:
    metadata = {"display_phone_number": server.display_phone_number, "phone_number_id": server.phone_number_id}
    return {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}


def signed(server: FakeGraphServer, body: bytes) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if server.platform == "meta_cloud":
        headers["X-Hub-Signature-256"] = sign_body(server.app_secret, body)
    else:
        headers["X-Wahub-Webhook-Secret"] = server.webhook_secret
    return headers


async def post(daemon: RunningDaemon, server: FakeGraphServer, body: bytes) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{daemon.url}/webhooks/main", data=body, headers=signed(server, body)) as response,
    ):
        return response.status, await response.json(content_type=None)


async def query(daemon: RunningDaemon, sql: str, **params: Any) -> list[Any]:
    async with daemon.hub.storage.engine.connect() as conn:
        return list((await conn.execute(sa.text(sql), params)).all())


async def replies_to(server: FakeGraphServer, user: str) -> list[dict[str, Any]]:
    return [m for m in server.messages if m.get("to") == user and m.get("text") == REPLY]


async def answered(server: FakeGraphServer, user: str, times: int = 1) -> None:
    async def enough() -> bool:
        return len(await replies_to(server, user)) >= times

    await wait_until(enough, within=15)


async def drained(daemon: RunningDaemon) -> bool:
    rows = await query(daemon, "SELECT count(*) FROM inbox WHERE state IN ('pending', 'processing')")
    return rows[0][0] == 0


def no_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]


# -- acceptance ------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["meta_cloud", "dialog360"])
async def test_a_lone_surrogate_sender_stops_nothing_also_after_a_restart(
    platform: str, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with fake_cloud(platform) as server:
        async with daemon_for(server, database_url, tmp_path) as daemon:
            poison = message("hi", sender="1555\udc00")
            body = json.dumps(envelope(server, messages_change(server, messages=[poison]))).encode()
            assert b"\\udc00" in body  # the JSON escape, as Meta would write it
            assert await post(daemon, server, body) == (200, {"ok": True, "events": 0, "quarantined": 1})
            assert await server.send_inbound({"type": "text", "text": {"body": "hi"}}, wa_id=USER) == 200
            await answered(server, USER)
            [(reason,)] = await query(daemon, "SELECT reason FROM quarantine")
            assert reason.endswith("sender: text that is not valid Unicode (a lone surrogate)")
        async with daemon_for(server, database_url, tmp_path) as daemon:
            assert await server.send_inbound({"type": "text", "text": {"body": "hi"}}, wa_id=USER) == 200
            await answered(server, USER, times=2)
            await wait_until(lambda: drained(daemon))
            assert await query(daemon, "SELECT count(*) FROM inbox WHERE error IS NOT NULL") == [(0,)]
    assert no_errors(caplog) == []


async def test_a_body_with_1e400_and_a_10_kb_id_keeps_its_two_valid_messages(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with fake_cloud() as server, daemon_for(server, database_url, tmp_path) as daemon:
        first, second = message("hi", sender="16505550001"), message("hi", sender="16505550002")
        huge_time = {**message("hi", sender="16505550003"), "timestamp": "HUGE"}
        long_id = message("hi", sender="16505550004", message_id="wamid." + "x" * 10_000)
        items = [first, huge_time, long_id, second]
        contacts = [contact(item["from"]) for item in items]
        text = json.dumps(envelope(server, messages_change(server, contacts=contacts, messages=items)))
        body = text.replace('"HUGE"', "1e400").encode()
        assert await post(daemon, server, body) == (200, {"ok": True, "events": 2, "quarantined": 2})
        # a redelivery (the provider retries what it did not see answered) changes nothing
        assert await post(daemon, server, body) == (200, {"ok": True, "events": 2, "quarantined": 2})
        await answered(server, "16505550001")
        await answered(server, "16505550002")
        stored = await query(daemon, "SELECT provider_message_id FROM messages WHERE direction = 'in'")
        assert sorted(row[0] for row in stored) == sorted([first["id"], second["id"]])
        reasons = [row[0] for row in await query(daemon, "SELECT reason FROM quarantine ORDER BY id")]
        assert reasons[0].endswith("the number 1e400 is out of range")
        assert reasons[1].endswith("the event id is longer than 160 characters")
        assert len(reasons) == 4  # the redelivery's two, kept again
        for user in ("16505550003", "16505550004"):
            assert await replies_to(server, user) == []
    assert no_errors(caplog) == []


async def test_a_template_update_with_a_list_language_never_leaves_a_pending_row(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    value = {
        "event": "APPROVED",
        "message_template_id": 1623394748329120,
        "message_template_name": "order_shipped",
        "message_template_language": ["en_US", "de"],
        "reason": "NONE",
    }
    async with fake_cloud() as server, daemon_for(server, database_url, tmp_path) as daemon:
        assert await server.deliver(value, field="message_template_status_update") == 200
        await wait_until(lambda: drained(daemon))
        rows = await query(daemon, "SELECT kind, state, attempts, error FROM inbox")
        assert rows == [("unsupported", "done", 1, None)]
        assert await query(daemon, "SELECT count(*) FROM templates") == [(0,)]
    assert no_errors(caplog) == []


@pytest.mark.parametrize(
    ("platform", "header"), [("meta_cloud", b"X-Hub-Signature-256"), ("dialog360", b"X-Wahub-Webhook-Secret")]
)
async def test_signature_bytes_that_are_not_utf8_get_401(
    platform: str, header: bytes, sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with fake_cloud(platform) as server, daemon_for(server, sqlite_url, tmp_path) as daemon:
        body = json.dumps(envelope(server, messages_change(server, messages=[message("hi")]))).encode()
        status, answer = await post_raw(f"{daemon.url}/webhooks/main", header + b": sha256=\xff\xc3\x28\x80", body)
        assert (status, answer["error"]["code"]) == (401, "invalid_signature")
        assert await query(daemon, "SELECT count(*) FROM inbox") == [(0,)]
    assert no_errors(caplog) == []
    assert any("bad or missing signature" in record.getMessage() for record in caplog.records)


# -- property: whatever a signed body holds ---------------------------------------------

SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
#: Hostile values as the JSON text that carries them (json.dumps cannot write 1e400).
HOSTILE = st.one_of(
    st.sampled_from(["1e400", "-1e400", "1e-400", "9" * 40, "-" + "9" * 25, "1" + "0" * 5000, "1.5e308"]),
    st.tuples(st.text(max_size=8), SURROGATES, st.text(max_size=8)).map(lambda t: json.dumps("".join(t))),
    st.text(max_size=8).map(lambda text: json.dumps(text + "\x00")),
    st.integers(200, 20_000).map(lambda n: json.dumps("x" * n)),
    st.integers(30, 400).map(lambda depth: "[" * depth + "1" + "]" * depth),
    st.sampled_from([[], {}, ["a"], {"a": 1}, 7, -1, True, None, 0.5, ""]).map(json.dumps),
    SURROGATES.map(lambda s: json.dumps({s: 1})),
)
#: Where in a message, its contact, a status or a template change a hostile value goes.
PLACES = st.sampled_from(
    [
        "message.from",
        "message.id",
        "message.timestamp",
        "message.type",
        "message.text",
        "message.text.body",
        "message.context",
        "message.extra",
        "reply.interactive.type",
        "reply.interactive.button_reply",
        "reply.interactive.button_reply.id",
        "reply.interactive.button_reply.title",
        "contact.profile.name",
        "contact.wa_id",
        "status.id",
        "status.status",
        "status.recipient_id",
        "status.timestamp",
        "status.errors",
        "template.message_template_language",
        "template.message_template_name",
        "template.event",
        "entry.time",
    ]
)


def hostile_body(server: FakeGraphServer, valid: list[dict[str, Any]], spoiled: list[tuple[str, str]]) -> bytes:
    """A Meta body carrying the ``valid`` messages and one item per ``spoiled``
    (place, JSON text) with that value in that place."""
    messages, contacts = list(valid), [contact(item["from"]) for item in valid]
    statuses: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    entry_time: Any = int(time.time())
    fragments: dict[str, str] = {}
    for number, (place, fragment) in enumerate(spoiled):
        marker = f"@@hostile-{number}@@"
        fragments[json.dumps(marker)] = fragment
        kind, _, path = place.partition(".")
        sender = f"1650560{number:04d}"
        if kind == "entry":
            entry_time = marker
            continue
        item = {
            "message": message("thanks", sender=sender),
            "reply": button_reply("thanks", sender=sender),
            "contact": contact(sender),
            "status": {"id": f"wamid.{uuid.uuid4().hex}", "status": "read", "timestamp": "1751000000"},
            "template": {"event": "APPROVED", "message_template_name": "t", "message_template_language": "en"},
        }[kind]
        *parents, last = path.split(".")
        node = item
        for key in parents:
            node = node[key]
        node[last] = marker
        if kind in ("message", "reply"):
            messages.append(item)
            contacts.append(contact(sender))
        elif kind == "contact":
            messages.append(message("thanks", sender=sender))
            contacts.append(item)
        elif kind == "status":
            statuses.append(item)
        else:
            changes.append({"field": "message_template_status_update", "value": item})
    change = messages_change(server, contacts=contacts, messages=messages, statuses=statuses)
    data = envelope(server, change, *changes)
    data["entry"][0]["time"] = entry_time
    text = json.dumps(data)
    for marker, fragment in fragments.items():
        text = text.replace(marker, fragment)
    return text.encode()


@pytest.fixture
async def cloud_daemon(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[RunningDaemon, FakeGraphServer]]:
    async with fake_cloud() as server, daemon_for(server, database_url, tmp_path) as daemon:
        yield daemon, server


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    valid_count=st.integers(0, 2),
    spoiled=st.lists(st.tuples(PLACES, HOSTILE), min_size=1, max_size=3),
)
async def test_any_signed_body_keeps_its_valid_events_and_the_daemon_answering(
    cloud_daemon: tuple[RunningDaemon, FakeGraphServer],
    caplog: pytest.LogCaptureFixture,
    valid_count: int,
    spoiled: list[tuple[str, str]],
) -> None:
    daemon, server = cloud_daemon
    valid = [
        (button_reply if number % 2 else message)("thanks", sender=f"1650559{number:04d}")
        for number in range(valid_count)
    ]
    status, answer = await post(daemon, server, hostile_body(server, valid, spoiled))
    assert status == 200, answer
    for item in valid:
        rows = await query(daemon, "SELECT kind FROM inbox WHERE external_id = :id", id=item["id"])
        assert rows == [("message",)]
    # and a normal message right after is answered; nothing stored fails in processing
    user = f"1650{uuid.uuid4().int % 10**7:07d}"
    assert await server.send_inbound({"type": "text", "text": {"body": "hi"}}, wa_id=user) == 200
    await answered(server, user)
    await wait_until(lambda: drained(daemon))
    assert await query(daemon, "SELECT count(*) FROM inbox WHERE error IS NOT NULL") == [(0,)]
    assert no_errors(caplog) == []
