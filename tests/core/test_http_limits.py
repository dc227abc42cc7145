"""The listener's limits (wahub.http keepalive_timeout, read_timeout,
max_connections) against real sockets, with small values so the tests stay quick."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
from yarl import URL

from tests.helpers import TOKEN
from wahub.testing import RunningDaemon, build_config, running_daemon, wait_until

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@asynccontextmanager
async def daemon_with(sqlite_url: str, **http: Any) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(build_config({"wahub": {"http": http}}, database=sqlite_url)) as daemon:
        yield daemon


@asynccontextmanager
async def connection(daemon: RunningDaemon) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    url = URL(daemon.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP answer: its status and body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    body = await asyncio.wait_for(reader.readexactly(length), timeout=10)
    return int(head.split(b" ", 2)[1]), body


async def closed_by_server(reader: asyncio.StreamReader, within: float = 10.0) -> bool:
    """Whether the server closes the connection within ``within`` seconds (what it sent first is skipped)."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def trickle_until_answered(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, limit: int = 200
) -> bytes:
    """Send one byte, then wait a moment for an answer; again, until the server answers.
    Returns what it answered (fails after ``limit`` bytes)."""
    for _ in range(limit):
        writer.write(b"a")
        await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(65536), timeout=0.2)
        except TimeoutError:
            continue
        return answer + await asyncio.wait_for(reader.read(), timeout=10)
    pytest.fail(f"still reading after {limit} trickled bytes")


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(sqlite_url: str) -> None:
    async with daemon_with(sqlite_url, keepalive_timeout=0.3) as daemon:
        async with connection(daemon) as (reader, _):
            assert await closed_by_server(reader)  # never sent a byte
        async with connection(daemon) as (reader, writer):
            writer.write(HEALTHZ)
            assert (await read_answer(reader))[0] == 200
            assert await closed_by_server(reader)  # idle after its request


async def test_a_request_trickling_its_headers_is_cut_off_after_the_read_timeout(sqlite_url: str) -> None:
    limits = {"keepalive_timeout": 60, "read_timeout": 0.5}
    async with daemon_with(sqlite_url, **limits) as daemon, connection(daemon) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ")
        answer = await trickle_until_answered(reader, writer)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"


@pytest.mark.parametrize("path", ["/webhooks/sandbox", "/api/v1/messages"])
async def test_a_request_trickling_its_body_is_cut_off_after_the_read_timeout(sqlite_url: str, path: str) -> None:
    limits = {"keepalive_timeout": 60, "read_timeout": 0.5}
    config = build_config({"wahub": {"http": limits, "api_tokens": [TOKEN]}}, database=sqlite_url)
    async with running_daemon(config) as daemon, connection(daemon) as (reader, writer):
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{"
        )
        answer = await trickle_until_answered(reader, writer)
        counted = daemon.hub.metrics.webhook_requests.labels("sandbox", "408")._value.get()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and "wahub.http.read_timeout" in error["message"]
    # A webhook cut off is counted as the 408 it was answered, not as a 500 to alert on.
    assert counted == (1 if path.startswith("/webhooks/") else 0)


async def test_connections_over_the_cap_are_refused_until_one_closes(sqlite_url: str) -> None:
    limits = {"keepalive_timeout": 60, "max_connections": 3}
    async with daemon_with(sqlite_url, **limits) as daemon, connection(daemon) as first, connection(daemon) as second:
        async with connection(daemon) as third:
            for reader, writer in (first, second, third):
                writer.write(HEALTHZ)
                assert (await read_answer(reader))[0] == 200
            async with connection(daemon) as (reader, _):
                status, body = await read_answer(reader)
                assert status == 503
                assert json.loads(body)["error"]["code"] == "too_many_connections"
                assert await closed_by_server(reader)

        async def accepted() -> bool:
            async with connection(daemon) as (reader, writer):
                writer.write(HEALTHZ)
                return (await read_answer(reader))[0] == 200

        assert await wait_until(accepted)  # the third one closed: room for another
