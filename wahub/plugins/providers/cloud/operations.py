"""Account operations of the Cloud API providers on a running daemon: the
template sync as a scheduled job (when the replica takes the scheduler role,
then every ``template_sync_hours``), and REST routes for the template sync,
the stored templates and the profile (behind the REST API's bearer token),
described as operations in the REST API's OpenAPI document.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from wahub import hookimpl
from wahub.core.errors import ProviderError
from wahub.core.http.api_io import abort, error, json_response
from wahub.core.http.api_schemas import MAYBE_TEXT, TEXT, TIME, obj
from wahub.core.http.openapi import Answer, Operation, Param, errors
from wahub.core.hub import Hub
from wahub.hookspecs import JobSpec
from wahub.plugins.providers.cloud.api import CloudApiProvider

_LOGGER = logging.getLogger(__name__)


def _template_sync(name: str) -> Callable[[Hub], Awaitable[None]]:
    async def sync(hub: Hub) -> None:
        provider = hub.providers[name]
        if isinstance(provider, CloudApiProvider):
            counts = await provider.sync_templates()
            _LOGGER.info("templates of %s synced: %s", name, counts)

    return sync


@hookimpl
def scheduled_jobs(hub: Hub) -> list[JobSpec]:
    """A template sync per Cloud API provider when this replica takes the
    scheduler role (at start-up), then periodically: the table stays right even
    when a status webhook was missed."""
    return [
        JobSpec(
            id=f"wahub.templates_sync.{provider.name}",
            func=_template_sync(provider.name),
            trigger="interval",
            trigger_args={"hours": provider.config["template_sync_hours"]},
            # At start-up too: a fresh database knows the account's templates from the first minute.
            at_start=True,
        )
        for provider in hub.providers.values()
        if isinstance(provider, CloudApiProvider) and provider.config["template_sync_hours"]
    ]


_NAME = Param("name", {"type": "string", "minLength": 1}, "A Cloud API provider's name in the config", where="path")
_TEMPLATE = obj(
    ["name", "language", "category", "status"],
    name=TEXT,
    language=TEXT,
    category=TEXT,
    status=TEXT,
    quality=MAYBE_TEXT,
    external_id=MAYBE_TEXT,
    components={"type": ["array", "null"], "description": "The template's components, as the provider gave them"},
    updated_at=TIME,
)


@hookimpl
def register_routes(hub: Hub) -> list[Operation]:
    """Account operations on a running daemon (behind the REST API's bearer token)."""

    def provider_of(request: web.Request) -> CloudApiProvider:
        provider = hub.providers.get(request.match_info["name"])
        if not isinstance(provider, CloudApiProvider):
            raise abort(web.HTTPNotFound, "not_found", "no Cloud API provider of that name")
        return provider

    async def call(request: web.Request, operation: str) -> web.Response:
        provider = provider_of(request)
        try:
            result = await (provider.sync_templates() if operation == "sync" else provider.apply_profile())
        except ProviderError as exc:
            return error(502, "provider_error", str(exc), provider_code=exc.code)
        return json_response(result)

    async def sync(request: web.Request) -> web.Response:
        return await call(request, "sync")

    async def profile(request: web.Request) -> web.Response:
        return await call(request, "profile")

    async def stored(request: web.Request) -> web.Response:
        rows = await hub.storage.policy.templates(provider_of(request).name)
        keys = ("name", "language", "category", "status", "quality", "external_id", "components", "updated_at")
        return json_response({"templates": [{key: row[key] for key in keys} for row in rows]})

    base = "/api/v1/providers/{name}"
    return [
        Operation(
            "POST",
            f"{base}/templates/sync",
            sync,
            "Make the stored templates the account's own list",
            "providers",
            {
                200: Answer("What changed, by kind", {"type": "object", "additionalProperties": {"type": "integer"}}),
                **errors(401, 404, 502),
            },
            params=[_NAME],
            operation_id="sync_provider_templates",
        ),
        Operation(
            "GET",
            f"{base}/templates",
            stored,
            "The provider's stored templates",
            "providers",
            {200: Answer("Every stored template", obj(["templates"], templates={"type": "array", "items": _TEMPLATE}))}
            | errors(401, 404),
            params=[_NAME],
            operation_id="list_provider_templates",
        ),
        Operation(
            "POST",
            f"{base}/profile/apply",
            profile,
            "Apply the configured business profile to the account",
            "providers",
            {200: Answer("The fields that changed", {"type": "object"}), **errors(401, 404, 502)},
            params=[_NAME],
            operation_id="apply_provider_profile",
        ),
    ]
