"""A fault-injecting fake provider: a provider cloud on a real socket, and the
``fake`` platform that talks to it over HTTP.

``FakeProviderServer`` answers sends the way the Cloud API does (its JSON,
its error bodies and codes) and can be told to be slow, to fail with 5xx for a
while, to hang, to refuse with throughput (130429) or pair-rate (131056)
limits or refused credentials (190), and to report messages ``failed`` later
through a signed status webhook, as Meta does with 131047. It records every
call, so tests count attempts and duplicates.

Use it from a test::

    server = FakeProviderServer()
    await server.start()
    config = build_config({"providers": [server.provider_entry()]}, database=url, pm=pm)
    async with running_daemon(config, pm=pm) as daemon:
        server.attach(daemon.url)          # where its status webhooks go
        server.fail_for(30)                # 503 for the next 30 s
        ...
    await server.close()

with ``pm = plugin_manager([wahub.testing.fake_provider])``, or run a daemon
with ``wahub run -p wahub.testing.fake_provider``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import voluptuous as vol
from aiohttp import web

from wahub import hookimpl
from wahub.core.errors import ErrorMeaning, ProviderError
from wahub.core.hub import Hub
from wahub.core.models import Event, OutgoingMessage, SendResult
from wahub.core.provider import PROVIDER_SCHEMA_BASE, Provider
from wahub.plugins.providers.cloud.errors import classify_cloud_error
from wahub.plugins.providers.sandbox.provider import parse_events, signature_valid
from wahub.testing import close_fake, sandbox_status, serve_on_loopback, signed_sandbox_webhook, wait_until

PLATFORM = "fake"
DEFAULT_TOKEN = "fake-provider-token-0123456789"
DEFAULT_SECRET = "fake-provider-secret-0123456789"


@dataclass
class Call:
    """One send request as the fake received it."""

    body: dict[str, Any]
    received_at: float
    #: HTTP status answered; None while in progress or when the client gave up first.
    status: int | None = None
    message_id: str | None = None
    answered_at: float | None = None

    @property
    def key(self) -> str:
        """What identifies the message across retries: the test's own text, or the whole body."""
        return json.dumps(self.body, sort_keys=True)


@dataclass
class _Fault:
    status: int
    code: int
    title: str
    until: float = float("inf")
    remaining: int | None = None


@dataclass
class FakeProviderServer:
    token: str = DEFAULT_TOKEN
    webhook_secret: str = DEFAULT_SECRET
    #: Seconds each answer takes.
    latency: float = 0.0
    #: Send a ``sent`` and a ``delivered`` status webhook for each accepted message.
    statuses: bool = True
    calls: list[Call] = field(default_factory=list)
    #: Recipients whose messages are accepted and then reported ``failed`` with this code.
    fail_later: dict[str, int] = field(default_factory=dict)
    _faults: list[_Fault] = field(default_factory=list)
    _hang: int = 0
    _runner: web.AppRunner | None = None
    _daemon_url: str | None = None
    _provider_name: str = "fake"
    _session: aiohttp.ClientSession | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    url: str = ""

    async def start(self) -> FakeProviderServer:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner, self.url = await serve_on_loopback(app)
        self._session = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        await close_fake(self._runner, self._session, self._tasks)

    def provider_entry(self, name: str = "fake", **extra: Any) -> dict[str, Any]:
        """The ``providers:`` entry of a daemon that sends through this server."""
        self._provider_name = name
        return {
            "platform": PLATFORM,
            "name": name,
            "api_base": self.url,
            "access_token": self.token,
            "secret": self.webhook_secret,
            **extra,
        }

    def attach(self, daemon_url: str) -> None:
        """Send status webhooks to the daemon at ``daemon_url`` from now on."""
        self._daemon_url = daemon_url

    # -- faults --------------------------------------------------------------

    def fail_for(self, seconds: float, *, status: int = 503, code: int = 131016) -> None:
        """Answer every send with HTTP ``status`` for ``seconds`` from now."""
        self._faults.append(_Fault(status, code, "Service unavailable", until=time.time() + seconds))

    def fail_next(self, count: int, *, code: int, status: int = 400, title: str = "Refused") -> None:
        """Answer the next ``count`` sends with a Cloud API error ``code`` (e.g. 130429,
        131056, 190 with status 401)."""
        self._faults.append(_Fault(status, code, title, remaining=count))

    def hang_next(self, count: int) -> None:
        """Never answer the next ``count`` sends (the client's timeout ends them)."""
        self._hang += count

    def heal(self) -> None:
        """Drop every fault still pending."""
        self._faults.clear()
        self._hang = 0

    # -- what happened -------------------------------------------------------

    def accepted(self) -> list[Call]:
        return [call for call in self.calls if call.status == 200]

    async def drained(self, within: float = 10.0) -> None:
        """Wait until no client is connected and every call is answered. After the
        daemon sending here is killed, every request it had put on the wire, even one
        still unread in a socket buffer at the kill, is then in ``calls``."""
        server = self._runner.server if self._runner else None

        async def settled() -> bool:
            open_connections = server is not None and bool(server.connections)
            return not open_connections and all(call.answered_at is not None for call in self.calls)

        await wait_until(settled, within=within)

    def bodies_by_text(self) -> dict[str, int]:
        """How many accepted calls carried each text body: a count above 1 is a duplicate."""
        counts: dict[str, int] = {}
        for call in self.accepted():
            text = call.body.get("text", {}).get("body", call.key)
            counts[text] = counts.get(text, 0) + 1
        return counts

    # -- the HTTP side -------------------------------------------------------

    def _active_fault(self) -> _Fault | None:
        now = time.time()
        for fault in self._faults:
            if fault.remaining is not None:
                if fault.remaining > 0:
                    fault.remaining -= 1
                    return fault
            elif now < fault.until:
                return fault
        return None

    async def _messages(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, 190, "Invalid OAuth access token")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 100, "Invalid parameter: the body is not JSON")
        call = Call(body=body, received_at=time.time())
        self.calls.append(call)
        if self._hang > 0:
            self._hang -= 1
            await asyncio.sleep(3600)
        if self.latency:
            await asyncio.sleep(self.latency)
        fault = self._active_fault()
        if fault is not None:
            call.status, call.answered_at = fault.status, time.time()
            return _error(fault.status, fault.code, fault.title)
        message_id = f"fake.{uuid.uuid4().hex}"
        call.status, call.message_id, call.answered_at = 200, message_id, time.time()
        recipient = str(body.get("to"))
        if recipient in self.fail_later:
            code = self.fail_later[recipient]
            self._later([sandbox_status(message_id, "failed", recipient=recipient, error_code=code)])
        elif self.statuses:
            self._later([sandbox_status(message_id, s, recipient=recipient) for s in ("sent", "delivered")])
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": recipient, "wa_id": recipient}],
                "messages": [{"id": message_id, "message_status": "accepted"}],
            }
        )

    def _later(self, events: list[dict[str, Any]]) -> None:
        if self._daemon_url is None or self._session is None:
            return
        task = asyncio.create_task(self._post_webhook(events))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_webhook(self, events: list[dict[str, Any]]) -> None:
        assert self._session is not None
        body, headers = signed_sandbox_webhook(events, secret=self.webhook_secret)
        for _attempt in range(20):  # like a provider, redeliver until the daemon takes it
            try:
                async with self._session.post(
                    f"{self._daemon_url}/webhooks/{self._provider_name}", data=body, headers=headers
                ) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)


