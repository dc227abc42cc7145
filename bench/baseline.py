"""The raw aiohttp baseline: the least work a signed JSON webhook endpoint can do.

Run as its own process: ``python -m bench.baseline --port N`` with the shared secret in
``WAHUB_BENCH_SECRET``. It reads the body, checks the HMAC-SHA256 signature in constant
time, parses the JSON and answers 200, with the same status codes as wahub.

With ``WAHUB_BENCH_REPLY_TO`` (a ``providers:`` entry of the fake Graph API, as JSON) it
is also the least a bot can do: each message gets a text reply posted to the Graph API
at once, from one shared client session, with nothing stored and nothing paced.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from bench.payloads import SIGNATURE_HEADER

SECRET_KEY = web.AppKey("secret", bytes)


class Replier:
    """Posts a text reply to each message's sender, in the background."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.url = f"{entry['api_base']}/v23.0/{entry['phone_number_id']}/messages"
        self.headers = {"Authorization": f"Bearer {entry['access_token']}"}
        self.http: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def reply_to(self, body: Any) -> None:
        for entry in body.get("entry", []):
            for change in entry.get("changes", []):
                for message in change.get("value", {}).get("messages", []):
                    task = asyncio.get_running_loop().create_task(self._post(message["from"]))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)

    async def _post(self, to: str) -> None:
        assert self.http is not None
        body = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "Thanks!"}}
        async with self.http.post(self.url, json=body, headers=self.headers) as response:
            await response.read()

    async def context(self, app: web.Application) -> AsyncIterator[None]:
        self.http = aiohttp.ClientSession()
        yield
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.close()


REPLIER_KEY = web.AppKey("replier", Replier)


async def webhook(request: web.Request) -> web.Response:
    body = await request.read()
    expected = b"sha256=" + hmac.digest(request.app[SECRET_KEY], body, "sha256").hex().encode()
    given = request.headers.get(SIGNATURE_HEADER, "").encode("utf-8", "replace")
    if not hmac.compare_digest(expected, given):
        return web.json_response({"error": "bad signature"}, status=401)
    try:
        parsed = json.loads(body)
    except ValueError:
        return web.json_response({"error": "unparsable body"}, status=400)
    replier = request.app.get(REPLIER_KEY)
    if replier is not None:
        replier.reply_to(parsed)
    return web.json_response({"ok": True})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(secret: bytes, reply_to: dict[str, Any] | None = None) -> web.Application:
    app = web.Application()
    app[SECRET_KEY] = secret
    if reply_to is not None:
        app[REPLIER_KEY] = replier = Replier(reply_to)
        app.cleanup_ctx.append(replier.context)
    app.router.add_post("/webhooks/{provider_name}", webhook)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    secret = os.environ["WAHUB_BENCH_SECRET"].encode()
    reply_to = json.loads(os.environ["WAHUB_BENCH_REPLY_TO"]) if os.environ.get("WAHUB_BENCH_REPLY_TO") else None
    web.run_app(create_app(secret, reply_to), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
