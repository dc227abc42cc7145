"""The operator inbox page in a real headless Chromium.

The page talks to a stand-in for the inbox's server side defined here: a small
aiohttp app that renders the page with ``pages.inbox_page``, serves the
allowlisted static files and speaks docs/inbox.md (the JSON API and the live
socket). It exists only so this file can check what an operator sees in the
browser; the full-daemon browser tests drive the real server.
"""

from __future__ import annotations

import asyncio
import copy
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import chromium_page
from wahub.plugins.inbox.pages import STATIC_FILES, inbox_page

try:
    from playwright.async_api import Page, expect
except ImportError:  # the page fixture skips (or fails in CI) with the reason
    Page = Any  # type: ignore[misc,assignment]
else:
    expect.set_options(timeout=10_000)

Json = dict[str, Any]
CSRF = "csrf-token-for-alice"
SHOTS = Path("/tmp/inbox-shots")
HOSTILE = '<img src=x onerror="window.__pwned=1">'
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def tiny_png() -> bytes:
    """A 2x2 green PNG, made here so nothing is fetched."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\x25\xd3\x66" * 2 for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def media(media_id: str, mime_type: str) -> Json:
    return {"id": media_id, "url": f"/inbox/media/{media_id}", "mime_type": mime_type, "size": 2048}


class StandInInboxServer:
    """docs/inbox.md as the page sees it, over in-memory conversations.

    Every API call is kept in ``calls`` (method, path, query, JSON body, CSRF
    header); every socket in ``connections`` (its query). ``activity`` adds
    one frame to the feed and sends it to open pages; ``drop`` closes them.
    """

    def __init__(self) -> None:
        self.operator = {"name": "alice", "admin": True}
        self.operators = [
            {"name": "alice", "admin": True, "disabled": False},
            {"name": "bob", "admin": False, "disabled": False},
        ]
        self.conversations: dict[int, Json] = {}
        self.contacts: dict[int, Json] = {}
        self.timelines: dict[int, list[Json]] = {}
        self.composers: dict[int, Json] = {}
        self.calls: list[Json] = []
        self.connections: list[dict[str, str]] = []
        self.feed: list[Json] = []
        self.kept_after = 0  # the oldest cursor the feed still keeps
        self.cursor = 100
        self.accepting = True
        self.refusal: tuple[int, str, str] | None = None  # how the socket is refused, as the daemon does
        self.answering = asyncio.Event()  # cleared: upgrades wait for an answer (a proxy holding them)
        self.answering.set()
        self.refuse_next_send: Json | None = None
        self.page_size = 50
        self.url = ""
        self._sockets: set[web.WebSocketResponse] = set()
        self._changed = asyncio.Event()
        self._next_id = 1000

    # ---- test helpers ------------------------------------------------------

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_conversation(
        self,
        conversation_id: int,
        name: str,
        *,
        owner: str = "queued",
        assignee: str | None = None,
        timeline: list[Json] | None = None,
        window_hours: float = 5.5,
        queued_minutes: float = 3.0,
        unread: int = 0,
        tags: list[str] | None = None,
    ) -> Json:
        now = time.time()
        contact = {
            "id": conversation_id + 500,
            "name": name,
            "address": f"4477009{conversation_id:05d}",
            "phone": f"+4477009{conversation_id:05d}",
            "bsuid": f"US.{conversation_id}abc",
            "language": "en",
            "language_source": "detected",
            "tags": tags or [],
            "consent": {
                "state": "opted_in",
                "ledger": [{"action": "opt_in", "scope": "all", "source": "keyword", "at": now - 86400}],
            },
        }
        self.contacts[contact["id"]] = contact
        entries = timeline or [self.message(conversation_id, "in", "text", {"body": f"Hello from {name}"})]
        self.timelines[conversation_id] = entries
        window = {"open": window_hours > 0, "closes_at": now + window_hours * 3600 if window_hours > 0 else now - 60}
        item = {
            "id": conversation_id,
            "section": "queued",
            "owner": owner,
            "assignee": assignee,
            "contact": {key: contact[key] for key in ("id", "name", "address", "language", "tags")},
            "last": None,
            "unread": unread,
            "queued_at": now - queued_minutes * 60 if owner == "queued" else None,
            "updated_at": now - queued_minutes * 60,
            "window": window,
        }
        self.conversations[conversation_id] = item
        self._refresh(conversation_id)
        self.composers[conversation_id] = {
            "can_reply": owner == "assigned" and assignee == "alice" and window["open"],
            "why_not": None,
            "window": window,
            "templates": [],
            "canned_replies": [{"title": "Thanks", "text": "Thank you for your patience!"}],
        }
        return item

    def message(self, conversation_id: int, direction: str, kind: str, body: Json, **fields: Any) -> Json:
        entry_id = self.next_id()
        message: Json = {"type": kind, kind: body} if kind != "contacts" else {"type": kind, "contacts": body}
        entry: Json = {
            "kind": "message",
            "id": entry_id,
            "direction": direction,
            "type": kind,
            "message": message,
            "status": "received" if direction == "in" else "queued",
            "statuses": [],
            "origin": None if direction == "in" else "reply",
            "error": None,
            "reply_to": None,
            "at": time.time() - 600 + entry_id % 100,
            "provider_message_id": f"wamid.{entry_id}",
        }
        entry.update(fields)
        return entry

    def event(self, change: str, actor: str, reason: str, assignee: str | None = None) -> Json:
        return {
            "kind": "event",
            "id": self.next_id(),
            "change": change,
            "from": "bot",
            "to": change,
            "actor": actor,
            "reason": reason,
            "assignee": assignee,
            "at": time.time(),
        }

    def section_of(self, item: Json) -> str:
        if item["owner"] == "queued":
            return "queued"
        if item["owner"] == "assigned" and item["assignee"] == self.operator["name"]:
            return "mine"
        if item["owner"] in ("assigned", "phone"):
            return "open"
        return "resolved"

    def _refresh(self, conversation_id: int) -> Json:
        item = self.conversations[conversation_id]
        item["section"] = self.section_of(item)
        messages = [entry for entry in self.timelines[conversation_id] if entry["kind"] == "message"]
        if messages:
            last = messages[-1]
            part = last["message"].get(last["type"], {})
            preview = part.get("body") or part.get("caption") or f"[{last['type']}]" if isinstance(part, dict) else ""
            item["last"] = {
                "id": last["id"],
                "direction": last["direction"],
                "type": last["type"],
                "preview": preview,
                "status": last["status"],
                "at": last["at"],
            }
        contact = self.contacts[item["contact"]["id"]]
        item["contact"] = {key: contact[key] for key in ("id", "name", "address", "language", "tags")}
        return item

    async def activity(self, kind: str, conversation_id: int, entry: Json | None) -> int:
        """Record ``entry`` (if new) and send one activity frame about it."""
        if entry is not None and entry["kind"] in ("message", "note", "event"):
            timeline = self.timelines[conversation_id]
            for index, existing in enumerate(timeline):
                if existing["kind"] == entry["kind"] and existing["id"] == entry["id"]:
                    timeline[index] = entry
                    break
            else:
                timeline.append(entry)
        self.cursor += 1
        event = {
            "id": f"a{self.cursor}",
            "kind": kind,
            "conversation": copy.deepcopy(self._refresh(conversation_id)),
            "entry": entry,
        }
        frame = {"type": "activity", "cursor": self.cursor, "events": [event]}
        self.feed.append(frame)
        for socket in list(self._sockets):
            await socket.send_json(frame)
        return self.cursor

    async def send(self, frame: Json) -> None:
        for socket in list(self._sockets):
            await socket.send_json(frame)

    async def drop(self) -> None:
        for socket in list(self._sockets):
            await socket.close()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not predicate():
                await self._changed.wait()
                self._changed.clear()

    async def wait_for_call(self, method: str, path: str) -> Json:
        def found() -> bool:
            return any(call["method"] == method and call["path"] == path for call in self.calls)

        await self.wait_for(found)
        return next(call for call in self.calls if call["method"] == method and call["path"] == path)

    def calls_to(self, method: str, path: str) -> list[Json]:
        return [call for call in self.calls if call["method"] == method and call["path"] == path]

    # ---- the app -----------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/inbox", self._page)
        app.router.add_get("/inbox/login", self._login)
        app.router.add_get("/inbox/static/{name}", self._static)
        app.router.add_get("/inbox/media/{id}", self._media)
        app.router.add_get("/inbox/ws", self._socket)
        api = "/inbox/api"
        app.router.add_get(f"{api}/me", self._me)
        app.router.add_get(f"{api}/conversations", self._list)
        app.router.add_get(f"{api}/conversations/{{id}}", self._conversation)
        app.router.add_post(f"{api}/conversations/{{id}}/{{action:take|assign|release|resolve}}", self._owner)
        app.router.add_post(f"{api}/conversations/{{id}}/messages", self._send)
        app.router.add_post(f"{api}/conversations/{{id}}/notes", self._note)
        app.router.add_post(f"{api}/conversations/{{id}}/read", self._read)
        app.router.add_patch(f"{api}/contacts/{{id}}", self._patch_contact)
        app.router.add_post(f"{api}/media", self._upload)
        app.router.add_get(f"{api}/operators", self._list_operators)
        app.router.add_post(f"{api}/operators", self._add_operator)
        app.router.add_post(f"{api}/operators/{{name}}", self._change_operator)
        app.on_shutdown.append(lambda _app: self.drop())
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/inbox/api/"):
            body: Any = None
            if request.content_type == "application/json":
                body = await request.json()
            self.calls.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": dict(request.query),
                    "json": body,
                    "csrf": request.headers.get("X-CSRF-Token"),
                }
            )
            self._changed.set()
            if request.method != "GET" and request.headers.get("X-CSRF-Token") != CSRF:
                return error(403, "csrf", "The request lacks the session's CSRF token.")
        response: web.StreamResponse = await handler(request)
        return response

    async def _page(self, request: web.Request) -> web.Response:
        text = inbox_page(self.operator["name"], bool(self.operator["admin"]), CSRF)
        headers = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:"}
        return web.Response(text=text, content_type="text/html", headers=headers)

    async def _login(self, request: web.Request) -> web.Response:
        return web.Response(
            text='<!doctype html><title>Sign in</title><link rel="icon" href="data:,"><h1>Sign in</h1>',
            content_type="text/html",
        )

    async def _static(self, request: web.Request) -> web.StreamResponse:
        path = STATIC_FILES.get(request.match_info["name"])
        if path is None or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def _media(self, request: web.Request) -> web.Response:
        return web.Response(body=tiny_png(), content_type="image/png")

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting:
            return web.Response(status=503, text="restarting")
        if self.refusal is not None:
            return error(*self.refusal)
        await self.answering.wait()
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.connections.append(dict(request.query))
        self._sockets.add(socket)
        self._changed.set()
        try:
            await socket.send_json({"type": "hello", "cursor": self.cursor})
            if "after" in request.query:
                after = int(request.query["after"])
                if after < self.kept_after:
                    await socket.send_json({"type": "reset"})
                else:
                    for frame in self.feed:
                        if frame["cursor"] > after:
                            await socket.send_json(frame)
            async for message in socket:
                if message.type is WSMsgType.ERROR:
                    break
        finally:
            self._sockets.discard(socket)
            self._changed.set()
        return socket

    async def _me(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "operator": self.operator,
                "operators": [operator["name"] for operator in self.operators if not operator["disabled"]],
                "canned_replies": [{"title": "Hours", "text": "We are open 9 to 5."}],
                "languages": ["en", "ru", "es"],
            }
        )

    async def _list(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "").casefold()
        sections: dict[str, list[Json]] = {"queued": [], "mine": [], "open": [], "resolved": []}
        for conversation_id in self.conversations:
            item = self._refresh(conversation_id)
            texts = [str(item["contact"]["name"]), str(item["contact"]["address"])]
            texts += [
                str(entry.get("message", {}).get("text", {}).get("body", "")) for entry in self.timelines[item["id"]]
            ]
            if query and not any(query in text.casefold() for text in texts):
                continue
            sections[item["section"]].append(item)
        return web.json_response({"sections": sections})

    def _conversation_id(self, request: web.Request) -> int:
        conversation_id = int(request.match_info["id"])
        if conversation_id not in self.conversations:
            raise web.HTTPNotFound()
        return conversation_id

    async def _conversation(self, request: web.Request) -> web.Response:
        conversation_id = self._conversation_id(request)
        timeline = self.timelines[conversation_id]
        end = len(timeline)
        if "before" in request.query:
            end = int(request.query["before"])
        start = max(0, end - self.page_size)
        item = self._refresh(conversation_id)
        contact = self.contacts[item["contact"]["id"]]
        return web.json_response(
            {
                "conversation": item,
                "contact": contact,
                "timeline": timeline[start:end],
                "next": start if start > 0 else None,
                "composer": self.composers[conversation_id],
            }
        )

    async def _owner(self, request: web.Request) -> web.Response:
        conversation_id = self._conversation_id(request)
        action = request.match_info["action"]
        item = self.conversations[conversation_id]
        me = self.operator["name"]
        if action == "take":
            if item["owner"] == "assigned":
                return error(409, "owner_conflict", f"{item['assignee']} has this conversation.")
            item.update(owner="assigned", assignee=me)
            entry = self.event("assigned", f"operator:{me}", f"taken by {me}", me)
        elif action == "assign":
            target = (await request.json())["operator"]
            item.update(owner="assigned", assignee=target)
            entry = self.event("assigned", f"operator:{me}", f"assigned to {target}", target)
        elif action == "release":
            item.update(owner="queued", assignee=None, queued_at=time.time())
            entry = self.event("released", f"operator:{me}", "released")
        else:
            item.update(owner="bot", assignee=None)
            entry = self.event("resolved", f"operator:{me}", "resolved")
        self.composers[conversation_id]["can_reply"] = item["owner"] == "assigned" and item["assignee"] == me
        await self.activity("owner", conversation_id, entry)
        return web.json_response({"conversation": self._refresh(conversation_id)})

    async def _send(self, request: web.Request) -> web.Response:
        conversation_id = self._conversation_id(request)
        body = await request.json()
        if self.refuse_next_send is not None:
            refusal, self.refuse_next_send = self.refuse_next_send, None
            return error(422, refusal["code"], refusal["message"])
        if "template" in body:
            template = body["template"]
            part = {"name": template["name"], "language": {"code": template["language"]}}
            part["components"] = [
                {"type": "body", "parameters": [{"type": "text", "text": value} for value in template["parameters"]]}
            ]
            entry = self.message(conversation_id, "out", "template", part)
        elif "media" in body:
            entry = self.message(
                conversation_id,
                "out",
                "document",
                {"id": body["media"], "caption": body.get("caption", ""), "filename": "notes.txt"},
            )
        else:
            entry = self.message(conversation_id, "out", "text", {"body": body["text"]}, reply_to=body.get("reply_to"))
        entry["at"] = time.time()
        await self.activity("message", conversation_id, entry)
        return web.json_response(entry, status=202)

    async def _note(self, request: web.Request) -> web.Response:
        conversation_id = self._conversation_id(request)
        body = await request.json()
        entry = {
            "kind": "note",
            "id": self.next_id(),
            "author": self.operator["name"],
            "text": body["text"],
            "at": time.time(),
        }
        await self.activity("note", conversation_id, entry)
        return web.json_response(entry, status=201)

    async def _read(self, request: web.Request) -> web.Response:
        conversation_id = self._conversation_id(request)
        self.conversations[conversation_id]["unread"] = 0
        return web.json_response({})

    async def _patch_contact(self, request: web.Request) -> web.Response:
        contact = self.contacts[int(request.match_info["id"])]
        contact.update(await request.json())
        return web.json_response({"contact": contact})

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField)
        return web.json_response(
            {"id": "wahub:up1", "mime_type": upload.content_type, "filename": upload.filename}, status=201
        )

    async def _list_operators(self, request: web.Request) -> web.Response:
        return web.json_response({"operators": self.operators})

    async def _add_operator(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.operators.append({"name": body["name"], "admin": body["admin"], "disabled": False})
        return web.json_response({"operator": self.operators[-1]}, status=201)

    async def _change_operator(self, request: web.Request) -> web.Response:
        body = await request.json()
        for operator in self.operators:
            if operator["name"] == request.match_info["name"]:
                operator.update(body)
        return web.json_response({})


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


# The API's refusals the page shows (a 409 taken, a 422 refused send, a 401 signed
# out, a refused socket's reason asked over HTTP) are logged by Chromium itself; any other console error is a page bug.
EXPECTED_ANSWER = re.compile(
    r"^Failed to load resource: the server responded with a status of (400|401|403|409|422|503)\b"
    r"|^WebSocket connection to '\S+/inbox/ws[^']*' failed: Error during WebSocket handshake: "
    r"Unexpected response code: (401|403|503)$"
)


@pytest.fixture
async def page() -> AsyncIterator[object]:
    """The conftest's headless Chromium page, but the API's expected refusals are not page errors."""
    async with chromium_page(lambda error: EXPECTED_ANSWER.match(error) is not None) as new_page:
        yield new_page


@pytest.fixture
async def stand_in(aiohttp_server: AiohttpServer) -> StandInInboxServer:
    """A stand-in for the inbox's routes, for this page test only."""
    server_side = StandInInboxServer()
    server = await aiohttp_server(server_side.app())
    server_side.url = str(server.make_url("/inbox"))
    return server_side


