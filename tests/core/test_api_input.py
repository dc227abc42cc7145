"""The REST API against hostile input, over real HTTP: every answer is a 4xx in
the JSON error envelope naming the problem, never a 500, and always valid JSON."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.helpers import AUTH, TOKEN
from wahub.testing import (
    RunningDaemon,
    build_config,
    running_daemon,
    sandbox_message,
    signed_sandbox_webhook,
    wait_until,
)

USER = "15551234567"
CONSENT = f"/api/v1/contacts/sandbox/{USER}/consent"


@pytest.fixture
async def daemon(database_url: str) -> AsyncIterator[RunningDaemon]:
    config = build_config({"wahub": {"api_tokens": [TOKEN]}}, database=database_url)
    async with running_daemon(config) as running:
        yield running


@pytest.fixture
async def sqlite_daemon(sqlite_url: str) -> AsyncIterator[RunningDaemon]:
    """For checks of the body reader, which runs before any storage."""
    config = build_config({"wahub": {"api_tokens": [TOKEN]}}, database=sqlite_url)
    async with running_daemon(config) as running:
        yield running


async def raw_request(daemon: RunningDaemon, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as is on a new connection; the answer's status and body."""
    url = URL(daemon.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def call(
    daemon: RunningDaemon, method: str, path: str, *, data: bytes | io.BytesIO | None = None
) -> tuple[int, Any]:
    """The status and the parsed JSON answer, which must be strict JSON (no NaN, no Infinity)."""
    headers = {**AUTH, "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{daemon.url}{path}", data=data, headers=headers) as response,
    ):
        text = await response.text()
        assert response.content_type == "application/json", text
        return response.status, json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}"))


