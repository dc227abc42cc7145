"""Reading the query string of the REST API's listings: page sizes, cursors,
times and filters.

Every reader answers a bad value with a 400 in the JSON error envelope whose
message names the parameter and what it takes, and whose ``parameter`` field
names it for programs. A parameter given twice, or one the endpoint does not
know, is refused the same way, so a misspelt filter never silently lists
everything.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection

from aiohttp import web

from wahub.core.http.api_io import MAX_INT, MAX_TIME, error_text, storable

#: Default and largest number of items on one page of a listing.
DEFAULT_PAGE, MAX_PAGE = 50, 200


def refuse(code: str, parameter: str, message: str) -> web.HTTPBadRequest:
    """A 400 naming the query ``parameter``, to raise."""
    return web.HTTPBadRequest(text=error_text(code, message, parameter=parameter), content_type="application/json")


def check_known(request: web.Request, allowed: Collection[str]) -> None:
    """Refuse query parameters the endpoint does not take."""
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown)
        raise refuse(
            "unknown_parameter",
            unknown[0][:40],
            f"unknown query parameter {names}: this endpoint takes {', '.join(sorted(allowed))}",
        )


def single(request: web.Request, name: str, code: str = "invalid_parameter") -> str | None:
    """The one value of query parameter ``name``, or None when it is absent."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise refuse(code, name, f"{name} is given {len(values)} times: give it once")
    return values[0] if values else None


def _whole(given: str | None, low: int, high: int) -> int | None:
    if given is None or not (given.isascii() and given.isdigit()) or len(given) > 19:
        return None
    value = int(given)
    return value if low <= value <= high else None


def page_limit(request: web.Request, *, default: int = DEFAULT_PAGE, high: int = MAX_PAGE) -> int:
    """``?limit=``: how many items a page holds, ``default`` when absent."""
    given = single(request, "limit", "invalid_limit")
    if given is None:
        return default
    value = _whole(given, 1, high)
    if value is None:
        raise refuse("invalid_limit", "limit", f"limit must be a whole number from 1 to {high}")
    return value


def cursor(request: web.Request, name: str) -> int | None:
    """``?after=`` or ``?before=``: the ``next`` of a previous page, None when absent."""
    given = single(request, name, "invalid_cursor")
    if given is None:
        return None
    value = _whole(given, 1, MAX_INT)
    if value is None:
        raise refuse(
            "invalid_cursor",
            name,
            f"{name} must be the 'next' of a previous page: a whole number from 1 to {MAX_INT}",
        )
    return value


def positive_id(request: web.Request, name: str) -> int | None:
    """A row id in the query (``?contact_id=``), None when absent."""
    given = single(request, name)
    if given is None:
        return None
    value = _whole(given, 1, MAX_INT)
    if value is None:
        raise refuse("invalid_parameter", name, f"{name} must be an id: a whole number from 1 to {MAX_INT}")
    return value


def point_in_time(request: web.Request, name: str) -> float | None:
    """A time in the query as unix seconds, written as unix seconds or in ISO 8601
    (a time without an offset is UTC); None when absent."""
    given = single(request, name)
    if given is None:
        return None
    value = _unix_seconds(given.strip())
    if value is None:
        raise refuse(
            "invalid_parameter",
            name,
            f"{name} must be unix seconds (e.g. 1764547200) or an ISO 8601 time (e.g. 2026-12-01T00:00:00Z) "
            "from 1970 to 9999",
        )
    return value


def _unix_seconds(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is None:
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
        number = (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
    return number if math.isfinite(number) and 0 <= number <= MAX_TIME else None


def choices(request: web.Request, name: str, allowed: Collection[str]) -> list[str]:
    """A filter of one or more of ``allowed``, comma-separated or repeated (``?owner=queued,assigned``);
    empty when absent."""
    chosen = [part.strip() for given in request.query.getall(name, []) for part in given.split(",")]
    wrong = [part for part in chosen if part not in allowed]
    if wrong:
        shown = repr(wrong[0][:40]) if wrong[0] else "an empty value"
        raise refuse(
            "invalid_parameter",
            name,
            f"{name} must be one or more of {', '.join(allowed)}, separated by commas; got {shown}",
        )
    return list(dict.fromkeys(chosen))


def search_text(request: web.Request, name: str, *, longest: int = 128) -> str | None:
    """Free text to search for, None when absent or blank."""
    given = single(request, name)
    if given is None or not given.strip():
        return None
    if len(given) > longest or not storable(given) or not given.isprintable():
        raise refuse("invalid_parameter", name, f"{name} must be 1 to {longest} printable characters")
    return given.strip()