async def open_inbox(page: Page, stand_in: StandInInboxServer) -> None:
    await page.goto(stand_in.url)
    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
    await expect(page.locator("#sections section")).to_have_count(4)


def row(page: Page, conversation_id: int) -> Any:
    return page.locator(f'li.conv[data-id="{conversation_id}"]')


def entry(page: Page, kind: str, entry_id: int) -> Any:
    return page.locator(f'#timeline li.entry[data-kind="{kind}"][data-id="{entry_id}"]')


async def shoot(page: Page, name: str) -> None:
    # Playwright makes the directory.
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


async def test_list_shows_sections_waiting_time_window_and_unread(stand_in: StandInInboxServer, page: Page) -> None:
    stand_in.add_conversation(1, "Ana", queued_minutes=3, unread=2)
    stand_in.add_conversation(2, "Ben", queued_minutes=12)
    stand_in.add_conversation(3, "Cleo", owner="assigned", assignee="alice", window_hours=0)
    stand_in.add_conversation(4, "Dan", owner="assigned", assignee="bob")
    stand_in.add_conversation(5, "Eve", owner="bot")
    await open_inbox(page, stand_in)

    queued = page.locator('section[data-section="queued"] li.conv')
    # Oldest waiting first.
    await expect(queued.locator(".conv__name")).to_have_text(["Ben", "Ana"])
    await expect(row(page, 1).locator(".conv__waiting")).to_have_text("waiting 3 min")
    await expect(row(page, 1).locator(".conv__badge")).to_have_text("2")
    await expect(row(page, 1).locator(".conv__window")).to_have_text("window 5 h")
    await expect(row(page, 1).locator(".conv__preview")).to_have_text("Hello from Ana")
    await expect(row(page, 3)).to_have_attribute("data-section", "mine")
    await expect(row(page, 3).locator(".conv__window")).to_have_text("window closed")
    await expect(row(page, 3).locator(".conv__owner")).to_have_text("you")
    await expect(row(page, 4)).to_have_attribute("data-section", "open")
    await expect(row(page, 4).locator(".conv__owner")).to_have_text("bob")
    await expect(row(page, 5)).to_have_attribute("data-section", "resolved")
    await shoot(page, "list")

    await page.get_by_label("Search conversations").fill("cle")
    await stand_in.wait_for(lambda: any(call["query"].get("q") == "cle" for call in stand_in.calls))
    await expect(page.locator("li.conv")).to_have_count(1)
    await expect(row(page, 3)).to_be_visible()
    assert all(call["csrf"] == CSRF for call in stand_in.calls)


