"""``create_app(config)``: the aiohttp application and its lifecycle.

Each resource has one cleanup context, entered in order at start-up and left
in reverse at shutdown: storage (and the send policy), HTTP client,
providers, AI backends, CRM backends and their deliverers, plugin
lifespans, replica roles, dispatcher, campaign writer, inbox writer, inbox
workers, scheduler, and last the start of the roles' checks (the dispatcher
and scheduler wait for their role).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pluggy
from aiohttp import web

from wahub import __version__
from wahub.core.clock import Clock
from wahub.core.conversations.language import LanguageDetector
from wahub.core.http.api import api_operations, api_routes, auth_middleware
from wahub.core.http.api_docs import DOCUMENT_KEY, described
from wahub.core.http.health import health_routes
from wahub.core.http.media import public_media_routes
from wahub.core.http.openapi import OPERATIONS_KEY, Operation, route_defs
from wahub.core.http.serving import read_deadline_middleware
from wahub.core.http.webhooks import webhook_routes
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.inbound.intake import intake_ctx
from wahub.core.inbound.worker import pipeline_ctx
from wahub.core.metrics import Metrics
from wahub.core.outbound.campaigns import campaigns_ctx
from wahub.core.outbound.deliveries import crm_ctx
from wahub.core.outbound.dispatcher import dispatcher_ctx
from wahub.core.plugins import (
    build_plugin_manager,
    registered_ai_backends,
    registered_crm_backends,
    registered_providers,
)
from wahub.core.policy.checks import Policy
from wahub.core.policy.consent import keyword_table
from wahub.core.runtime.leadership import leadership_ctx, leadership_start_ctx
from wahub.core.runtime.scheduler import scheduler_ctx
from wahub.core.storage.events import Subscription
from wahub.core.storage.store import Storage
from wahub.core.work.lifecycle import SHUTDOWN_GRACE, within_grace

_LOGGER = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024


def create_app(
    config: dict[str, Any], *, pm: pluggy.PluginManager | None = None, clock: Clock | None = None
) -> web.Application:
    """Build the daemon from a validated configuration (see ``wahub.core.config.schema``);
    ``clock`` replaces the wall clock of the send policy and the dispatcher (tests)."""
    hub = build_hub(config, pm or build_plugin_manager(), clock)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[read_deadline_middleware, auth_middleware])
    app[HUB_KEY] = hub
    app.cleanup_ctx.extend(
        # Shutdown runs this in reverse: the scheduler stops, rows in progress finish
        # (queueing their replies), the intake flushes, sends in flight finish, and
        # only then plugin lifespans, providers, HTTP client and storage close.
        [
            storage_ctx,
            http_ctx,
            providers_ctx,
            ai_ctx,
            crm_ctx,
            lifespans_ctx,
            languages_ctx,
            leadership_ctx,
            dispatcher_ctx,
            campaigns_ctx,
            intake_ctx,
            pipeline_ctx,
            scheduler_ctx,
            leadership_start_ctx,
        ]
    )
    app.router.add_routes(
        [
            *health_routes(),
            *webhook_routes(),
            *public_media_routes(),
            *api_routes(),
            *(route for backend in hub.crm.values() for route in backend.routes()),
        ]
    )
    app.on_shutdown.append(_begin_shutdown)
    operations = api_operations()
    for defs in hub.pm.hook.register_routes(hub=hub):
        plugin_operations = [item for item in defs or [] if isinstance(item, Operation)]
        operations.extend(plugin_operations)
        app.router.add_routes(
            [*route_defs(plugin_operations), *(item for item in defs or [] if not isinstance(item, Operation))]
        )
    # What /api/v1/openapi.json describes: the core's operations and the plugins'.
    app[OPERATIONS_KEY] = operations
    app[DOCUMENT_KEY] = described(operations)
    return app


def build_hub(config: dict[str, Any], pm: pluggy.PluginManager, clock: Clock | None = None) -> Hub:
    """The hub, its providers and AI backends, before anything is opened or started."""
    hub = Hub(config=config, pm=pm, metrics=Metrics(), consent_keywords=keyword_table(config["policy"]["consent"]))
    if clock is not None:
        hub.clock = clock
    platforms = registered_providers(pm)
    for entry in config["providers"]:
        hub.providers[entry["name"]] = platforms[entry["platform"]](hub, entry)
    ai_platforms = registered_ai_backends(pm)
    for entry in config.get("ai", ()):
        hub.ai[entry["name"]] = ai_platforms[entry["platform"]](hub, entry)
    crm_platforms = registered_crm_backends(pm)
    for entry in config.get("crm", ()):
        hub.crm[entry["name"]] = crm_platforms[entry["platform"]](hub, entry)
    return hub


@contextlib.asynccontextmanager
async def command_hub(config: dict[str, Any], pm: pluggy.PluginManager) -> AsyncIterator[Hub]:
    """A hub with its storage, HTTP client and providers (not started: no
    webhooks, no sending, nothing in the background), for one-off commands."""
    hub = build_hub(config, pm)
    hub.storage = await open_storage(hub)
    try:
        hub.policy = Policy(config["policy"], hub.storage, hub.clock, language=config["wahub"]["language"])
        async with aiohttp.ClientSession(headers={"User-Agent": f"wahub/{__version__}"}) as hub.http:
            yield hub
    finally:
        await hub.storage.close()


async def _begin_shutdown(app: web.Application) -> None:
    app[HUB_KEY].shutting_down.set()


async def open_storage(hub: Hub) -> Storage:
    """The configured database, its transactions recording the events the ``crm:``
    entries take (a one-off command's changes too: their events go out when the daemon runs)."""
    storage = await Storage.open(hub.config["wahub"]["database"], media=hub.config["wahub"]["media"])
    storage.db.subscriptions = tuple(Subscription(name, backend.events) for name, backend in hub.crm.items())
    return storage


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    hub.storage = await open_storage(hub)
    hub.policy = Policy(hub.config["policy"], hub.storage, hub.clock, language=hub.config["wahub"]["language"])
    yield
    await hub.storage.close()


async def http_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    timeout = aiohttp.ClientTimeout(total=30, connect=10)
    hub.http = aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": f"wahub/{__version__}"})
    yield
    await hub.drain_background(grace=SHUTDOWN_GRACE["background"])
    await hub.http.close()


async def providers_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    for provider in hub.providers.values():
        await provider.start()
    yield
    await within_grace(
        "providers",
        _stop_providers(hub),
        on_timeout_message="providers did not stop within %(grace).1f s; leaving them",
        logger=_LOGGER,
    )


async def _stop_providers(hub: Hub) -> None:
    for provider in reversed(list(hub.providers.values())):
        try:
            await provider.stop()
        except Exception:
            _LOGGER.exception("provider %s failed to stop", provider.name)


async def ai_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start every AI backend once all exist (one may lean on another, such as
    a model on its FAQ); stop them in reverse at shutdown."""
    hub = app[HUB_KEY]
    for backend in hub.ai.values():
        await backend.start()
    yield
    # Backends are plugins' objects: they get the plugins' grace.
    await within_grace(
        "plugins",
        _stop_ai(hub),
        on_timeout_message="AI backends did not stop within %(grace).1f s; leaving them",
        logger=_LOGGER,
    )


async def _stop_ai(hub: Hub) -> None:
    for backend in reversed(list(hub.ai.values())):
        try:
            await backend.stop()
        except Exception:
            _LOGGER.exception("AI backend %s failed to stop", backend.name)


async def languages_ctx(app: web.Application) -> AsyncIterator[None]:
    """Language detection chooses among ``wahub.languages``, or else among the
    languages the configured texts are written in (the plugins added theirs
    while their lifespans began)."""
    hub = app[HUB_KEY]
    settings = hub.config["wahub"]
    if settings.get("languages"):
        hub.languages = set(settings["languages"])
    else:
        hub.languages |= {settings["language"], *hub.config["policy"]["consent"]["languages"]}
        for backend in hub.ai.values():
            hub.languages |= backend.languages()
    detector = LanguageDetector(sorted(hub.languages))
    # The model is read now (about half a second), in a thread, not on the first message.
    await asyncio.to_thread(detector.detect, "warm up the model")
    hub.detect_language = lambda text, confidence: detector.detect(text, min_confidence=confidence)
    _LOGGER.info("contacts' languages are detected among: %s", ", ".join(sorted(hub.languages)))
    yield


async def lifespans_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    stack = contextlib.AsyncExitStack()
    try:
        for manager in reversed(hub.pm.hook.lifespan(hub=hub)):
            if manager is not None:
                await stack.enter_async_context(manager)
        yield
    finally:
        await within_grace(
            "plugins",
            stack.aclose(),
            on_timeout_message="plugin lifespans did not exit within %(grace).1f s; leaving them",
            logger=_LOGGER,
        )
