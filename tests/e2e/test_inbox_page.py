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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from pytest_aiohttp import AiohttpServer

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
        return web.Response(text="<!doctype html><title>Sign in</title><h1>Sign in</h1>", content_type="text/html")

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
            texts += [str(entry.get("message", {}).get("text", {}).get("body", "")) for entry in self.timelines[item["id"]]]
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
            part["components"] = [{"type": "body", "parameters": [{"type": "text", "text": value} for value in template["parameters"]]}]
            entry = self.message(conversation_id, "out", "template", part)
        elif "media" in body:
            entry = self.message(conversation_id, "out", "document", {"id": body["media"], "caption": body.get("caption", ""), "filename": "notes.txt"})
        else:
            entry = self.message(conversation_id, "out", "text", {"body": body["text"]}, reply_to=body.get("reply_to"))
        entry["at"] = time.time()
        await self.activity("message", conversation_id, entry)
        return web.json_response(entry, status=202)

    async def _note(self, request: web.Request) -> web.Response:
        conversation_id = self._conversation_id(request)
        body = await request.json()
        entry = {"kind": "note", "id": self.next_id(), "author": self.operator["name"], "text": body["text"], "at": time.time()}
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
        return web.json_response({"id": "wahub:up1", "mime_type": upload.content_type, "filename": upload.filename}, status=201)

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
    SHOTS.mkdir(parents=True, exist_ok=True)
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