def every_kind_of_entry(stand_in: StandInInboxServer, conversation_id: int) -> dict[str, Json]:
    """One timeline entry of each kind the page shows, by a short name."""
    m = stand_in.message
    c = conversation_id
    entries: dict[str, Json] = {}
    entries["queued"] = stand_in.event("queued", "rule", "asked for a person")
    entries["text"] = m(c, "in", "text", {"body": "I need *help* with _my_ order"})
    entries["image"] = m(c, "in", "image", {"caption": "My receipt", "wahub_media": media("img1", "image/png")})
    entries["document"] = m(
        c, "in", "document", {"filename": "invoice.pdf", "wahub_media": media("doc1", "application/pdf")}
    )
    entries["audio"] = m(c, "in", "audio", {"voice": True, "wahub_media": media("aud1", "audio/ogg")})
    entries["video"] = m(c, "in", "video", {"caption": "Unboxing", "wahub_media": media("vid1", "video/mp4")})
    entries["sticker"] = m(c, "in", "sticker", {"wahub_media": media("stk1", "image/webp")})
    entries["lost"] = m(c, "in", "image", {"wahub_media": {"error": "image is over the limit of 5242880 bytes"}})
    entries["location"] = m(
        c, "in", "location", {"latitude": 51.5, "longitude": -0.12, "name": "Shop", "address": "1 High St"}
    )
    entries["contacts"] = m(
        c, "in", "contacts", [{"name": {"formatted_name": "Carol Smith"}, "phones": [{"phone": "+44 7700 900111"}]}]
    )
    entries["taken"] = stand_in.event("assigned", "operator:alice", "taken", "alice")
    entries["button_reply"] = m(
        c, "in", "interactive", {"type": "button_reply", "button_reply": {"id": "y", "title": "Yes please"}}
    )
    entries["list_reply"] = m(
        c,
        "in",
        "interactive",
        {"type": "list_reply", "list_reply": {"id": "r2", "title": "Tuesday", "description": "10:00"}},
    )
    entries["buttons"] = m(
        c,
        "out",
        "interactive",
        {
            "type": "button",
            "body": {"text": "Shall we refund?"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "Refund"}}]},
        },
        status="read",
    )
    entries["list"] = m(
        c,
        "out",
        "interactive",
        {
            "type": "list",
            "body": {"text": "Pick a day"},
            "action": {"button": "Days", "sections": [{"title": "Week", "rows": [{"id": "r1", "title": "Monday"}]}]},
        },
        status="delivered",
    )
    entries["template"] = m(
        c,
        "out",
        "template",
        {
            "name": "order_update",
            "language": {"code": "en"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "A-1234"}]}],
        },
        status="sent",
    )
    entries["quick_reply"] = m(c, "in", "button", {"text": "Stop promotions", "payload": "stop"})
    entries["reply"] = m(c, "out", "text", {"body": "We are on it"}, status="queued")
    entries["reaction"] = m(c, "in", "reaction", {"message_id": entries["reply"]["provider_message_id"], "emoji": "👍"})
    entries["edited"] = m(c, "in", "text", {"body": "Order 12"})
    entries["edit"] = m(
        c,
        "in",
        "edit",
        {
            "original_message_id": entries["edited"]["provider_message_id"],
            "message": {"type": "text", "text": {"body": "Order 13"}},
        },
    )
    entries["revoked"] = m(c, "in", "text", {"body": "oops wrong chat"})
    entries["revoke"] = m(c, "in", "revoke", {"original_message_id": entries["revoked"]["provider_message_id"]})
    entries["unsupported"] = m(c, "in", "unsupported", {})
    entries["failed"] = m(
        c,
        "out",
        "text",
        {"body": "Are you there?"},
        status="failed",
        error={"code": "131047", "message": "Re-engagement message"},
    )
    entries["refused"] = m(
        c,
        "out",
        "text",
        {"body": "Big sale!"},
        status="refused",
        error={"code": "opted_out", "message": "The contact opted out of marketing"},
    )
    entries["note"] = {
        "kind": "note",
        "id": stand_in.next_id(),
        "author": "bob",
        "text": "VIP customer",
        "at": time.time(),
    }
    return entries