def _error(status: int, code: int, title: str) -> web.Response:
    body = {
        "error": {
            "message": f"(#{code}) {title}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": title},
            "fbtrace_id": uuid.uuid4().hex[:16],
        }
    }
    return web.json_response(body, status=status)


class FakeProvider(Provider):
    """The ``fake`` platform: sends to a ``FakeProviderServer`` over HTTP; its status
    webhooks use the sandbox format, signed with ``secret``."""

    PLATFORM = PLATFORM
    CONFIG_SCHEMA = PROVIDER_SCHEMA_BASE.extend(
        {
            vol.Required("api_base"): vol.Url(),
            vol.Required("access_token"): str,
            vol.Required("secret"): vol.All(str, vol.Length(min=16)),
            vol.Optional("timeout", default=10.0): vol.All(vol.Coerce(float), vol.Range(min=0.1, max=300)),
        }
    )

    def __init__(self, hub: Hub, config: Mapping[str, Any]) -> None:
        super().__init__(hub, config)
        self.timeout = aiohttp.ClientTimeout(total=config["timeout"])

    def verify_signature(self, headers: Mapping[str, str], body: bytes) -> bool:
        return signature_valid(self.config["secret"], headers, body)

    def parse_webhook(self, body: bytes) -> list[Event]:
        return parse_events(self.name, body)

    def classify_error(self, code: str | None, *, http_status: int | None = None) -> ErrorMeaning:
        """The fake answers with the Cloud API's codes; a subclass may give its
        own codes their meaning, for sends and ``failed`` statuses alike."""
        return classify_cloud_error(code, http_status=http_status)

    async def send(self, message: OutgoingMessage) -> SendResult:
        headers = {"Authorization": f"Bearer {self.config['access_token']}"}
        body = {"messaging_product": "whatsapp", **message.to_json()}
        async with self.hub.http.post(
            f"{self.config['api_base'].rstrip('/')}/v1/messages", json=body, headers=headers, timeout=self.timeout
        ) as response:
            try:
                data = await response.json(content_type=None)
            except ValueError:
                data = {}
            if response.status == 200:
                return SendResult(str(data["messages"][0]["id"]))
            error = data.get("error", {}) if isinstance(data, dict) else {}
            code = None if error.get("code") is None else str(error["code"])
            meaning = self.classify_error(code, http_status=response.status)
            detail = error.get("message", "")
            text = f"{meaning.reason} ({detail})" if detail else meaning.reason
            raise ProviderError(text, code=code, meaning=meaning)


@hookimpl
def register_providers() -> Iterable[type[Provider]]:
    return [FakeProvider]
