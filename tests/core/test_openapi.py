"""The OpenAPI document of the REST API: valid OpenAPI 3.1, one operation for
each route the app serves under /api/v1 and no other, bodies refused with the
field named, and a plugin's endpoints described like the core's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from tests.helpers import AUTH, TOKEN
from wahub import __version__, hookimpl
from wahub.core.http.api import api_operations
from wahub.core.http.api_schemas import SHARED, obj
from wahub.core.http.openapi import OPERATIONS_KEY, Answer, Operation, body_of, document, errors
from wahub.core.runtime.app import create_app
from wahub.testing import RunningDaemon, build_config, plugin_manager, running_daemon

CONSENT = "/api/v1/contacts/sandbox/15551234567/consent"


async def _echo_note(request: web.Request) -> web.Response:
    return web.json_response({"note": body_of(request)["note"]})


class NotesPlugin:
    """A third party's REST endpoint, described as an operation."""

    @hookimpl
    def register_routes(self, hub: Any) -> list[Operation]:
        return [
            Operation(
                "POST",
                "/api/v1/notes",
                _echo_note,
                "Echo a note",
                "notes",
                {200: Answer("The note", obj(["note"], note={"type": "string"})), **errors(401, 422)},
                body={"type": "object", "required": ["note"], "properties": {"note": {"type": "string"}}},
                body_error="invalid_note",
            )
        ]


@pytest.fixture
async def daemon(sqlite_url: str) -> AsyncIterator[RunningDaemon]:
    pm = plugin_manager([NotesPlugin()])
    config = build_config({"wahub": {"api_tokens": [TOKEN]}}, database=sqlite_url, pm=pm)
    async with running_daemon(config, pm=pm) as running:
        yield running


async def _get(daemon: RunningDaemon, path: str, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}{path}", headers=headers) as answer:
        return answer.status, await answer.json()


async def _post(daemon: RunningDaemon, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(f"{daemon.url}{path}", json=body, headers=AUTH) as answer:
        return answer.status, await answer.json()


async def test_the_served_document_is_valid_openapi_3_1(daemon: RunningDaemon) -> None:
    status, described = await _get(daemon, "/api/v1/openapi.json")
    assert status == 200
    validate(described)
    assert (described["openapi"], described["info"]["version"]) == ("3.1.0", __version__)
    assert described["servers"] == [{"url": "/"}]
    assert described["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    error = described["paths"]["/api/v1/messages"]["post"]["responses"]["422"]["content"]["application/json"]
    assert error["schema"] == {"$ref": "#/components/schemas/Error"}
    ids = [op["operationId"] for item in described["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_every_api_route_is_described_and_every_description_is_served(sqlite_url: str) -> None:
    pm = plugin_manager([NotesPlugin()])
    app = create_app(build_config({"wahub": {"api_tokens": [TOKEN]}}, database=sqlite_url, pm=pm), pm=pm)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/v1") and route.method != "HEAD"
    }
    described = document(app[OPERATIONS_KEY], version=__version__)
    listed = {(method.upper(), path) for path, item in described["paths"].items() for method in item}
    assert served == listed
    assert ("POST", "/api/v1/notes") in listed  # the plugin's
    assert ("GET", "/api/v1/providers/{name}/templates") in listed  # a built-in plugin's


async def test_only_the_document_and_its_page_are_served_without_a_token(daemon: RunningDaemon) -> None:
    described = document(api_operations(), version=__version__)
    public = {
        path
        for path, item in described["paths"].items()
        for operation in item.values()
        if operation.get("security") == []
    }
    assert public == {"/api/v1/openapi.json", "/api/v1/docs"}
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/api/v1/docs") as page:
        assert page.status == 200
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        text = await page.text()
    for asset in ("/api-docs/api-docs.js", "/api-docs/api-docs.css"):
        assert asset in text
        async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}{asset}") as answer:
            assert answer.status == 200
    assert (await _get(daemon, "/api/v1/status"))[0] == 401
    assert (await _get(daemon, "/api/v1/docs/anything"))[0] == 401


@pytest.mark.parametrize(
    ("path", "body", "code", "field"),
    [
        (CONSENT, {"action": "maybe", "evidence": {}}, "invalid_consent", "$.action"),
        (CONSENT, {"action": "opt_in", "evidence": {}, "source": "form"}, "invalid_consent", "$"),
        (CONSENT, {"action": "opt_in", "evidence": "signed"}, "invalid_consent", "$.evidence"),
        ("/api/v1/messages", {"to": 15551234567, "type": "text"}, "invalid_message", "$.to"),
        ("/api/v1/notes", {"note": ["a"]}, "invalid_note", "$.note"),
    ],
)
async def test_a_body_that_breaks_its_schema_is_refused_naming_the_field(
    daemon: RunningDaemon, path: str, body: Any, code: str, field: str
) -> None:
    status, answer = await _post(daemon, path, body)
    assert (status, answer["error"]["code"], answer["error"]["field"]) == (422, code, field)
    assert answer["error"]["message"].startswith(f"{field}: ")


async def test_a_body_that_keeps_to_its_schema_reaches_the_handler(daemon: RunningDaemon) -> None:
    # The validated body is handed over on the request (a typed request key: no warning).
    assert await _post(daemon, "/api/v1/notes", {"note": "hi"}) == (200, {"note": "hi"})
    status, answer = await _post(daemon, CONSENT, {"action": "opt_in", "evidence": {"form": "signup"}})
    assert (status, answer["state"]["all"]) == (200, "opt_in")


def test_two_operations_may_not_share_an_operation_id() -> None:
    twice = [*api_operations(), api_operations()[0]]
    with pytest.raises(ValueError, match="operationId 'send_message' is used by /api/v1/messages and /api/v1/messages"):
        document(twice, version="1")


def test_shared_schemas_are_named_once_and_referenced() -> None:
    described = document(api_operations(), version="1", shared=SHARED)
    assert described["components"]["schemas"]["Conversation"]["properties"]["window_open"] == {
        "type": "boolean",
        "description": "Whether the 24-hour service window is open",
    }
    listing = described["paths"]["/api/v1/conversations"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listing["schema"]["properties"]["conversations"]["items"] == {"$ref": "#/components/schemas/Conversation"}
    detail = described["components"]["schemas"]["ConversationWithEvents"]
    assert detail["allOf"][0] == {"$ref": "#/components/schemas/Conversation"}


class ClashingPlugin:
    """An endpoint whose operationId is the core's send_message."""

    @hookimpl
    def register_routes(self, hub: Any) -> list[Operation]:
        return [Operation("POST", "/api/v1/sends", _echo_note, "Send", "sends", {}, operation_id="send_message")]


def test_a_plugin_reusing_an_operation_id_stops_start_up(sqlite_url: str) -> None:
    pm = plugin_manager([ClashingPlugin()])
    config = build_config({"wahub": {"api_tokens": [TOKEN]}}, database=sqlite_url, pm=pm)
    with pytest.raises(ValueError, match="'send_message' is used by /api/v1/messages and /api/v1/sends"):
        create_app(config, pm=pm)
