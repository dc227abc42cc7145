"""The REST API described once: each endpoint is an ``Operation`` whose JSON
Schemas both validate its requests and make the OpenAPI 3.1 document.

An HTTP module lists its endpoints as operations (``operations()``); the app
serves them through ``route_defs``, which checks a request's JSON body
against the operation's ``body`` schema (JSON Schema 2020-12, the dialect of
OpenAPI 3.1) before the handler runs and hands the handler the parsed body
(``body_of``). A body that does not match is a 422 whose code is the
operation's ``body_error`` and whose message names the field (``$.to[3]:
...``). ``document`` builds ``/api/v1/openapi.json`` from the same list, so
the description can never drift from what the server accepts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

from wahub.core.http.api_io import error, json_body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Schema = dict[str, Any]

#: The key under which a validated body waits for its handler.
_BODY: web.RequestKey[Any] = web.RequestKey("wahub_body", object)


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter."""

    name: str
    schema: Schema
    description: str
    where: Literal["path", "query", "header"] = "query"
    required: bool = False


@dataclass(frozen=True)
class Answer:
    """One documented response: what it means and the schema of its JSON body
    (None: no JSON body, as for a file)."""

    description: str
    schema: Schema | None = None
    content_type: str = "application/json"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    responses: Mapping[int, Answer]
    description: str = ""
    #: The JSON body's schema; None: the endpoint reads no JSON body.
    body: Schema | None = None
    #: The error code of a body that does not match ``body``.
    body_error: str = "invalid_request"
    params: Sequence[Param] = ()
    #: Another request body than JSON (an upload), documented as it is.
    other_body: Mapping[str, Any] | None = None
    validator: Draft202012Validator | None = field(default=None, compare=False, repr=False)


def body_of(request: web.Request) -> Any:
    """The request's JSON body, as its operation validated it."""
    return request[_BODY]


def _field(path: Sequence[Any]) -> str:
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def _validated(operation: Operation) -> Handler:
    schema = operation.body
    if schema is None:
        return operation.handler
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    handler, code = operation.handler, operation.body_error

    async def checked(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        problem = best_match(validator.iter_errors(body))
        if problem is not None:
            return error(
                422, code, f"{_field(problem.absolute_path)}: {problem.message}", field=_field(problem.absolute_path)
            )
        request[_BODY] = body
        return await handler(request)

    return checked


def route_defs(operations: Sequence[Operation]) -> list[web.RouteDef]:
    """The aiohttp routes of ``operations``, each checking its body first."""
    return [web.route(op.method.upper(), op.path, _validated(op)) for op in operations]


#: The one error envelope (``api_io.error``), as every error answer carries it.
ERROR_SCHEMA: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "additionalProperties": True,
        }
    },
}

_ERROR_MEANINGS = {
    400: "The body is not JSON, or a query parameter is wrong (the message names it)",
    401: "Missing or invalid bearer token",
    404: "No such resource",
    409: "This Idempotency-Key was used for another request",
    413: "The body is over the size limit",
    422: "The request is well-formed but refused: the code says why",
}


def errors(*statuses: int) -> dict[int, Answer]:
    """The documented error answers for ``statuses``, each in the envelope."""
    return {status: Answer(_ERROR_MEANINGS[status], ERROR_SCHEMA) for status in statuses}


#: The ``Idempotency-Key`` header of the endpoints that create something.
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 200},
    "Makes retries safe: the same key returns what the first request created, never a second one",
    where="header",
)
