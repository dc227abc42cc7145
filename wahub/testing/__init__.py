"""Test kit for wahub and its plugins: configs, signed webhooks, a running daemon.

Everything here runs real parts: the daemon listens on a real socket, stores
in a real database, and the helpers speak HTTP to it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pluggy
from aiohttp import web

from wahub.core.clock import Clock
from wahub.core.config.schema import validate_config
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.plugins import (
    build_plugin_manager,
    registered_ai_backends,
    registered_crm_backends,
    registered_providers,
    registered_sections,
)
from wahub.core.provider import sign_body
from wahub.plugins.providers.sandbox.provider import SIGNATURE_HEADER

TEST_SECRET = "wahub-test-secret-0123456789abcdef"


def plugin_manager(plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """The built-in plugins plus ``plugins`` (modules or objects with hook
    implementations), without the installed entry points, so a test sees
    exactly the plugins it names."""
    return build_plugin_manager(load_entry_points=False, extra_plugins=plugins)


def build_config(
    raw: Mapping[str, Any] | None = None, *, database: str, pm: pluggy.PluginManager | None = None
) -> dict[str, Any]:
    """Validate ``raw`` exactly as ``wahub run`` would, on ``database``, with one
    sandbox provider signing with ``TEST_SECRET`` unless ``raw`` names providers.
    The bot answers each message at once (``conversations.debounce_seconds``
    0) unless ``raw`` sets a debounce: a test about bursts sets one.
    Pass the same ``pm`` (see ``plugin_manager``) to ``running_daemon``."""
    pm = pm or plugin_manager()
    data = {key: value for key, value in (raw or {}).items()}
    data.setdefault("providers", [{"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET}])
    data["wahub"] = {"database": database, **data.get("wahub", {})}
    data["conversations"] = {"debounce_seconds": 0, **data.get("conversations", {})}
    return validate_config(
        data,
        sections=registered_sections(pm),
        platforms=registered_providers(pm),
        ai_platforms=registered_ai_backends(pm),
        crm_platforms=registered_crm_backends(pm),
    )


def sandbox_message(
    text: str, *, sender: str = "15551234567", name: str = "Test User", message_id: str | None = None
) -> dict[str, Any]:
    """A sandbox webhook event for a text the user sent."""
    return {
        "type": "message",
        "id": message_id or f"sbx.in.{uuid.uuid4().hex}",
        "from": sender,
        "name": name,
        "timestamp": time.time(),
        "message": {"type": "text", "text": {"body": text}},
    }


def sandbox_echo(text: str, *, recipient: str = "15551234567", message_id: str | None = None) -> dict[str, Any]:
    """A sandbox webhook event for a text the business sent the user from the
    WhatsApp Business app (a coexistence echo): a person answered from the phone."""
    return {
        "type": "echo",
        "id": message_id or f"sbx.echo.{uuid.uuid4().hex}",
        "to": recipient,
        "timestamp": time.time(),
        "message": {"type": "text", "text": {"body": text}},
    }


def sandbox_status(
    message_id: str, status: str, *, recipient: str = "15551234567", error_code: int | None = None
) -> dict[str, Any]:
    """A sandbox webhook event for a delivery status of a business message
    (a ``failed`` one carries ``error_code``, a Cloud API code)."""
    event: dict[str, Any] = {
        "type": "status",
        "id": f"{message_id}:{status}",
        "message_id": message_id,
        "recipient": recipient,
        "status": status,
        "timestamp": time.time(),
    }
    if error_code is not None:
        event["errors"] = [{"code": error_code}]
    return event


def signed_sandbox_webhook(events: list[dict[str, Any]], *, secret: str = TEST_SECRET) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a sandbox webhook carrying ``events``."""
    body = json.dumps({"object": "wahub_sandbox", "business_number": "15550000000", "events": events}).encode()
    return body, {SIGNATURE_HEADER: sign_body(secret, body), "Content-Type": "application/json"}


async def serve_on_loopback(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on 127.0.0.1 on a free port (a fake provider cloud, say); returns its runner and URL."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def close_fake(
    runner: web.AppRunner | None, session: aiohttp.ClientSession | None, tasks: set[asyncio.Task[None]]
) -> None:
    """Stop what a fake started: its background tasks, its client session, its server."""
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if session is not None:
        await session.close()
    if runner is not None:
        await runner.cleanup()


@dataclass
class RunningDaemon:
    url: str
    app: web.Application

    @property
    def hub(self) -> Hub:
        return self.app[HUB_KEY]

    async def post_sandbox(self, events: list[dict[str, Any]], *, provider: str = "sandbox") -> None:
        """Post a signed sandbox webhook carrying ``events`` (``sandbox_message``...);
        returns once the daemon stored them (it answered 200)."""
        body, headers = signed_sandbox_webhook(events)
        url = f"{self.url}/webhooks/{provider}"
        async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise AssertionError(f"the webhook was answered {response.status}: {await response.text()}")


class ManualClock(Clock):
    """A clock that stands still until the test moves it: quiet hours, retries and
    deferrals become testable without waiting. Start it near the real time:
    webhooks, statuses and leases elsewhere still carry real timestamps."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, at: float) -> None:
        self.now = at


@asynccontextmanager
async def running_daemon(
    config: dict[str, Any],
    *,
    pm: pluggy.PluginManager | None = None,
    clock: Clock | None = None,
    public_url_for: Iterable[str] = (),
) -> AsyncIterator[RunningDaemon]:
    """Start the whole daemon on 127.0.0.1 on a free port; shut it down gracefully after.
    With ``clock`` (e.g. a ``ManualClock``) the send policy and the dispatcher read its time.
    The provider entries named in ``public_url_for`` get the daemon's own URL as their
    ``public_base_url``: the socket is bound before the providers are built."""
    from wahub.core.http.serving import GuardedSite, make_runner
    from wahub.core.runtime.app import create_app

    sock = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        config = _with_public_url(config, set(public_url_for), url)
        app = create_app(config, pm=pm or build_plugin_manager(load_entry_points=False), clock=clock)
        runner = make_runner(app, config["wahub"]["http"], shutdown_timeout=2)
        await runner.setup()
        try:
            # Served as `wahub run` serves, within the configured wahub.http limits.
            await GuardedSite(runner, sock, config["wahub"]["http"]).start()
            yield RunningDaemon(url, runner.app)
        finally:
            await runner.cleanup()
    finally:
        sock.close()


def _with_public_url(config: dict[str, Any], names: set[str], url: str) -> dict[str, Any]:
    """``config`` with ``url`` as the ``public_base_url`` of the provider entries in ``names``."""
    if not names:
        return config
    entries = config["providers"]
    unknown = names - {entry["name"] for entry in entries}
    if unknown:
        raise ValueError(f"public_url_for names no provider entry: {', '.join(sorted(unknown))}")
    providers = [{**entry, "public_base_url": url} if entry["name"] in names else entry for entry in entries]
    return {**config, "providers": providers}


async def wait_until(condition: Callable[[], Awaitable[Any]], *, within: float = 10.0, every: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy and return that; fail
    with AssertionError when ``within`` seconds pass first."""
    deadline = time.monotonic() + within
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)
