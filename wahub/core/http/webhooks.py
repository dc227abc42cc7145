"""The webhook routes: verify, screen and hand each webhook to the inbox writer;
answer 200 only once its events are committed."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from wahub.core.errors import IntakeClosed, WebhookError
from wahub.core.http.api_io import error
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.inbound.intake import INTAKE_KEY, screen
from wahub.core.inbound.webhook_json import text_problem
from wahub.core.models import Event, event_to_json
from wahub.core.provider import WebhookRequest

_LOGGER = logging.getLogger(__name__)

# The only headers kept with a quarantined body: enough to diagnose it, never a credential.
_QUARANTINE_HEADERS = ("content-type", "content-length", "content-encoding", "user-agent")
#: Quarantined events of one webhook logged one by one; the rest are counted.
_LOGGED_ITEMS = 10


def _shutting_down() -> web.Response:
    return error(503, "shutting_down", "wahub is restarting; deliver this webhook again")


async def webhook_get(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    provider = hub.providers.get(request.match_info["provider_name"])
    if provider is None:
        return error(404, "unknown_provider", f"no provider named {request.match_info['provider_name']!r}")
    return await provider.handle_webhook_get(request)


async def webhook_post(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    hub = request.app[HUB_KEY]
    name = request.match_info["provider_name"]
    provider = hub.providers.get(name)
    if provider is None:
        return error(404, "unknown_provider", f"no provider named {name!r}")
    outcome = "500"  # stays so when _receive raises
    try:
        response = await _receive(request, hub, name)
        outcome = str(response.status)
        return response
    except web.HTTPException as exc:  # e.g. the 408 of a body cut off by wahub.http.read_timeout
        outcome = str(exc.status)
        raise
    finally:
        metrics = hub.metrics
        metrics.child(metrics.webhook_requests, name, outcome).inc()
        metrics.child(metrics.webhook_latency, name).observe(time.perf_counter() - started)


async def _receive(request: web.Request, hub: Hub, name: str) -> web.Response:
    provider = hub.providers[name]
    writer = request.app[INTAKE_KEY]
    if writer.closed:
        return _shutting_down()
    body = await request.read()
    if not provider.verify_webhook(WebhookRequest(str(request.url), request.headers, body, request.remote)):
        _LOGGER.warning("webhook for %s refused: bad or missing signature", name)
        return error(401, "invalid_signature", "the webhook signature does not match")
    headers = _kept_headers(request.headers)
    try:
        screened = [(event, *screen(event)) for event in provider.parse_webhook(body)]
    except Exception as exc:  # a parser's bug is an unparsable body too: keep it, answer 400
        if not isinstance(exc, WebhookError):
            _LOGGER.exception("provider %s failed to parse a webhook", name)
        await hub.storage.quarantine(name, str(exc), headers, body)
        _LOGGER.warning("webhook for %s quarantined: %s", name, exc)
        return error(400, "unparsable_webhook", str(exc))
    events = [event for event, row, _problem in screened if row is not None]
    if events:
        try:
            await writer.submit([row for _event, row, _problem in screened if row is not None])
        except IntakeClosed:
            return _shutting_down()
        except Exception:  # noqa: BLE001 - the provider will redeliver
            return error(503, "storage_unavailable", "the event could not be stored; deliver it again")
        for event in events:
            hub.metrics.child(hub.metrics.webhook_events, name, event.kind).inc()
    # After the good events' commit: a redelivery after a failed commit must not
    # quarantine the bad ones twice. They can never succeed, so the answer is 200.
    refused = [(event, problem) for event, _row, problem in screened if problem is not None]
    if refused:
        items = [(_item_reason(event, problem), _item_body(event, body)) for event, problem in refused]
        await hub.storage.quarantine_many(name, headers, items)
        hub.metrics.child(hub.metrics.webhook_events, name, "quarantined").inc(len(refused))
    for event, problem in refused[:_LOGGED_ITEMS]:
        _LOGGER.warning("webhook for %s: %s event quarantined: %s", name, event.kind, problem)
    if len(refused) > _LOGGED_ITEMS:
        _LOGGER.warning("webhook for %s: %d more events quarantined", name, len(refused) - _LOGGED_ITEMS)
    answer: dict[str, Any] = {"ok": True, "events": len(events)}
    if refused:
        answer["quarantined"] = len(refused)
    return provider.webhook_response(answer)


def _kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers kept with a quarantined body: the allow-list only."""
    return {
        key: value
        for key, value in headers.items()
        if key.lower() in _QUARANTINE_HEADERS and text_problem(value) is None
    }


def _item_reason(event: Event, problem: str) -> str:
    # ascii(): the id itself may be text no database stores.
    return f"{event.kind} event {str(event.external_id)[:80]!a}: {problem}"


def _item_body(event: Event, body: bytes) -> bytes:
    """The quarantined event as JSON (escaped to ASCII, so any text fits), or the
    whole webhook body when the event cannot even be written as JSON."""
    try:
        return json.dumps(event_to_json(event), ensure_ascii=True, default=repr).encode()
    except (RecursionError, TypeError, ValueError):
        return body


def webhook_routes() -> list[web.RouteDef]:
    return [
        web.get("/webhooks/{provider_name}", webhook_get),
        web.post("/webhooks/{provider_name}", webhook_post),
    ]
