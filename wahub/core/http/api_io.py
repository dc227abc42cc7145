"""Reading requests and writing answers of the REST API, in one place.

Every body is read by ``json_body``: UTF-8 JSON with finite numbers that fit
in 64 bits, strings a database can store (no U+0000, no lone surrogates) and
at most ``MAX_DEPTH`` levels of nesting; anything else is a 400 naming the
problem. Every answer is written by ``json_response``, which refuses NaN and
infinities, so an answer is always valid JSON. Path parts are read by
``path_id`` (a row id) and ``path_text`` (an address or a file id).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from typing import Any

from aiohttp import web

from wahub.core.errors import BodyRefused
from wahub.core.inbound.webhook_json import text_problem

#: Deepest nesting of arrays and objects a body may have; messages need about 8.
MAX_DEPTH = 32
#: Largest integer a body or a path may carry: a signed 64-bit database column.
MAX_INT = 2**63 - 1
#: Longest address or id a path may name (the database's address column).
MAX_PATH_TEXT = 128
#: Longest ``Idempotency-Key`` a client may give.
MAX_IDEMPOTENCY_KEY = 200
#: Latest time a request may name: the end of year 9999, as far as ISO 8601 dates go.
MAX_TIME = 253402300799.0


def json_response(data: Any, *, status: int = 200) -> web.Response:
    """``data`` as a JSON answer; a non-finite number raises ``ValueError`` instead of writing NaN."""
    return web.Response(text=json.dumps(data, allow_nan=False), status=status, content_type="application/json")


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    """The one error envelope: ``{"error": {"code": ..., "message": ..., **details}}``."""
    return {"error": {"code": code, "message": message, **details}}


def error_text(code: str, message: str, **details: Any) -> str:
    """The error envelope as JSON text."""
    return json.dumps(error_body(code, message, **details), allow_nan=False)


def error(status: int, code: str, message: str, **details: Any) -> web.Response:
    """The error envelope as an answer; ``details`` add fields beside the code and message."""
    return json_response(error_body(code, message, **details), status=status)


def abort(status: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    """The same JSON error, as an exception to raise from a helper."""
    return status(text=error_text(code, message), content_type="application/json")


def parse_json(data: bytes) -> Any:
    """``data`` parsed under the rules above; ``BodyRefused`` says what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyRefused(f"the body is not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except RecursionError:
        raise BodyRefused(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    except BodyRefused:
        raise
    except ValueError as exc:
        raise BodyRefused(f"the body is not JSON: {exc}") from None
    _check_tree(value)
    return value


async def json_body(request: web.Request) -> Any:
    """The request's JSON body, or a 400 (413 when over the size limit) in the error envelope."""
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        message = error_text("body_too_large", f"the body is over {limit} bytes")
        raise web.HTTPRequestEntityTooLarge(
            limit, request.content_length or 0, text=message, content_type="application/json"
        ) from None
    try:
        return parse_json(data)
    except BodyRefused as exc:
        raise abort(web.HTTPBadRequest, "invalid_json", str(exc)) from None


def path_id(request: web.Request, name: str = "id", *, what: str = "row") -> int:
    """The positive 64-bit id in the path part ``name``, or a 404 naming ``what``."""
    given = request.match_info[name]
    if given.isascii() and given.isdigit() and len(given) <= 19 and 0 < int(given) <= MAX_INT:
        return int(given)
    raise abort(web.HTTPNotFound, "not_found", f"no {what} {given[:40]!r}: ids are whole numbers from 1 to {MAX_INT}")


def path_text(request: web.Request, name: str) -> str:
    """The path part ``name`` if it is printable text of at most ``MAX_PATH_TEXT`` characters, else a 404."""
    given = request.match_info[name]
    if 0 < len(given) <= MAX_PATH_TEXT and given.isprintable() and storable(given):
        return given
    raise abort(
        web.HTTPNotFound,
        "not_found",
        f"no {name} like that: a {name} is 1 to {MAX_PATH_TEXT} printable characters",
    )


def _refuse_constant(name: str) -> Any:
    raise BodyRefused(f"{name} is not a JSON number: numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BodyRefused(f"the number {text[:40]} is out of range: numbers must be finite")
    return value


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_INT:
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise BodyRefused(f"the integer {shown} is too large: integers must fit in 64 bits")
    return value


def storable(text: str) -> bool:
    """Whether a database can keep ``text``: no U+0000 and no lone surrogate."""
    return text_problem(text) is None


def _check_tree(value: Any) -> None:
    """Depth and strings of a parsed body, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if not storable(node):
                raise BodyRefused("strings may not contain U+0000 or unpaired surrogates (\\ud800 to \\udfff)")
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise BodyRefused(f"the body is nested deeper than {MAX_DEPTH} levels")
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children)


def idempotency_key(request: web.Request) -> str:
    """The stored key of the request's ``Idempotency-Key`` (a fresh one without
    it), or a 400 when the header is not 1 to ``MAX_IDEMPOTENCY_KEY`` printable characters."""
    given = request.headers.get("Idempotency-Key")
    if given is None:
        return f"api:{uuid.uuid4()}"
    if not 0 < len(given) <= MAX_IDEMPOTENCY_KEY or not given.isprintable():
        raise abort(
            web.HTTPBadRequest,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
        )
    return f"api:{given}"


def aware_time(text: str) -> float:
    """An ISO 8601 time WITH its offset (``2026-12-24T09:00:00+01:00``, ``...Z``)
    as unix seconds, from 1970 to 9999; ``ValueError`` saying what is wrong."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not an ISO 8601 time such as 2026-12-24T09:00:00+01:00") from None
    if when.tzinfo is None:
        raise ValueError(f"{text[:40]!r} has no offset: add one (+01:00, Z); a time alone is ambiguous")
    try:
        seconds = when.timestamp()
    except (OverflowError, ValueError):
        seconds = math.inf
    if not 0 <= seconds <= MAX_TIME:
        raise ValueError(f"{text[:40]!r} is outside the years 1970 to 9999")
    return seconds


def iso_time(instant: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC time (``2026-12-24T08:00:00Z``); None stays None."""
    if instant is None:
        return None
    return dt.datetime.fromtimestamp(instant, dt.UTC).isoformat().replace("+00:00", "Z")
