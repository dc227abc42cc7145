"""The health endpoints: ``/healthz``, ``/readyz``, ``/api/v1/status`` and ``/metrics``.

``/readyz`` is open to anyone, so it shows state codes only; the reasons
(error texts, hosts) are on the authenticated ``/api/v1/status``. A
provider's account is shown in shared terms (``Provider.account_state``):
its quality (``high``, ``medium``, ``low``, ``unknown``), its messaging limit
in users per 24 h, and the provider's own codes next to them.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from wahub import __version__
from wahub.core.http.api_io import json_response
from wahub.core.http.api_schemas import TEXT, obj
from wahub.core.http.openapi import Answer, Operation, errors
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.models import MessageStatus
from wahub.core.provider import STATE_CODE, AccountState, Quality

#: How far back the notification gauge looks, by when a notification was created.
NOTIFICATION_WINDOW_SECONDS = 24 * 3600.0
#: The statuses the notification gauge shows.
NOTIFICATION_STATUSES = (
    MessageStatus.QUEUED,
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.READ,
    MessageStatus.FAILED,
)


def health_routes() -> list[web.RouteDef]:
    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
    ]


def operations() -> list[Operation]:
    """``/api/v1/status``, served with the REST API (behind its token)."""
    provider = obj(
        ["ready", "paused", "account"],
        ready={"type": "boolean"},
        paused={"type": ["string", "null"], "description": "Why sending is paused (an auth failure), or null"},
        account={"type": "object", "description": "The provider's account: quality, messaging limit, its own codes"},
    )
    body = obj(
        ["status", "database", "providers", "roles"],
        status={"enum": ["ready", "not_ready"]},
        database=obj(["state"], state={"enum": ["ok", "unreachable"]}, error=TEXT),
        providers={"type": "object", "additionalProperties": provider},
        roles={"type": "array", "items": TEXT, "description": "The replica roles this process holds"},
    )
    return [
        Operation(
            "GET",
            "/api/v1/status",
            status,
            "Readiness with the reasons: database, providers, accounts, roles",
            "health",
            {200: Answer("The daemon's state", body), **errors(401)},
        )
    ]


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


async def readyz(request: web.Request) -> web.Response:
    """Readiness for a load balancer: state codes only, since anyone can ask.
    The reasons (error texts, hosts) are on the authenticated ``/api/v1/status``."""
    hub = request.app[HUB_KEY]
    database_error = await _database_error(hub)
    providers = {name: provider.ready and provider.paused is None for name, provider in hub.providers.items()}
    stuck = await _inbox_stuck(hub) if database_error is None else None
    ready = database_error is None and all(providers.values()) and stuck is None
    body: dict[str, Any] = {
        "status": "ready" if ready else "not_ready",
        "database": "ok" if database_error is None else "unreachable",
        "providers": providers,
    }
    if stuck is not None:
        body["inbox"] = stuck
    paused = sorted(name for name, provider in hub.providers.items() if provider.paused)
    if paused:
        body["paused"] = paused
    accounts = {name: account_fields(provider.account_state()) for name, provider in hub.providers.items()}
    if any(accounts.values()):
        body["accounts"] = {name: fields for name, fields in accounts.items() if fields}
    body["roles"] = sorted(hub.leadership.held)
    return json_response(body, status=200 if ready else 503)


def account_fields(state: AccountState) -> dict[str, Any]:
    """An account's entry on ``/readyz``: ``quality``, ``messaging_limit`` (a
    number, or ``"unlimited"``), and the provider's own fields that are codes."""
    fields: dict[str, Any] = {
        key: value for key, value in state.raw.items() if isinstance(value, str) and STATE_CODE.match(value)
    }
    if state.quality is not None:
        fields["quality"] = str(state.quality)
    if state.messaging_limit is not None:
        limit = state.messaging_limit
        fields["messaging_limit"] = "unlimited" if math.isinf(limit) else int(limit)
    return fields


async def status(request: web.Request) -> web.Response:
    """``GET /api/v1/status``: what ``/readyz`` says, with the reasons."""
    hub = request.app[HUB_KEY]
    database_error = await _database_error(hub)
    providers = {
        name: {
            "ready": provider.ready and provider.paused is None,
            "paused": provider.paused,
            "account": provider.account,
        }
        for name, provider in hub.providers.items()
    }
    ready = database_error is None and all(entry["ready"] for entry in providers.values())
    database = {"state": "ok"} if database_error is None else {"state": "unreachable", "error": database_error}
    body = {
        "status": "ready" if ready else "not_ready",
        "database": database,
        "providers": providers,
        "roles": sorted(hub.leadership.held),
    }
    return json_response(body)


async def _database_error(hub: Hub) -> str | None:
    try:
        await hub.storage.ping()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"{type(exc).__name__}: {exc}"
    return None


async def _inbox_stuck(hub: Hub) -> str | None:
    """Why webhooks cannot be stored now, or why inbox processing is stuck when
    an event has also waited longer than ``wahub.inbox_stuck_after`` (with
    nothing waiting, nothing is held up)."""
    intake = hub.intake_stuck()
    if intake is not None:
        return intake
    reason = hub.inbox_stuck()
    if reason is None:
        return None
    try:
        _count, oldest_age = await hub.storage.inbox_depth()
    except Exception:  # noqa: BLE001 - the inbox cannot even be counted: stuck indeed
        return reason
    return reason if oldest_age >= hub.config["wahub"]["inbox_stuck_after"] else None


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    depth, oldest_age = await hub.storage.inbox_depth()
    hub.metrics.inbox_depth.set(depth)
    hub.metrics.inbox_oldest_age.set(oldest_age)
    hub.metrics.inbox_failed.set(await hub.storage.inbox_failed_count())
    queued = await hub.storage.outbox.outbox_depth()
    for name, provider in hub.providers.items():
        hub.metrics.provider_ready.labels(name).set(1 if provider.ready and provider.paused is None else 0)
        count, age = queued.get(name, (0, 0.0))
        hub.metrics.outbox_depth.labels(name).set(count)
        hub.metrics.outbox_oldest_age.labels(name).set(age)
        _account_metrics(hub, name, provider.account_state())
    await _notification_metrics(hub)
    body = generate_latest(hub.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _notification_metrics(hub: Hub) -> None:
    """Messages of the last 24 h's notifications by status and failure code; a
    0 for every status without one, and for a code shown before that is gone."""
    counts = await hub.storage.campaigns.recent_messages(hub.clock.time() - NOTIFICATION_WINDOW_SECONDS)
    shown = hub.state.setdefault("metrics.notification_labels", set())
    shown.update((name, str(status), "") for name in hub.providers for status in NOTIFICATION_STATUSES)
    shown.update(counts)
    for labels in shown:
        hub.metrics.notification_messages.labels(*labels).set(counts.get(labels, 0))


def _account_metrics(hub: Hub, name: str, state: AccountState) -> None:
    if state.quality is not None:
        for known in Quality:  # a 0 for every other quality
            hub.metrics.provider_quality.labels(name, str(known)).set(1 if known is state.quality else 0)
    if state.messaging_limit is not None:
        hub.metrics.provider_messaging_limit.labels(name).set(state.messaging_limit)
