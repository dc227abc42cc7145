"""The admins' operator endpoints under ``/inbox/api/operators``: list the
operators, add one, and change one's password, admin right or whether it may
sign in (disabling ends its sessions at once)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from wahub.core.errors import BodyRefused
from wahub.core.http.api_io import error, json_body, json_response
from wahub.core.storage.operators import Operator
from wahub.plugins.inbox.auth import guarded, operator_of, passwords_of, store_of
from wahub.plugins.inbox.passwords import name_problem, password_problem
from wahub.plugins.inbox.state import Inbox

_LOGGER = logging.getLogger(__name__)


def admin_routes(inbox: Inbox) -> list[web.RouteDef]:
    async def list_operators(_request: web.Request) -> web.StreamResponse:
        return json_response({"operators": [_operator_json(o) for o in await store_of(inbox).all()]})

    async def add_operator(request: web.Request) -> web.StreamResponse:
        return await _add_operator(inbox, request)

    async def change_operator(request: web.Request) -> web.StreamResponse:
        return await _change_operator(inbox, request)

    return [
        web.get("/inbox/api/operators", guarded(inbox, list_operators, admin=True)),
        web.post("/inbox/api/operators", guarded(inbox, add_operator, admin=True)),
        web.post("/inbox/api/operators/{name}", guarded(inbox, change_operator, admin=True)),
    ]


def _operator_json(operator: Operator) -> dict[str, Any]:
    return {
        "name": operator.name,
        "admin": operator.is_admin,
        "disabled": operator.disabled,
        "created_at": operator.created_at,
    }


async def _object_body(request: web.Request, allowed: set[str]) -> dict[str, Any] | web.Response:
    try:
        body = await json_body(request)
    except BodyRefused as exc:
        return error(400, "invalid_body", str(exc))
    if not isinstance(body, dict):
        return error(422, "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        return error(422, "invalid_body", f"unknown field {unknown[0]!r}: use {', '.join(sorted(allowed))}")
    return body


def _field_problem(body: dict[str, Any]) -> web.Response | None:
    for key in ("admin", "disabled"):
        if key in body and not isinstance(body[key], bool):
            return error(422, f"invalid_{key}", f"{key!r} must be true or false")
    if "password" in body:
        problem = password_problem(body["password"]) if isinstance(body["password"], str) else "must be a text"
        if problem is not None:
            return error(422, "invalid_password", problem)
    return None


async def _add_operator(inbox: Inbox, request: web.Request) -> web.Response:
    body = await _object_body(request, {"name", "password", "admin"})
    if isinstance(body, web.Response):
        return body
    name = body.get("name")
    problem = name_problem(name) if isinstance(name, str) else "'name' is required: the operator's sign-in name"
    if problem is not None or not isinstance(name, str):
        return error(422, "invalid_name", problem or "invalid name")
    if "password" not in body:
        return error(422, "invalid_password", "'password' is required")
    refused = _field_problem(body)
    if refused is not None:
        return refused
    password_hash = await passwords_of(inbox).hash_async(body["password"])
    now = inbox.hub.clock.time()
    operator = await store_of(inbox).add(name, password_hash, admin=bool(body.get("admin", False)), now=now)
    if operator is None:
        return error(409, "name_taken", f"an operator named {name} already exists")
    _LOGGER.info("inbox: %s added the operator %s", operator_of(request).name, name)
    return json_response({"operator": _operator_json(operator)}, status=201)


async def _change_operator(inbox: Inbox, request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = await _object_body(request, {"disabled", "admin", "password"})
    if isinstance(body, web.Response):
        return body
    refused = _field_problem(body)
    if refused is not None:
        return refused
    store = store_of(inbox)
    if await store.get(name) is None:
        return error(404, "not_found", f"no operator named {name}")
    me = operator_of(request)
    if name == me.name and (body.get("disabled") is True or body.get("admin") is False):
        change = "disable" if body.get("disabled") is True else "demote"
        return error(409, "self_change", f"an admin cannot {change} themselves: ask another admin")
    now = inbox.hub.clock.time()
    if "password" in body:
        await store.set_password(name, await passwords_of(inbox).hash_async(body["password"]), now=now)
    if "admin" in body:
        await store.set_admin(name, body["admin"], now=now)
    if "disabled" in body:
        await store.set_disabled(name, body["disabled"], now=now)
    _LOGGER.info("inbox: %s changed the operator %s (%s)", me.name, name, ", ".join(sorted(body)) or "nothing")
    changed = await store.get(name)
    assert changed is not None
    return json_response({"operator": _operator_json(changed)})
