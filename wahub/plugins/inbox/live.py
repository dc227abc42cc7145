"""Live updates: one poller per process follows the activity feed and pushes
what changed to every open inbox page over its WebSocket (see docs/inbox.md).

The poller is a task for the daemon's whole life that sleeps while no socket
is open. While some are, it reads the feed every ``POLL_SECONDS``, sends each
new row at once, and moves the ``cursor`` it reports over contiguous ids only:
on PostgreSQL an id may commit after a higher one, so the cursor waits below
a missing id for ``GAP_SECONDS`` before it gives up on it (a rolled-back id
never fills). Rows above the cursor already sent are remembered, so nothing
is sent twice; a page that resumes from an old cursor may see an event again
and ignores its id, as the protocol says.

About every second the sessions of all open sockets are checked together
(an ended session gets ``signed_out`` and its socket closes), and about every
20 s each open socket marks its session live, which makes its operator
present for automatic assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from wahub.core.http.api_io import error
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.storage.activity import Activity
from wahub.core.storage.operators import Session
from wahub.plugins.inbox.api import event_entry, item, message_entries, note_entry
from wahub.plugins.inbox.auth import socket_session
from wahub.plugins.inbox.state import Inbox, inbox_of

_LOGGER = logging.getLogger(__name__)

#: How often the feed is read while a page is open.
POLL_SECONDS = 0.25
#: How long the cursor waits below an id that has not committed.
GAP_SECONDS = 5.0
#: How often the open pages' sessions are checked, and marked live.
SESSION_CHECK_SECONDS = 1.0
PRESENCE_SECONDS = 20.0
#: Rows read from the feed at once.
BATCH = 500
#: Conversations asked of the listing at once (it gives at most 100 per section).
LISTING_CHUNK = 100
#: Missing ids timed at once below the newest row (a larger gap is timed as it comes closer).
MAX_TIMED_GAPS = 1000


@dataclass(eq=False)
class Client:
    """One open page: its socket, its session, and the cursor it resumed from."""

    ws: web.WebSocketResponse
    session: Session
    #: Events up to here were sent before (or on another replica): never again.
    floor: int = 0


async def _send(client: Client, frame: dict[str, Any]) -> bool:
    """Send ``frame``; False when the page has gone."""
    if client.ws.closed:
        return False
    try:
        await client.ws.send_json(frame)
    except (ConnectionResetError, RuntimeError) as exc:
        _LOGGER.debug("inbox page left before a %r frame: %s", frame.get("type"), exc)
        return False
    return True


class Live:
    """This process's open pages and the poller that feeds them."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.clients: set[Client] = set()
        #: Every activity up to here was sent to the open pages.
        self.cursor = 0
        #: Ids above the cursor sent already (they committed before a lower one).
        self.sent_above: set[int] = set()
        #: Missing ids below newer rows -> when they were first seen missing (loop time).
        self.gaps: dict[int, float] = {}
        self._following = False
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    @property
    def hub(self) -> Hub:
        return self.inbox.hub

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._run(), name="inbox-live")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for client in list(self.clients):
                await client.ws.close(message=b"wahub is shutting down")
            self.clients.clear()

    # -- pages ---------------------------------------------------------------

    async def attach(self, client: Client, after: int | None) -> None:
        """Greet a page (``hello``; with ``after``, what it missed, or ``reset``)
        and send it every activity from then on."""
        activity = self.hub.storage.activity
        async with self._lock:
            if not self._following:
                self.cursor, self._following = await activity.last_id(), True
                self.sent_above.clear()
                self.gaps.clear()
            if after is None:
                client.floor = self.cursor
                await _send(client, {"type": "hello", "cursor": self.cursor})
            elif await self._missed(after):
                client.floor = self.cursor
                await _send(client, {"type": "reset"})
                await _send(client, {"type": "hello", "cursor": self.cursor})
            else:
                client.floor = after
                await _send(client, {"type": "hello", "cursor": after})
                await self._resume(client, after)
            self.clients.add(client)
        self._wake.set()

    def detach(self, client: Client) -> None:
        self.clients.discard(client)

    async def _missed(self, after: int) -> bool:
        """Whether rows after ``after`` are gone from the feed (pruned): the page must reload."""
        if after >= self.cursor:
            return False
        first = await self.hub.storage.activity.first_id()
        return first is None or after + 1 < first

    async def _resume(self, client: Client, after: int) -> None:
        """Send a page what came after ``after`` up to the live cursor, and what was sent above it."""
        position = after
        while position < self.cursor:
            rows = await self.hub.storage.activity.after(position, limit=BATCH)
            upto = [row for row in rows if row.id <= self.cursor]
            if not upto:
                break
            position = upto[-1].id
            cursor = self.cursor if len(upto) < len(rows) or len(rows) < BATCH else position
            above = [row for row in rows if row.id in self.sent_above] if cursor == self.cursor else []
            await self._deliver([*upto, *above], [client], cursor)
            if cursor == self.cursor:
                return
        if self.sent_above:
            rows = await self.hub.storage.activity.after(self.cursor, limit=BATCH)
            await self._deliver([row for row in rows if row.id in self.sent_above], [client], self.cursor)

    # -- the poller ----------------------------------------------------------

    async def _run(self) -> None:
        checked = presence = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if not self.clients:
                self._following = False
                self._wake.clear()
                await self._wake.wait()
            try:
                async with self._lock:
                    await self._poll()
                if loop.time() - checked >= SESSION_CHECK_SECONDS:
                    checked = loop.time()
                    await self._check_sessions()
                if loop.time() - presence >= PRESENCE_SECONDS:
                    presence = loop.time()
                    await self._mark_present()
            except Exception:
                _LOGGER.exception("inbox live feed: reading the activity feed failed; trying again")
            await asyncio.sleep(POLL_SECONDS)

    def _advance(self, present: Sequence[int], now: float) -> int:
        """The new cursor: over contiguous ids, and over a gap that stayed open ``GAP_SECONDS``."""
        cursor = self.cursor
        for found in sorted(set(present) | self.sent_above):
            if found <= cursor:
                continue
            timed = range(cursor + 1, found)[:MAX_TIMED_GAPS]
            for gap in timed:
                self.gaps.setdefault(gap, now)
            if any(now - self.gaps[gap] < GAP_SECONDS for gap in timed):
                break  # the cursor waits below an id that may still commit
            cursor = found
        self.gaps = {gap: since for gap, since in self.gaps.items() if gap > cursor}
        return cursor

    async def _poll(self) -> None:
        rows = await self.hub.storage.activity.after(self.cursor, limit=BATCH)
        fresh = [row for row in rows if row.id not in self.sent_above]
        cursor = self._advance([row.id for row in rows], asyncio.get_running_loop().time())
        moved = cursor != self.cursor
        self.cursor = cursor
        self.sent_above = {found for found in self.sent_above | {row.id for row in fresh} if found > cursor}
        if fresh or moved:
            await self._deliver(fresh, list(self.clients), cursor)

    async def _entries(self, rows: Sequence[Activity]) -> dict[int, dict[str, Any] | None]:
        """The timeline entry each activity row names (None for a contact edit)."""
        storage = self.hub.storage
        refs: defaultdict[str, set[int]] = defaultdict(set)
        for row in rows:
            if row.ref_id is not None:
                refs["message" if row.kind == "status" else row.kind].add(row.ref_id)
        by_kind: dict[str, dict[int, dict[str, Any]]] = {}
        if refs["message"]:
            messages = await storage.desk.messages_by_id(sorted(refs["message"]))
            by_kind["message"] = {entry["id"]: entry for entry in await message_entries(self.hub, messages)}
        if refs["owner"]:
            events = await storage.conversations.events_by_id(sorted(refs["owner"]))
            by_kind["owner"] = {int(e.id or 0): event_entry(e) for e in events}
        if refs["note"]:
            notes = await storage.desk.notes_by_id(sorted(refs["note"]))
            by_kind["note"] = {note.id: note_entry(note) for note in notes}
        found: dict[int, dict[str, Any] | None] = {}
        for row in rows:
            kind = "message" if row.kind == "status" else row.kind
            found[row.id] = by_kind.get(kind, {}).get(row.ref_id or 0)
        return found

    async def _items(self, session: Session, conversation_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The conversations as the session's operator lists them."""
        operator, now, items = session.operator, self.hub.clock.time(), {}
        for start in range(0, len(conversation_ids), LISTING_CHUNK):
            chunk = conversation_ids[start : start + LISTING_CHUNK]
            listing = await self.hub.storage.desk.listing(operator_id=operator.id, operator=operator.name, only=chunk)
            items.update({row["id"]: item(row, now) for row in listing})
        return items

    async def _deliver(self, rows: Sequence[Activity], clients: Sequence[Client], cursor: int) -> None:
        """Send ``rows`` to ``clients`` as one ``activity`` frame each, every
        operator's conversations as that operator lists them."""
        entries = await self._entries(rows) if rows else {}
        conversation_ids = sorted({row.conversation_id for row in rows})
        by_operator: defaultdict[int, list[Client]] = defaultdict(list)
        for client in clients:
            by_operator[client.session.operator.id].append(client)
        for group in by_operator.values():
            items = await self._items(group[0].session, conversation_ids) if rows else {}
            events: list[tuple[int, dict[str, Any]]] = [
                (
                    row.id,
                    {
                        "id": row.id,
                        "kind": row.kind,
                        "conversation": items.get(row.conversation_id),
                        "entry": entries[row.id],
                    },
                )
                for row in rows
            ]
            for client in group:
                shown = [event for found, event in events if found > client.floor]
                if not shown and cursor <= client.floor:
                    continue
                if not await _send(client, {"type": "activity", "cursor": max(cursor, client.floor), "events": shown}):
                    self.detach(client)

    # -- sessions ------------------------------------------------------------

    async def _check_sessions(self) -> None:
        """End the pages whose session ended (signed out, expired, operator disabled)."""
        clients = list(self.clients)
        if not clients:
            return
        tokens = sorted({client.session.token_hash for client in clients})
        valid = await self.hub.storage.operators.valid_sessions(tokens, now=self.hub.clock.time())
        for client in clients:
            if client.session.token_hash not in valid:
                self.detach(client)
                reason = "the session ended: signed out, expired, or the operator was disabled"
                await _send(client, {"type": "signed_out", "reason": reason})
                await client.ws.close(message=b"signed out")

    async def _mark_present(self) -> None:
        """Each open page keeps its session alive and its operator present."""
        now = self.hub.clock.time()
        idle = float(self.inbox.config["session_idle_hours"]) * 3600
        longest = float(self.inbox.config["session_days"]) * 86400
        sessions = {client.session.token_hash: client.session for client in self.clients}
        for token, session in sessions.items():
            # Extended as any use extends it, never past its last day.
            expires_at = min(now + idle, session.created_at + longest)
            await self.hub.storage.operators.touch_session(token, now=now, expires_at=expires_at, live=True)


def live_of(hub: Hub) -> Live:
    """The daemon's live feed, made on first use."""
    live = hub.state.get("inbox.live")
    if live is None:
        live = hub.state["inbox.live"] = Live(inbox_of(hub))
    assert isinstance(live, Live)
    return live


def _after(request: web.Request) -> int | None:
    given = request.query.get("after")
    if given is None or given == "":
        return None
    if not (given.isascii() and given.isdigit() and len(given) <= 19):
        raise web.HTTPBadRequest(
            text='{"error": {"code": "invalid_cursor", "message": "after must be the cursor of a previous frame"}}',
            content_type="application/json",
        )
    return int(given)


async def _close_on_shutdown(hub: Hub, ws: web.WebSocketResponse) -> None:
    await hub.shutting_down.wait()
    await ws.close(message=b"wahub is shutting down")


async def socket(request: web.Request) -> web.StreamResponse:
    """``GET /inbox/ws?after=<cursor>``: the page's live updates."""
    hub = request.app[HUB_KEY]
    inbox, live = inbox_of(hub), live_of(hub)
    after = _after(request)
    if hub.shutting_down.is_set():
        return error(503, "shutting_down", "wahub is restarting; connect again in a moment")
    session = await socket_session(inbox, request)
    if session is None:
        return error(401, "signed_out", "sign in to the inbox first: this socket has no valid session")
    ws = web.WebSocketResponse(heartbeat=30)
    try:
        await ws.prepare(request)
    except ConnectionResetError as exc:
        raise web.HTTPBadRequest(text="the connection closed during the handshake") from exc
    client = Client(ws, session)
    closer = asyncio.create_task(_close_on_shutdown(hub, ws))
    try:
        await live.attach(client, after)
        async for _ in ws:
            pass  # the page sends nothing but pings, which aiohttp answers
    finally:
        closer.cancel()
        live.detach(client)
    return ws


def live_routes(inbox: Inbox) -> list[web.RouteDef]:
    return [web.get("/inbox/ws", socket)]
