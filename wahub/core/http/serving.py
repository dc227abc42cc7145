"""The HTTP listener's limits: idle and read time-outs and a connection cap.

aiohttp closes a connection that stays idle between requests for
``keepalive_timeout``, but once the first byte of a request has arrived it
waits for the rest for ever. So each connection is wrapped: a connection that
sends nothing is closed after ``keepalive_timeout``; a request whose headers
and body have not all arrived ``read_timeout`` after its first byte is cut
off (``408``, in the JSON error envelope once the handler runs, then the
connection is closed); and past ``max_connections`` open connections a new
one gets ``503`` and is closed at once. ``GuardedSite`` serves an app on a
socket with these limits; ``read_deadline_middleware`` tells each connection
when a request is being handled.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from wahub.core.http.api_io import error, error_text

_LOGGER = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Limits:
    keepalive_timeout: float
    read_timeout: float
    max_connections: int

    @classmethod
    def of(cls, http: Mapping[str, Any]) -> Limits:
        """The limits in a validated ``wahub.http`` section."""
        return cls(float(http["keepalive_timeout"]), float(http["read_timeout"]), int(http["max_connections"]))


def _raw_answer(status: str, code: str, message: str) -> bytes:
    body = error_text(code, message).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    )
    return head.encode() + b"\r\n" + body


def make_runner(app: web.Application, http: Mapping[str, Any], **options: Any) -> web.AppRunner:
    """A runner whose connections close after ``keepalive_timeout`` idle between requests."""
    return web.AppRunner(app, keepalive_timeout=Limits.of(http).keepalive_timeout, **options)


class GuardedSite(web.BaseSite):
    """Serve ``runner``'s app on a bound socket, within ``wahub.http``'s limits."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, http: Mapping[str, Any]) -> None:
        super().__init__(runner)
        self._sock = sock
        self.limits = Limits.of(http)

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        factory = _Connections(server, self.limits)
        self._server = await asyncio.get_running_loop().create_server(factory, sock=self._sock)


class _Connections:
    """The protocol factory: one guarded connection per accepted socket, up to the cap."""

    def __init__(self, server: web.Server, limits: Limits) -> None:
        self.server = server
        self.limits = limits
        # Weak: a connection the event loop dropped before it was made leaves no count behind.
        self.open: weakref.WeakSet[_GuardedConnection] = weakref.WeakSet()
        self.refusing = False

    def __call__(self) -> asyncio.Protocol:
        if len(self.open) >= self.limits.max_connections:
            if not self.refusing:  # once per overload, not once per connection
                _LOGGER.warning("refusing new connections: %d are open (wahub.http.max_connections)", len(self.open))
            self.refusing = True
            return _Refused()
        self.refusing = False
        connection = _GuardedConnection(self.server(), self)
        self.open.add(connection)
        return connection


class _Refused(asyncio.Protocol):
    """A connection over the cap: a 503 and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(
            _raw_answer("503 Service Unavailable", "too_many_connections", "too many open connections; try again")
        )
        transport.close()


class _GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the idle and read deadlines around it."""

    def __init__(self, inner: Any, connections: _Connections) -> None:
        self.inner = inner
        self.connections = connections
        self.limits = connections.limits
        self.transport: asyncio.Transport | None = None
        self.request: web.BaseRequest | None = None
        self.handling = False
        self.timed_out = False
        self.message = ""
        self.deadline: asyncio.TimerHandle | None = None
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.inner.connection_made(transport)
        self.idle = asyncio.get_running_loop().call_later(self.limits.keepalive_timeout, self._idle_expired)

    def data_received(self, data: bytes) -> None:
        if self.timed_out:
            return  # the request was cut off: the rest of it is not read
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        if data and not self.handling and self.deadline is None:
            self.deadline = asyncio.get_running_loop().call_later(self.limits.read_timeout, self._read_expired)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self.inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.idle, self.deadline):
            if timer is not None:
                timer.cancel()
        self.connections.open.discard(self)
        self.inner.connection_lost(exc)

    def request_started(self, request: web.BaseRequest) -> None:
        self.handling, self.request = True, request

    def request_finished(self) -> None:
        self.handling, self.request = False, None
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _idle_expired(self) -> None:
        self.idle = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _read_expired(self) -> None:
        self.deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        self.message = (
            f"the request did not arrive in full within {self.limits.read_timeout:g} s (wahub.http.read_timeout)"
        )
        if not self.handling:  # the headers are still incomplete
            self.timed_out = True
            self.transport.write(_raw_answer("408 Request Timeout", "request_timeout", self.message))
            self.transport.close()
        elif self.request is not None and not self.request.content.is_eof():
            # The handler reading the body gets the 408; no more of the body is read.
            self.timed_out = True
            body = error_text("request_timeout", self.message)
            self.request.content.set_exception(web.HTTPRequestTimeout(text=body, content_type="application/json"))
            self.request.content.feed_eof()


@web.middleware
async def read_deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Mark the request as handled on its guarded connection; a request cut off
    by ``read_timeout`` is answered 408 and its connection closed."""
    connection = request.transport.get_protocol() if request.transport is not None else None
    if not isinstance(connection, _GuardedConnection):
        return await handler(request)
    connection.request_started(request)
    try:
        response = await handler(request)
    except web.HTTPRequestTimeout:
        if not connection.timed_out:
            raise
        response = error(408, "request_timeout", connection.message)
    finally:
        connection.request_finished()
    if connection.timed_out:
        response.force_close()
    return response


class MalformedRequestFilter(logging.Filter):
    """For ``aiohttp.server``'s logger: a request aiohttp cannot even parse (a
    line or header over its size limit, a malformed URL or request line) is the
    client's fault, answered 400 by aiohttp. It is logged as one WARNING line
    naming the problem, not as an ERROR with a traceback, so no client can fill
    the log with tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "malformed request from %s refused (%d): %s"
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.args = (remote, exc.code, type(exc).__name__)
            record.exc_info = record.exc_text = None
        return True
