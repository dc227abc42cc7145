"""What the endpoints of the fake Graph API (``fake_graph``) share: the request's
JSON, Graph and 360dialog error answers, new ids, and refusing a request body."""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web


class Endpoints:
    """A base of the fake's endpoint groups: the fields they share."""

    platform: str
    #: Every problem found in a refused request body, in order.
    schema_errors: list[str]

    def _refuse(self, problems: list[str]) -> web.Response:
        self.schema_errors.extend(problems)
        return graph_error(400, 100, "Invalid parameter", "; ".join(problems))


async def read_json(request: web.Request) -> Any:
    """The JSON body, or None; aiohttp keeps the bytes once read."""
    try:
        return json.loads(await request.read())
    except ValueError:
        return None


async def unsupported(request: web.Request) -> web.Response:
    message = f"Unsupported {request.method.lower()} request: {request.path} does not exist or is not faked"
    return graph_error(404, 100, message)


def graph_error(status: int, code: int, message: str, details: str | None = None) -> web.Response:
    error = {
        "message": f"(#{code}) {message}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details or message},
        "fbtrace_id": f"A{secrets.token_urlsafe(16)}",
    }
    return web.json_response({"error": error}, status=status)


def d360_error(status: int, message: str) -> web.Response:
    meta = {"httpCode": status, "developerMessage": message, "success": False}
    return web.json_response({"meta": meta}, status=status)


def numeric_id() -> str:
    return str(10**15 + secrets.randbelow(9 * 10**15))
