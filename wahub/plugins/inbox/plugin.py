"""The inbox's hook implementations: its config section, routes, live feed,
jobs, and the reaction to conversations being queued."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiohttp import web

from wahub import hookimpl
from wahub.core.hub import Hub
from wahub.core.models import Conversation, OwnershipChange
from wahub.hookspecs import JobSpec
from wahub.plugins.inbox import assign
from wahub.plugins.inbox.admin import admin_routes
from wahub.plugins.inbox.api import api_routes
from wahub.plugins.inbox.auth import auth_routes
from wahub.plugins.inbox.config import INBOX_SCHEMA
from wahub.plugins.inbox.live import live_of
from wahub.plugins.inbox.pages import not_found, page_routes
from wahub.plugins.inbox.sockets import live_routes
from wahub.plugins.inbox.state import inbox_of


def _enabled(hub: Hub) -> bool:
    section: Mapping[str, Any] = hub.config["inbox"]
    return bool(section["enabled"])


@hookimpl
def register_config_sections() -> dict[str, Any]:
    return {"inbox": INBOX_SCHEMA}


@hookimpl
def register_routes(hub: Hub) -> list[web.AbstractRouteDef]:
    if not _enabled(hub):
        return []
    inbox = inbox_of(hub)
    routes = [*auth_routes(inbox), *admin_routes(inbox), *page_routes(inbox), *api_routes(inbox), *live_routes(inbox)]
    # Last: what no route above answers is still answered with the inbox's headers.
    return [*routes, web.route("*", "/inbox/{rest:.*}", not_found)]


@hookimpl
def lifespan(hub: Hub) -> AbstractAsyncContextManager[None] | None:
    return live_of(hub).running() if _enabled(hub) else None


@hookimpl
def scheduled_jobs(hub: Hub) -> Iterable[JobSpec]:
    return assign.jobs(hub) if _enabled(hub) else []


@hookimpl
async def conversation_changed(hub: Hub, conversation: Conversation, change: OwnershipChange) -> None:
    if _enabled(hub):
        await assign.on_change(inbox_of(hub), conversation, change)