async def test_every_message_type_renders(stand_in: StandInInboxServer, page: Page) -> None:
    entries = every_kind_of_entry(stand_in, 7)
    stand_in.add_conversation(7, "Grace", owner="assigned", assignee="alice", timeline=list(entries.values()))
    await open_inbox(page, stand_in)
    await row(page, 7).get_by_role("button").click()
    timeline = page.locator("#timeline")

    def message(name: str) -> Any:
        return entry(page, entries[name]["kind"], entries[name]["id"])

    await expect(message("queued")).to_have_text(re.compile(r"^Queued by rule: asked for a person"))
    await expect(message("taken")).to_have_text(re.compile(r"^Taken by alice"))
    await expect(message("text").locator(".msg__text strong")).to_have_text("help")
    await expect(message("text").locator(".msg__text em")).to_have_text("my")
    image = message("image").locator("img.media__image")
    await expect(image).to_have_attribute("src", "/inbox/media/img1")
    await image.scroll_into_view_if_needed()  # thumbnails load lazily
    await expect(image).to_have_js_property("naturalWidth", 2)
    await expect(message("image")).to_contain_text("My receipt")
    document = message("document").locator("a.media__document")
    await expect(document).to_have_attribute("href", "/inbox/media/doc1")
    await expect(document).to_contain_text("invoice.pdf")
    await expect(message("audio").locator("audio")).to_have_attribute("src", "/inbox/media/aud1")
    await expect(message("video").locator("video")).to_have_attribute("src", "/inbox/media/vid1")
    await expect(message("video")).to_contain_text("Unboxing")
    await expect(message("sticker").locator("img.media__sticker")).to_be_visible()
    await expect(message("lost")).to_contain_text("image not kept: image is over the limit of 5242880 bytes")
    location = message("location")
    await expect(location).to_contain_text("Shop")
    await expect(location).to_contain_text("1 High St")
    await expect(location.get_by_role("link")).to_have_attribute("href", "geo:51.5,-0.12")
    await expect(message("contacts")).to_contain_text("Carol Smith")
    await expect(message("contacts")).to_contain_text("+44 7700 900111")
    await expect(message("button_reply")).to_contain_text("Tapped button")
    await expect(message("button_reply")).to_contain_text("Yes please")
    await expect(message("list_reply")).to_contain_text("Chose from list")
    await expect(message("list_reply")).to_contain_text("Tuesday")
    await expect(message("buttons")).to_contain_text("Shall we refund?")
    await expect(message("buttons").locator(".interactive__button")).to_have_text("Refund")
    await expect(message("list")).to_contain_text("Pick a day")
    await expect(message("list")).to_contain_text("Monday")
    await expect(message("template")).to_contain_text("Template order_update (en)")
    await expect(message("template").locator(".template__params li")).to_have_text(["A-1234"])
    await expect(message("quick_reply")).to_contain_text("Stop promotions")
    await expect(message("reply").locator(".msg__reactions")).to_have_text("👍")
    await expect(message("reaction")).to_be_hidden()
    await expect(message("edited")).to_contain_text("Order 13")
    await expect(message("edited").locator(".msg__flags")).to_have_text("edited")
    await expect(message("edit")).to_be_hidden()
    await expect(message("revoked")).to_contain_text("This message was deleted")
    await expect(message("revoked")).not_to_contain_text("oops wrong chat")
    await expect(message("revoked").locator(".msg__flags")).to_have_text("deleted")
    await expect(message("unsupported")).to_contain_text("Unsupported message: unsupported")
    await expect(message("failed").locator(".msg__error")).to_have_text("Failed: 131047 — Re-engagement message")
    await expect(message("failed").locator(".msg__tick")).to_have_attribute("aria-label", "failed")
    await expect(message("refused").locator(".msg__error")).to_have_text(
        "Not sent: opted_out — The contact opted out of marketing"
    )
    note = message("note")
    await expect(note).to_contain_text("Note by bob · never sent")
    await expect(note).to_contain_text("VIP customer")
    ticks = [("buttons", "read"), ("list", "delivered"), ("template", "sent"), ("reply", "queued")]
    for name, status in ticks:
        await expect(message(name).locator(".msg__tick")).to_have_attribute("aria-label", status)
    await expect(timeline.locator("li.entry:visible")).to_have_count(
        len(entries) - 3
    )  # reaction, edit, revoke: on their messages
    await page.locator("#timeline-scroll").evaluate("element => element.scrollTop = 0")
    await shoot(page, "conversation-top")
    await message("reply").scroll_into_view_if_needed()
    await shoot(page, "conversation")