async def test_an_authorization_header_that_is_not_utf8_is_unauthorized(daemon: RunningDaemon) -> None:
    status, body = await raw_request(
        daemon,
        b"GET /api/v1/messages/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\x80token\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert status == 401
    assert json.loads(body)["error"]["code"] == "unauthorized"


async def test_ids_beyond_64_bits_and_junk_ids_are_not_found(daemon: RunningDaemon) -> None:
    for given in ("9223372036854775808", "99999999999999999999999999", "0", "-1", "1e3", "%C2%B2", "%00"):
        status, body = await call(daemon, "GET", f"/api/v1/messages/{given}")
        assert status == 404, given
        assert body["error"]["code"] == "not_found"
        assert "ids are whole numbers" in body["error"]["message"]


async def test_bad_addresses_and_media_ids_in_the_path_are_not_found(daemon: RunningDaemon) -> None:
    for path in (f"/api/v1/contacts/sandbox/{'1' * 200}/consent", "/api/v1/contacts/sandbox/15%0055/consent"):
        status, body = await call(daemon, "GET", path)
        assert (status, body["error"]["code"]) == (404, "not_found"), path
    status, body = await call(daemon, "GET", "/api/v1/media/%00")
    assert (status, body["error"]["code"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32 levels"),
        (b'{"a": ' * 40 + b"1" + b"}" * 40, "nested deeper than 32 levels"),
        (b'{"to": "1555", "x": NaN}', "NaN is not a JSON number"),
        (b'{"to": "1555", "x": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"to": "1555", "x": 1e400}', "the number 1e400 is out of range"),
        (b'{"to": "1555", "x": 92233720368547758080}', "integers must fit in 64 bits"),
        (b'{"to": "1555", "x": "\xff\xfe"}', "the body is not UTF-8"),
        (b'{"to": "1555", "x": "a\\u0000b"}', "U+0000"),
        (b'{"to": "1555", "x": "\\ud800"}', "unpaired surrogates"),
        (b'{"to": ', "the body is not JSON"),
    ],
)
async def test_unacceptable_bodies_are_refused_with_the_reason(
    sqlite_daemon: RunningDaemon, body: bytes, problem: str
) -> None:
    for method, path in (
        ("POST", "/api/v1/messages"),
        ("POST", CONSENT),
        ("PATCH", f"/api/v1/contacts/sandbox/{USER}"),
    ):
        status, answer = await call(sqlite_daemon, method, path, data=body)
        assert status == 400, (path, answer)
        assert answer["error"]["code"] == "invalid_json"
        assert problem in answer["error"]["message"]


async def test_wrong_types_in_a_send_are_refused(daemon: RunningDaemon) -> None:
    for body in ({"to": USER, "type": "text", "text": {"body": "hi"}, "provider": 5}, [1, 2], "text", 12):
        status, answer = await call(daemon, "POST", "/api/v1/messages", data=json.dumps(body).encode())
        assert status == 422, body
        assert answer["error"]["code"] == "invalid_message"


async def test_unknown_api_paths_and_methods_answer_in_the_envelope(daemon: RunningDaemon) -> None:
    status, body = await call(daemon, "GET", "/api/v1/nothing-here")
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = await call(daemon, "DELETE", "/api/v1/messages")
    assert (status, body["error"]["code"]) == (405, "method_not_allowed")


def consent(action: str, **more: Any) -> bytes:
    return json.dumps({"action": action, "evidence": {"form": "signup"}, **more}).encode()


@pytest.mark.parametrize("occurred_at", [b"1e400", b"-1e400", b"NaN", b"1e300", b"0", b"1230767999", b'"yesterday"'])
async def test_implausible_consent_times_are_refused(daemon: RunningDaemon, occurred_at: bytes) -> None:
    body = b'{"action": "opt_in", "evidence": {"form": "signup"}, "occurred_at": ' + occurred_at + b"}"
    status, answer = await call(daemon, "POST", CONSENT, data=body)
    assert status in (400, 422), answer
    assert answer["error"]["code"] in ("invalid_json", "invalid_consent")
    status, ledger = await call(daemon, "GET", CONSENT)
    assert (status, ledger["events"]) == (200, [])


async def test_a_consent_time_more_than_a_day_ahead_is_refused(daemon: RunningDaemon) -> None:
    status, answer = await call(daemon, "POST", CONSENT, data=consent("opt_in", occurred_at=time.time() + 2 * 86400))
    assert (status, answer["error"]["code"]) == (422, "invalid_consent")
    assert "to one day from now" in answer["error"]["message"]


async def test_an_opt_out_after_an_opt_in_still_counts(daemon: RunningDaemon) -> None:
    now = time.time()
    status, _ = await call(daemon, "POST", CONSENT, data=consent("opt_in", occurred_at=now + 3600))
    assert status == 200
    status, answer = await call(daemon, "POST", CONSENT, data=consent("opt_out", occurred_at=now + 7200))
    assert status == 200
    assert answer["state"]["all"] == "opt_out"
    assert [event["occurred_at"] for event in answer["events"]] == [now + 3600, now + 7200]


async def test_oversized_consent_evidence_is_refused(daemon: RunningDaemon) -> None:
    body = json.dumps({"action": "opt_in", "evidence": {"text": "x" * 20_000}}).encode()
    status, answer = await call(daemon, "POST", CONSENT, data=body)
    assert (status, answer["error"]["code"]) == (422, "invalid_consent")
    assert "evidence is over 16384 bytes" in answer["error"]["message"]


async def test_a_body_over_the_size_limit_is_refused_in_the_envelope(daemon: RunningDaemon) -> None:
    status, answer = await call(daemon, "POST", "/api/v1/messages", data=io.BytesIO(b" " * (5 * 1024 * 1024)))
    assert (status, answer["error"]["code"]) == (413, "body_too_large")


async def test_a_stop_keyword_with_an_implausible_time_is_recorded_when_it_arrived(daemon: RunningDaemon) -> None:
    event = {**sandbox_message("STOP", sender=USER), "timestamp": 4.0e9}  # the year 2096
    body, headers = signed_sandbox_webhook([event])
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as response,
    ):
        assert response.status == 200

    async def recorded() -> dict[str, Any] | None:
        _, ledger = await call(daemon, "GET", CONSENT)
        return ledger if ledger["events"] else None

    ledger = await wait_until(recorded)
    assert ledger["state"]["all"] == "opt_out"
    assert ledger["events"][0]["occurred_at"] <= time.time()
    status, answer = await call(daemon, "POST", CONSENT, data=consent("opt_in"))
    assert (status, answer["state"]["all"]) == (200, "opt_in")


@pytest.mark.parametrize(
    ("part", "problem"),
    [
        (b'Content-Disposition: form-data; name="provider"\r\n\r\n\xff\xfe', "malformed"),
        (b'Content-Disposition: form-data; name="file"; filename="a\x00b.jpg"\r\n\r\nabc', "malformed"),
        (b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''a%00b.jpg\r\n\r\nabc", "U+0000"),
        (b"no boundary here", "malformed"),
    ],
)
async def test_malformed_uploads_are_refused_with_the_reason(
    sqlite_daemon: RunningDaemon, part: bytes, problem: str
) -> None:
    body = part if part.startswith(b"no ") else b"--xx\r\n" + part + b"\r\n--xx--\r\n"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sqlite_daemon.url}/api/v1/media",
            data=body,
            headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xx"},
        ) as response,
    ):
        answer = await response.json()
    assert (response.status, answer["error"]["code"]) == (400, "invalid_upload")
    assert problem in answer["error"]["message"]


async def test_an_idempotency_key_that_is_not_utf8_is_refused(sqlite_daemon: RunningDaemon) -> None:
    status, body = await raw_request(
        sqlite_daemon,
        f"POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n".encode()
        + b"Idempotency-Key: \xff\xfe\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    assert status == 400
    assert json.loads(body)["error"]["code"] == "invalid_idempotency_key"
