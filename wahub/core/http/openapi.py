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

A plugin describes its own REST endpoints the same way: ``register_routes``
may return ``Operation`` objects beside plain route definitions, and those
are served through ``route_defs`` and listed in the document too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

from wahub.core.http.api_io import MAX_INT, error, json_body
from wahub.core.http.api_query import DEFAULT_PAGE, MAX_PAGE

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
    #: A value to show in the document (None: none).
    example: Any = None


@dataclass(frozen=True)
class Answer:
    """One documented response: what it means and the schema of its JSON body
    (None: no JSON body, as for a file)."""

    description: str
    schema: Schema | None = None
    content_type: str = "application/json"


@dataclass(frozen=True)
class Operation:
    """One REST endpoint: how it is routed, what it takes and every answer it gives."""

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
    #: False: a request may have no body at all (the handler then reads ``{}``).
    body_required: bool = True
    #: The handler checks the body itself, with messages that say more than a
    #: schema's would; ``body`` then only documents it.
    handler_checks_body: bool = False
    #: Served without a bearer token (the document and its page hold nothing secret).
    public: bool = False
    #: The document's ``operationId``; the handler's name when empty.
    operation_id: str = ""
    validator: Draft202012Validator | None = field(default=None, compare=False, repr=False)


def body_of(request: web.Request) -> Any:
    """The request's JSON body, as its operation validated it (``{}`` when an
    operation whose body is optional got none)."""
    return request[_BODY]


def _field(path: Sequence[Any]) -> str:
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def _validated(operation: Operation) -> Handler:
    schema = operation.body
    if schema is None or operation.handler_checks_body:
        return operation.handler
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    handler, code, required = operation.handler, operation.body_error, operation.body_required

    async def checked(request: web.Request) -> web.StreamResponse:
        body = await json_body(request) if required or request.body_exists else {}
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
    502: "The provider's API failed or refused the request (``provider_code`` has its code)",
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


#: Key of the app's operations: every described endpoint, the plugins' included.
OPERATIONS_KEY: web.AppKey[list[Operation]] = web.AppKey("wahub_operations", list[Operation])

#: The security scheme every operation but the public ones requires.
_BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "One of the tokens in wahub.api_tokens, as 'Authorization: Bearer <token>'",
}
_JSON = "application/json"


def document(
    operations: Sequence[Operation], *, version: str, shared: Mapping[str, Schema] | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1.0 document of ``operations``.

    ``shared`` names schemas to put once under ``components/schemas``: every
    place an operation uses one of these very objects becomes a ``$ref`` to it
    (the error envelope is always there, as ``Error``)."""
    named = {"Error": ERROR_SCHEMA, **(shared or {})}
    refs = {id(schema): f"#/components/schemas/{name}" for name, schema in named.items()}
    paths: dict[str, dict[str, Any]] = {}
    seen: dict[str, Operation] = {}
    for operation in operations:
        name = operation.operation_id or operation.handler.__name__
        if name in seen:
            raise ValueError(f"operationId {name!r} is used by {seen[name].path} and {operation.path}")
        seen[name] = operation
        paths.setdefault(operation.path, {})[operation.method.lower()] = _described(operation, name, refs)
    tags = list(dict.fromkeys(operation.tag for operation in operations))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wahub REST API",
            "version": version,
            "description": "Send WhatsApp messages, read conversations and contacts, and manage a wahub hub.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": _BEARER},
            "schemas": {name: _referenced(schema, refs, top=id(schema)) for name, schema in named.items()},
        },
    }


def _described(operation: Operation, name: str, refs: Mapping[int, str]) -> dict[str, Any]:
    described: dict[str, Any] = {
        "operationId": name,
        "summary": operation.summary,
        "tags": [operation.tag],
        "responses": {str(status): _answer(answer, refs) for status, answer in sorted(operation.responses.items())},
    }
    if operation.description:
        described["description"] = operation.description
    if operation.public:
        described["security"] = []
    parameters = [_parameter(param) for param in operation.params]
    named = {param.name for param in operation.params if param.where == "path"}
    for part in _path_parts(operation.path):
        if part not in named:
            parameters.append({"name": part, "in": "path", "required": True, "schema": {"type": "string"}})
    if parameters:
        described["parameters"] = parameters
    if operation.body is not None:
        content: dict[str, Any] = {"schema": _referenced(operation.body, refs)}
        if operation.body.get("examples"):  # shown as the body's example too, for tools that read only that
            content["example"] = operation.body["examples"][0]
        described["requestBody"] = {"required": operation.body_required, "content": {_JSON: content}}
    elif operation.other_body is not None:
        described["requestBody"] = {"required": True, "content": dict(operation.other_body)}
    return described


def _path_parts(path: str) -> list[str]:
    return [piece[1:-1].partition(":")[0] for piece in path.split("/") if piece.startswith("{")]


def _parameter(param: Param) -> dict[str, Any]:
    described = {
        "name": param.name,
        "in": param.where,
        "required": param.required or param.where == "path",
        "description": param.description,
        "schema": param.schema,
    }
    if param.example is not None:
        described["example"] = param.example
    return described


def _answer(answer: Answer, refs: Mapping[int, str]) -> dict[str, Any]:
    described: dict[str, Any] = {"description": answer.description}
    if answer.schema is not None:
        described["content"] = {answer.content_type: {"schema": _referenced(answer.schema, refs)}}
    elif answer.content_type != _JSON:
        described["content"] = {answer.content_type: {}}
    return described


def _referenced(schema: Any, refs: Mapping[int, str], top: int | None = None) -> Any:
    """``schema`` with every shared schema in it (but ``top`` itself) as a ``$ref``."""
    if id(schema) in refs and id(schema) != top:
        return {"$ref": refs[id(schema)]}
    if isinstance(schema, dict):
        return {key: _referenced(value, refs, top) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_referenced(value, refs, top) for value in schema]
    return schema


#: The page size and cursor of every listing (``api_query.page_limit`` and ``cursor``).
PAGE_LIMIT = Param(
    "limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE}, "Page size"
)
PAGE_AFTER = Param("after", {"type": "integer", "minimum": 1, "maximum": MAX_INT}, "The previous page's next")