async def test_hostile_values_render_as_text(stand_in: StandInInboxServer, page: Page) -> None:
    m = stand_in.message
    timeline = [
        m(8, "in", "text", {"body": HOSTILE}),
        m(8, "in", "image", {"caption": HOSTILE, "wahub_media": media("img2", "image/png")}),
        m(8, "in", "document", {"filename": HOSTILE, "wahub_media": media("doc2", "application/pdf")}),
        m(8, "in", "location", {"latitude": 1, "longitude": 2, "name": HOSTILE}),
        m(8, "in", "interactive", {"type": "button_reply", "button_reply": {"id": "x", "title": HOSTILE}}),
        m(
            8,
            "out",
            "template",
            {"name": HOSTILE, "components": [{"type": "body", "parameters": [{"type": "text", "text": HOSTILE}]}]},
        ),
        {"kind": "note", "id": stand_in.next_id(), "author": HOSTILE, "text": HOSTILE, "at": time.time()},
        stand_in.event("queued", "rule", HOSTILE),
    ]
    stand_in.add_conversation(8, HOSTILE, owner="assigned", assignee="alice", timeline=timeline, tags=[HOSTILE])
    stand_in.composers[8].update(
        can_reply=False,
        why_not=HOSTILE,
        window={"open": False, "closes_at": time.time() - 60},
        templates=[{"name": HOSTILE, "language": "en", "category": "UTILITY", "text": "Hi {{1}}", "parameters": ["1"]}],
    )
    await open_inbox(page, stand_in)
    await expect(row(page, 8).locator(".conv__name")).to_have_text(HOSTILE)
    await row(page, 8).get_by_role("button").click()
    await expect(page.locator("#conv-name")).to_have_text(HOSTILE)
    await expect(page.locator("#timeline li.entry")).to_have_count(len(timeline))
    await expect(page.locator("#timeline .msg__text").first).to_have_text(HOSTILE)
    await expect(page.locator("#contact-tags")).to_contain_text(HOSTILE)
    await expect(page.locator("#why-not")).to_have_text(HOSTILE)
    await page.get_by_label("{{1}}").fill(HOSTILE)
    await expect(page.locator("#template-preview")).to_have_text(f"Hi {HOSTILE}")
    await stand_in.activity(
        "note", 8, {"kind": "note", "id": stand_in.next_id(), "author": "bob", "text": HOSTILE, "at": time.time()}
    )
    await expect(page.locator("#timeline li.note")).to_have_count(2)
    # Only the one real thumbnail is an image; nothing ran.
    await expect(page.locator("img")).to_have_count(1)
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator('img[src="x"]').count() == 0


async def test_ticks_move_when_status_frames_arrive(stand_in: StandInInboxServer, page: Page) -> None:
    sent = stand_in.message(9, "out", "text", {"body": "Your order shipped"}, status="queued")
    stand_in.add_conversation(9, "Hugo", owner="assigned", assignee="alice", timeline=[sent])
    await open_inbox(page, stand_in)
    await row(page, 9).get_by_role("button").click()
    tick = entry(page, "message", sent["id"]).locator(".msg__tick")
    await expect(tick).to_have_attribute("aria-label", "queued")
    for status in ("sent", "delivered", "read"):
        await stand_in.activity("status", 9, {**sent, "status": status})
        await expect(tick).to_have_attribute("aria-label", status)
    # A late "delivered" never moves a read message back.
    await stand_in.activity("status", 9, {**sent, "status": "delivered"})
    marker = stand_in.message(9, "in", "text", {"body": "thanks"})
    await stand_in.activity("message", 9, marker)
    await expect(entry(page, "message", marker["id"])).to_be_visible()
    await expect(tick).to_have_attribute("aria-label", "read")
    await expect(page.locator("#timeline li.msg")).to_have_count(2)

    failing = stand_in.message(9, "out", "text", {"body": "Second try"}, status="sent")
    await stand_in.activity("message", 9, failing)
    failure = {"code": "131026", "message": "Message undeliverable"}
    await stand_in.activity("status", 9, {**failing, "status": "failed", "error": failure})
    failed = entry(page, "message", failing["id"])
    await expect(failed.locator(".msg__tick")).to_have_attribute("aria-label", "failed")
    await expect(failed.locator(".msg__error")).to_have_text("Failed: 131026 — Message undeliverable")
    await shoot(page, "ticks")


async def test_closed_window_offers_templates_with_a_live_preview(stand_in: StandInInboxServer, page: Page) -> None:
    stand_in.add_conversation(10, "Ines", owner="assigned", assignee="alice", window_hours=0)
    stand_in.composers[10].update(
        can_reply=False,
        why_not="The 24 h window closed 2 h ago: send a template to reopen it.",
        templates=[
            {"name": "greeting", "language": "en", "category": "MARKETING", "text": "Hello!", "parameters": []},
            {
                "name": "order_ready",
                "language": "en",
                "category": "UTILITY",
                "text": "Hi {{1}}, your order *{{2}}* is ready.",
                "parameters": ["1", "2"],
            },
        ],
    )
    await open_inbox(page, stand_in)
    await row(page, 10).get_by_role("button").click()
    await expect(page.locator("#why-not")).to_have_text("The 24 h window closed 2 h ago: send a template to reopen it.")
    await expect(page.get_by_label("Message", exact=True)).to_be_hidden()
    await page.get_by_label("Template").select_option(label="order_ready (en, UTILITY)")
    preview = page.locator("#template-preview")
    await expect(preview).to_have_text("Hi {{1}}, your order {{2}} is ready.")
    await page.get_by_label("{{1}}").fill("Ines")
    await page.get_by_label("{{2}}").fill("A-77")
    await expect(preview).to_have_text("Hi Ines, your order A-77 is ready.")
    await expect(preview.locator("strong")).to_have_text("A-77")
    await shoot(page, "template-composer")

    stand_in.refuse_next_send = {"code": "template_not_approved", "message": "order_ready is paused by Meta."}
    await page.get_by_role("button", name="Send template").click()
    await expect(page.locator("#composer-error")).to_have_text("order_ready is paused by Meta.")
    await page.get_by_role("button", name="Send template").click()
    await stand_in.wait_for(lambda: len(stand_in.calls_to("POST", "/inbox/api/conversations/10/messages")) == 2)
    first, second = (call["json"] for call in stand_in.calls_to("POST", "/inbox/api/conversations/10/messages"))
    assert second["template"] == {"name": "order_ready", "language": "en", "parameters": ["Ines", "A-77"]}
    # Sending again after a refusal is the same send.
    assert UUID.match(second["client_id"]) and first == second
    await expect(page.locator("#timeline li.msg[data-type='template']")).to_contain_text("Template order_ready (en)")


