"""The REST API's own description: ``GET /api/v1/openapi.json`` (the OpenAPI
3.1 document of every operation the app serves, the plugins' included) and
``GET /api/v1/docs``, a page that renders it.

Both are served without a token: the document holds nothing secret, and a
client generator or a person reading the page has no token yet. Only these
two paths are public (``PUBLIC_PATHS``); the page's script and style come
from ``/api-docs/``, outside the API. The page loads nothing from another
host, and its headers forbid it to (``default-src 'self'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from wahub import __version__
from wahub.core.http.api_schemas import SHARED, obj
from wahub.core.http.openapi import Answer, Operation, document

WEB_DIR = Path(__file__).resolve().parents[2] / "web" / "api-docs"
DOCUMENT_PATH, PAGE_PATH = "/api/v1/openapi.json", "/api/v1/docs"
#: The only paths under /api/v1 served without a bearer token.
PUBLIC_PATHS = frozenset({DOCUMENT_PATH, PAGE_PATH})
#: The files ``/api-docs/{name}`` serves, with their types.
STATIC_FILES = {"api-docs.js": "text/javascript", "api-docs.css": "text/css"}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


#: The app's document, made once while the app is built (``described``).
DOCUMENT_KEY: web.AppKey[dict[str, Any]] = web.AppKey("wahub_openapi_document", dict)


def described(operations: Sequence[Operation]) -> dict[str, Any]:
    """The document of ``operations``, with the REST API's shared schemas named;
    ``ValueError`` when two operations share an ``operationId``."""
    return document(operations, version=__version__, shared=SHARED)


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT_KEY], headers={"X-Content-Type-Options": "nosniff"})


async def docs_page(request: web.Request) -> web.Response:
    text = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS)


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound(text="no such file")
    data = (WEB_DIR / name).read_bytes()
    return web.Response(body=data, content_type=STATIC_FILES[name], charset="utf-8", headers=SECURITY_HEADERS)


def operations() -> list[Operation]:
    return [
        Operation(
            "GET",
            DOCUMENT_PATH,
            openapi_document,
            "This document: the OpenAPI 3.1 description of the REST API",
            "documentation",
            {200: Answer("The OpenAPI document", obj(["openapi", "info", "paths"]))},
            description="Served without a token, for client generators.",
            public=True,
        ),
        Operation(
            "GET",
            PAGE_PATH,
            docs_page,
            "A readable page of this document",
            "documentation",
            {200: Answer("An HTML page that renders openapi.json", None, "text/html")},
            description="Served without a token; it loads only this daemon's own script and style.",
            public=True,
        ),
    ]


def static_routes() -> list[web.RouteDef]:
    """The page's script and style."""
    return [web.get("/api-docs/{name}", static_file)]
