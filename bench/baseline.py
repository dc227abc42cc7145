"""The raw aiohttp baseline: the least work a signed JSON webhook endpoint can do.

Run as its own process: ``python -m bench.baseline --port N`` with the shared secret in
``WAHUB_BENCH_SECRET``. It reads the body, checks the HMAC-SHA256 signature in constant
time, parses the JSON and answers 200, with the same status codes as wahub.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os

from aiohttp import web

from bench.payloads import SIGNATURE_HEADER

SECRET_KEY = web.AppKey("secret", bytes)


async def webhook(request: web.Request) -> web.Response:
    body = await request.read()
    expected = b"sha256=" + hmac.digest(request.app[SECRET_KEY], body, "sha256").hex().encode()
    given = request.headers.get(SIGNATURE_HEADER, "").encode("utf-8", "replace")
    if not hmac.compare_digest(expected, given):
        return web.json_response({"error": "bad signature"}, status=401)
    try:
        json.loads(body)
    except ValueError:
        return web.json_response({"error": "unparsable body"}, status=400)
    return web.json_response({"ok": True})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(secret: bytes) -> web.Application:
    app = web.Application()
    app[SECRET_KEY] = secret
    app.router.add_post("/webhooks/{provider_name}", webhook)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    secret = os.environ["WAHUB_BENCH_SECRET"].encode()
    web.run_app(create_app(secret), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