async def test_owner_actions_post_the_right_calls(stand_in: StandInInboxServer, page: Page) -> None:
    stand_in.operator["admin"] = False
    stand_in.add_conversation(11, "Jon")
    stand_in.add_conversation(12, "Kim", owner="assigned", assignee="bob")
    await open_inbox(page, stand_in)
    await row(page, 11).get_by_role("button").click()
    take = page.locator("#action-take")
    await expect(take).to_be_visible()
    await expect(page.locator("#action-release")).to_be_hidden()
    await expect(page.locator("#blocked-text")).to_have_text(
        "This conversation is waiting in the queue: take it to reply."
    )
    await take.click()
    await stand_in.wait_for_call("POST", "/inbox/api/conversations/11/take")
    await expect(page.locator("#timeline li.event").last).to_have_text(re.compile("^Taken by alice"))
    await expect(take).to_be_hidden()
    await expect(row(page, 11)).to_have_attribute("data-section", "mine")
    await expect(page.get_by_label("Message", exact=True)).to_be_visible()

    await page.get_by_label("Assign to").select_option("bob")
    await page.get_by_role("button", name="Assign", exact=True).click()
    call = await stand_in.wait_for_call("POST", "/inbox/api/conversations/11/assign")
    assert call["json"] == {"operator": "bob"}
    await expect(page.locator("#timeline li.event").last).to_have_text(re.compile("^Assigned to bob by alice"))
    await expect(page.locator("#blocked-text")).to_have_text("bob has this conversation.")
    await expect(page.locator("#action-resolve")).to_be_hidden()

    await row(page, 12).get_by_role("button").click()
    await expect(page.locator("#blocked-text")).to_have_text("bob has this conversation.")
    await expect(page.locator("#action-take")).to_be_hidden()

    stand_in.add_conversation(13, "Lou", owner="assigned", assignee="alice")
    await stand_in.activity("owner", 13, stand_in.event("assigned", "operator:bob", "given", "alice"))
    await row(page, 13).get_by_role("button").click()
    await page.locator("#action-release").click()
    await stand_in.wait_for_call("POST", "/inbox/api/conversations/13/release")
    await expect(row(page, 13)).to_have_attribute("data-section", "queued")
    await page.locator("#action-take").click()
    await expect(row(page, 13)).to_have_attribute("data-section", "mine")
    await page.locator("#action-resolve").click()
    await stand_in.wait_for_call("POST", "/inbox/api/conversations/13/resolve")
    await expect(row(page, 13)).to_have_attribute("data-section", "resolved")
    await expect(page.locator("#timeline li.event").last).to_have_text(re.compile("^Resolved by alice"))
    paths = [
        call["path"].rsplit("/", 1)[1] for call in stand_in.calls if call["method"] == "POST" and "/13/" in call["path"]
    ]
    assert [path for path in paths if path != "read"] == ["release", "take", "resolve"]


async def test_a_taken_conversation_answers_409_with_who_has_it(stand_in: StandInInboxServer, page: Page) -> None:
    stand_in.add_conversation(14, "Mia")
    await open_inbox(page, stand_in)
    await row(page, 14).get_by_role("button").click()
    stand_in.conversations[14].update(owner="assigned", assignee="bob")  # bob was faster
    await page.locator("#action-take").click()
    await expect(page.locator("#action-error")).to_have_text("bob has this conversation.")
    await expect(page.locator("#conv-state")).to_contain_text("assigned to bob")


async def test_socket_drop_resumes_after_the_last_cursor_and_shows_events_once(
    stand_in: StandInInboxServer, page: Page
) -> None:
    stand_in.add_conversation(15, "Nina", owner="assigned", assignee="alice")
    await open_inbox(page, stand_in)
    await row(page, 15).get_by_role("button").click()
    await expect(page.locator("#timeline li.msg")).to_have_count(1)
    first = stand_in.message(15, "in", "text", {"body": "one"})
    last_cursor = await stand_in.activity("message", 15, first)
    await expect(entry(page, "message", first["id"])).to_be_visible()

    stand_in.accepting = False
    await stand_in.drop()
    await expect(page.locator("body")).to_have_attribute("data-connection", "reconnecting")
    await expect(page.locator("#connection")).to_have_text("reconnecting…")
    missed = stand_in.message(15, "in", "text", {"body": "two, while you were away"})
    await stand_in.activity("message", 15, missed)
    queued = stand_in.add_conversation(16, "Omar")
    await stand_in.activity("owner", 16, stand_in.event("queued", "rule", "wants a person"))
    stand_in.accepting = True

    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
    assert stand_in.connections[0] == {}
    assert stand_in.connections[-1] == {"after": str(last_cursor)}
    await expect(entry(page, "message", missed["id"])).to_have_count(1)
    await expect(row(page, queued["id"])).to_have_attribute("data-section", "queued")
    # The server replays what it already sent: shown once.
    await stand_in.send(stand_in.feed[-2])
    marker = stand_in.message(15, "in", "text", {"body": "three"})
    await stand_in.activity("message", 15, marker)
    await expect(entry(page, "message", marker["id"])).to_be_visible()
    await expect(page.locator("#timeline li.msg")).to_have_count(4)
    await expect(row(page, 15).locator(".conv__preview")).to_have_text("three")


async def test_reset_reloads_the_list_and_the_open_conversation(stand_in: StandInInboxServer, page: Page) -> None:
    stand_in.add_conversation(17, "Pia", owner="assigned", assignee="alice")
    await open_inbox(page, stand_in)
    await row(page, 17).get_by_role("button").click()
    await stand_in.activity("message", 17, stand_in.message(17, "in", "text", {"body": "seen live"}))
    stand_in.accepting = False
    await stand_in.drop()
    await expect(page.locator("body")).to_have_attribute("data-connection", "reconnecting")
    # Much happened, and the feed forgot it: only a reload tells the page.
    later = stand_in.message(17, "in", "text", {"body": "written while the feed forgot"})
    stand_in.timelines[17].append(later)
    stand_in.add_conversation(18, "Quinn")
    stand_in.cursor += 500
    stand_in.kept_after = stand_in.cursor - 10
    lists_before = len(stand_in.calls_to("GET", "/inbox/api/conversations"))
    stand_in.accepting = True

    await expect(entry(page, "message", later["id"])).to_be_visible()
    await expect(row(page, 18)).to_be_visible()
    assert len(stand_in.calls_to("GET", "/inbox/api/conversations")) == lists_before + 1
    resumed = len(stand_in.connections)
    stand_in.kept_after = 0
    await stand_in.drop()
    await stand_in.wait_for(lambda: len(stand_in.connections) > resumed)
    assert stand_in.connections[-1] == {"after": str(stand_in.cursor)}


async def test_a_refused_socket_still_shows_the_list_and_says_why(stand_in: StandInInboxServer, page: Page) -> None:
    stand_in.add_conversation(40, "Tara", owner="assigned", assignee="alice")
    reason = "requests from https://proxy.example are refused: add it to inbox.origins if the inbox is served there"
    stand_in.refusal = (403, "cross_origin", reason)
    await page.goto(stand_in.url)
    # The list and a conversation come over HTTP, whatever the socket does.
    await expect(row(page, 40)).to_be_visible()
    await row(page, 40).get_by_role("button").click()
    await expect(page.locator("#timeline li.msg")).to_have_count(1)
    await expect(page.locator("body")).to_have_attribute("data-connection", "unavailable")
    await expect(page.locator("#connection")).to_have_text(f"live updates unavailable: {reason}")
    assert stand_in.connections == []

    # Fixed: the next attempt connects, reloads what changed meanwhile, and applies each event once.
    later = stand_in.message(40, "in", "text", {"body": "written while live updates were off"})
    stand_in.timelines[40].append(later)
    stand_in.add_conversation(41, "Uma")
    lists_before = len(stand_in.calls_to("GET", "/inbox/api/conversations"))
    stand_in.refusal = None
    await page.evaluate("window.dispatchEvent(new Event('online'))")
    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
    assert stand_in.connections == [{}]
    await expect(row(page, 41)).to_be_visible()
    await expect(entry(page, "message", later["id"])).to_be_visible()
    assert len(stand_in.calls_to("GET", "/inbox/api/conversations")) == lists_before + 1
    live = stand_in.message(40, "in", "text", {"body": "live again"})
    await stand_in.activity("message", 40, live)
    await stand_in.send(stand_in.feed[-1])
    marker = stand_in.message(40, "in", "text", {"body": "and again"})
    await stand_in.activity("message", 40, marker)
    await expect(entry(page, "message", marker["id"])).to_be_visible()
    await expect(entry(page, "message", live["id"])).to_have_count(1)
    await expect(page.locator("#timeline li.msg")).to_have_count(4)


async def test_the_list_loads_while_the_socket_is_still_connecting(stand_in: StandInInboxServer, page: Page) -> None:
    stand_in.add_conversation(42, "Vic")
    stand_in.answering.clear()
    await page.goto(stand_in.url)
    await expect(row(page, 42)).to_be_visible()
    await expect(page.locator("body")).to_have_attribute("data-connection", "connecting")
    assert stand_in.connections == []
    stand_in.answering.set()
    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")


async def test_signed_out_frame_goes_to_the_sign_in_page(stand_in: StandInInboxServer, page: Page) -> None:
    await open_inbox(page, stand_in)
    await stand_in.send({"type": "signed_out", "reason": "disabled"})
    await page.wait_for_url(re.compile(r"/inbox/login\?next=%2Finbox$"))
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


async def test_a_401_from_the_api_goes_to_the_sign_in_page(stand_in: StandInInboxServer, page: Page) -> None:
    stand_in.add_conversation(19, "Rui")
    await open_inbox(page, stand_in)
    # The session ended between two requests.
    answer = {"error": {"code": "signed_out", "message": "Your session ended."}}
    await page.route("**/inbox/api/conversations/19", lambda route: route.fulfill(status=401, json=answer))
    await row(page, 19).get_by_role("button").click()
    await page.wait_for_url(re.compile(r"/inbox/login"))


async def test_the_page_asks_nothing_of_another_host(stand_in: StandInInboxServer, page: Page) -> None:
    entries = every_kind_of_entry(stand_in, 20)
    stand_in.add_conversation(20, "Sam", owner="assigned", assignee="alice", timeline=list(entries.values()))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await open_inbox(page, stand_in)
    await row(page, 20).get_by_role("button").click()
    await expect(page.locator("#timeline li.entry").first).to_be_visible()
    await page.locator("#timeline-scroll").evaluate("element => element.scrollTop = 0")
    await page.get_by_role("button", name="Operators").click()
    await expect(page.locator("#admin-operators tr")).to_have_count(2)
    origin = stand_in.url.removesuffix("/inbox")
    ws_origin = origin.replace("http://", "ws://")
    foreign = [url for url in requests if not url.startswith((origin + "/", ws_origin + "/", "data:"))]
    assert foreign == []
    assert any(url.startswith(f"{origin}/inbox/media/") for url in requests)


async def test_phone_width_shows_the_list_then_the_conversation_with_back(
    stand_in: StandInInboxServer, page: Page
) -> None:
    image = stand_in.message(21, "in", "image", {"caption": "Broken lid", "wahub_media": media("img3", "image/png")})
    answer = stand_in.message(21, "out", "text", {"body": "Sorry! A new one is on its way."}, status="read")
    stand_in.add_conversation(21, "Tara", owner="assigned", assignee="alice", timeline=[image, answer])
    stand_in.add_conversation(22, "Uma")
    await page.set_viewport_size({"width": 390, "height": 844})
    await open_inbox(page, stand_in)
    await expect(page.locator("#list-pane")).to_be_visible()
    await expect(page.locator("#conversation-pane")).to_be_hidden()
    await shoot(page, "phone-list")
    await row(page, 21).get_by_role("button").click()
    await expect(page.locator("#conversation-pane")).to_be_visible()
    await expect(page.locator("#list-pane")).to_be_hidden()
    await expect(page.locator("#timeline img.media__image")).to_have_js_property("naturalWidth", 2)
    await shoot(page, "phone-conversation")
    await page.get_by_role("button", name="Contact").click()
    await expect(page.locator("#contact-name")).to_have_text("Tara")
    await expect(page.locator("#conversation-pane")).to_be_hidden()
    await page.get_by_role("button", name="Back to the conversation").click()
    await expect(page.locator("#conversation-pane")).to_be_visible()
    await page.get_by_role("button", name="Back to the list").click()
    await expect(page.locator("#list-pane")).to_be_visible()
    await expect(page.locator("#conversation-pane")).to_be_hidden()


async def test_composer_sends_replies_attachments_canned_texts_and_notes(
    stand_in: StandInInboxServer, page: Page
) -> None:
    question = stand_in.message(23, "in", "text", {"body": "Where is my parcel?"})
    stand_in.add_conversation(23, "Vic", owner="assigned", assignee="alice", timeline=[question], unread=1)
    await open_inbox(page, stand_in)
    await row(page, 23).get_by_role("button").click()
    read = await stand_in.wait_for_call("POST", "/inbox/api/conversations/23/read")
    assert read["json"] == {"message_id": question["id"]}
    await expect(row(page, 23).locator(".conv__badge")).to_have_count(0)

    box = page.get_by_label("Message", exact=True)
    await entry(page, "message", question["id"]).get_by_role("button", name="Reply to this message").click()
    await expect(page.locator("#quote-text")).to_have_text("Where is my parcel?")
    await box.fill("It left")
    await box.press("Shift+Enter")
    await box.press_sequentially("today")
    stand_in.refuse_next_send = {"code": "window_closed", "message": "The 24 h window closed: send a template."}
    await box.press("Enter")
    await expect(page.locator("#composer-error")).to_have_text("The 24 h window closed: send a template.")
    await expect(box).to_have_value("It left\ntoday")
    await box.press("Enter")
    await expect(box).to_have_value("")
    await expect(page.locator("#quote")).to_be_hidden()
    refused, sent = (call["json"] for call in stand_in.calls_to("POST", "/inbox/api/conversations/23/messages"))
    assert sent == {"text": "It left\ntoday", "client_id": sent["client_id"], "reply_to": question["id"]}
    assert refused == sent and UUID.match(sent["client_id"])
    reply = page.locator("#timeline li.msg--out")
    await expect(reply).to_have_count(1)
    await expect(reply.locator(".msg__quote")).to_have_text("Where is my parcel?")

    await page.get_by_role("button", name="Canned").click()
    await page.get_by_role("button", name=re.compile("^Thanks")).click()
    await expect(box).to_have_value("Thank you for your patience!")
    await page.get_by_role("button", name="Send", exact=True).click()
    await expect(reply).to_have_count(2)

    await page.locator("#attach").set_input_files({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"})
    await expect(page.locator("#attachment-name")).to_have_text("Attached: notes.txt")
    await box.fill("the list")
    await box.press("Enter")
    await expect(reply).to_have_count(3)
    media_send = stand_in.calls_to("POST", "/inbox/api/conversations/23/messages")[-1]["json"]
    assert media_send == {"media": "wahub:up1", "caption": "the list", "client_id": media_send["client_id"]}
    client_ids = [
        call["json"]["client_id"] for call in stand_in.calls_to("POST", "/inbox/api/conversations/23/messages")
    ]
    assert len(set(client_ids)) == 3

    await page.get_by_role("button", name="Note").click()
    await box.fill("Customer sounds *upset*")
    await box.press("Enter")
    note = page.locator("#timeline li.note")
    await expect(note).to_contain_text("Note by alice · never sent")
    await expect(note.locator("strong")).to_have_text("upset")
    assert stand_in.calls_to("POST", "/inbox/api/conversations/23/notes")[0]["json"] == {
        "text": "Customer sounds *upset*"
    }
    await expect(note).to_have_count(1)


async def test_contact_panel_edits_language_and_tags(stand_in: StandInInboxServer, page: Page) -> None:
    stand_in.add_conversation(24, "Wen", owner="assigned", assignee="alice", tags=["vip"])
    await open_inbox(page, stand_in)
    await row(page, 24).get_by_role("button").click()
    await expect(page.locator("#contact-bsuid")).to_have_text("US.24abc")
    await expect(page.locator("#contact-consent")).to_have_text("opted_in")
    await expect(page.locator("#contact-ledger li")).to_contain_text(["opt_in (all) by keyword"])
    await page.get_by_label("Language").select_option("ru")
    await stand_in.wait_for(lambda: len(stand_in.calls_to("PATCH", "/inbox/api/contacts/524")) == 1)
    await page.get_by_label("New tag").fill("refund")
    await page.get_by_label("New tag").press("Enter")
    await expect(page.locator("#contact-tags .tag__text")).to_have_text(["vip", "refund"])
    await page.get_by_role("button", name="Remove tag vip").click()
    await expect(page.locator("#contact-tags .tag__text")).to_have_text(["refund"])
    changes = [call["json"] for call in stand_in.calls_to("PATCH", "/inbox/api/contacts/524")]
    assert changes == [{"language": "ru"}, {"tags": ["vip", "refund"]}, {"tags": ["refund"]}]


async def test_a_newly_queued_conversation_is_announced(stand_in: StandInInboxServer, page: Page) -> None:
    await open_inbox(page, stand_in)
    await page.get_by_role("button", name="Sound on").click()
    await expect(page.get_by_role("button", name="Sound off")).to_have_attribute("aria-pressed", "true")
    assert await page.evaluate("localStorage.getItem('wahub.inbox.muted')") == "1"
    stand_in.add_conversation(25, "Xia")
    await stand_in.activity("owner", 25, stand_in.event("queued", "rule", "asked for a person"))
    await expect(page.locator("body")).to_have_attribute("data-last-alert", "25")
    await expect(row(page, 25)).to_have_attribute("data-section", "queued")
    await page.reload()
    await expect(page.get_by_role("button", name="Sound off")).to_be_visible()


async def test_admins_list_add_and_disable_operators(stand_in: StandInInboxServer, page: Page) -> None:
    await open_inbox(page, stand_in)
    await page.get_by_role("button", name="Operators").click()
    operators = page.locator("#admin-operators tr")
    await expect(operators).to_have_count(2)
    await page.get_by_label("Name", exact=True).fill("carol")
    await page.get_by_label("Password").fill("a long passphrase")
    await page.get_by_label("Admin").check()
    await page.get_by_role("button", name="Add").click()
    await expect(operators).to_have_count(3)
    assert stand_in.calls_to("POST", "/inbox/api/operators")[0]["json"] == {
        "name": "carol",
        "password": "a long passphrase",
        "admin": True,
    }
    await operators.filter(has_text="bob").get_by_role("button", name="Disable").click()
    await expect(operators.filter(has_text="bob")).to_contain_text("disabled")
    assert stand_in.calls_to("POST", "/inbox/api/operators/bob")[0]["json"] == {"disabled": True}


async def test_operators_button_is_for_admins_only(stand_in: StandInInboxServer, page: Page) -> None:
    stand_in.operator["admin"] = False
    await open_inbox(page, stand_in)
    await expect(page.locator("#me")).to_have_text("alice")
    await expect(page.get_by_role("button", name="Operators")).to_be_hidden()


def test_the_page_escapes_the_operator_and_the_token() -> None:
    html = inbox_page('a"<b>', admin=False, csrf_token='t"><script>')
    assert '<meta name="csrf-token" content="t&quot;&gt;&lt;script&gt;">' in html
    assert 'data-operator="a&quot;&lt;b&gt;" data-admin="false"' in html
    assert "<script>" not in html.replace('<script src="/inbox/static/', "")
