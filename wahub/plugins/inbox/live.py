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

When the poller starts following, its cursor starts ``START_MARGIN`` ids
below the newest row: a lower id may belong to a transaction still open at
that moment, so the ids between are watched as gaps too (those already
there count as sent, so no page gets them twice).

The poller never waits on one page: each page has its own queue of frames
and a task that writes them. A page that falls ``OUTBOX_FRAMES`` frames
behind, or takes longer than ``SEND_SECONDS`` to take one, is dropped (its
socket closed, in a task of its own); the page reconnects and resumes from
the last cursor it got.

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
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from wahub.core.hub import Hub
from wahub.core.storage.activity import Activity
from wahub.core.storage.operators import Session
from wahub.plugins.inbox.shapes import event_entry, item, message_entries, note_entry
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
#: Ids below the newest row at start that are still watched (they may commit late).
START_MARGIN = 200
#: Frames waiting for one page; past that the page is too slow and is dropped.
OUTBOX_FRAMES = 100
#: A page that takes longer than this to take one frame is dropped.
SEND_SECONDS = 2.0
#: How long a page has to answer a close before its connection is cut.
CLOSE_SECONDS = 2.0
#: Refused origins warned about (once each) before the warnings stop.
MAX_WARNED_ORIGINS = 100


@dataclass(eq=False)
class Client:
    """One open page: its socket, its session, and the cursor it resumed from."""

    ws: web.WebSocketResponse
    session: Session
    #: Events up to here were sent before (or on another replica): never again.
    floor: int = 0
    #: The page's connection, cut when the page does not answer a close.
    transport: asyncio.Transport | None = None
    #: Frames waiting to be written; ``None`` asks the writer to close the socket.
    outbox: asyncio.Queue[dict[str, Any] | None] = field(default_factory=lambda: asyncio.Queue(OUTBOX_FRAMES))
    #: The task writing ``outbox`` to the socket.
    writer: asyncio.Task[None] | None = None
    #: Set once the page is being closed: nothing more is queued for it.
    ending: bool = False


async def close_page(client: Client, message: bytes) -> None:
    """Close the page's socket; cut its connection when it does not answer within ``CLOSE_SECONDS``."""
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await client.ws.close(message=message)
    except TimeoutError:
        _LOGGER.debug("an inbox page did not answer the close within %s s: its connection is cut", CLOSE_SECONDS)
        if client.transport is not None:
            client.transport.abort()
    except (ConnectionResetError, RuntimeError) as exc:
        _LOGGER.debug("an inbox page left while it was being closed: %s", exc)


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
        #: Sockets being closed, each in a task of its own.
        self._closing: set[asyncio.Task[None]] = set()
        #: Refusals already logged (one WARNING per origin).
        self._warned: set[str] = set()

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
            clients, self.clients = list(self.clients), set()
            for client in clients:
                self._drop(client, b"wahub is shutting down")
            await asyncio.gather(*self._closing, return_exceptions=True)
            writers = [client.writer for client in clients if client.writer is not None]
            for writer in writers:
                writer.cancel()
            await asyncio.gather(*writers, return_exceptions=True)

    # -- pages ---------------------------------------------------------------

    async def attach(self, client: Client, after: int | None) -> None:
        """Greet a page (``hello``; with ``after``, what it missed, or ``reset``)
        and send it every activity from then on."""
        client.writer = asyncio.create_task(self._write(client), name="inbox-page-writer")
        async with self._lock:
            if not self._following:
                await self._follow()
            if after is None:
                client.floor = self.cursor
                self._offer(client, {"type": "hello", "cursor": self.cursor})
            elif await self._missed(after):
                client.floor = self.cursor
                self._offer(client, {"type": "reset"})
                self._offer(client, {"type": "hello", "cursor": self.cursor})
            else:
                client.floor = after
                self._offer(client, {"type": "hello", "cursor": after})
                await self._resume(client, after)
            if not client.ending:
                self.clients.add(client)
        self._wake.set()

    def detach(self, client: Client) -> None:
        self.clients.discard(client)

    def leave(self, client: Client) -> None:
        """The page's socket has ended: forget it, and stop its writer unless it is closing the socket."""
        self.detach(client)
        if client.writer is not None and not client.ending:
            client.writer.cancel()

    async def _follow(self) -> None:
        """Start following the feed a margin below its newest row (see the module's docstring)."""
        newest = await self.hub.storage.activity.last_id()
        self.cursor, self._following = max(0, newest - START_MARGIN), True
        self.gaps.clear()
        rows = await self.hub.storage.activity.after(self.cursor, limit=START_MARGIN)
        # Committed before any page was followed: never sent as new, only on resume.
        self.sent_above = {row.id for row in rows if row.id <= newest}

    def _offer(self, client: Client, frame: dict[str, Any]) -> None:
        """Queue ``frame`` for the page; a page too far behind is dropped."""
        if client.ending:
            return
        try:
            client.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            _LOGGER.info("an inbox page fell %s frames behind: it is dropped and will resume", OUTBOX_FRAMES)
            self._drop(client, b"too far behind: reconnect")

    def _drop(self, client: Client, message: bytes) -> None:
        """Close the page's socket in a task of its own."""
        self.detach(client)
        if client.ending:
            return
        client.ending = True
        if client.writer is not None:
            client.writer.cancel()
        task = asyncio.create_task(close_page(client, message), name="inbox-page-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _sign_out(self, client: Client, reason: str) -> None:
        """Tell the page its session ended, then close its socket (after what was queued before)."""
        self.detach(client)
        if client.ending:
            return
        try:
            client.outbox.put_nowait({"type": "signed_out", "reason": reason})
            client.outbox.put_nowait(None)
        except asyncio.QueueFull:
            self._drop(client, b"signed out")
            return
        client.ending = True

    async def _write(self, client: Client) -> None:
        """Write the page's frames in order; drop it when one takes longer than ``SEND_SECONDS``."""
        while True:
            frame = await client.outbox.get()
            if frame is None:
                await close_page(client, b"signed out")
                return
            try:
                async with asyncio.timeout(SEND_SECONDS):
                    await client.ws.send_json(frame)
            except TimeoutError:
                _LOGGER.info("an inbox page took no frame for %s s: it is dropped and will resume", SEND_SECONDS)
                self.detach(client)
                client.ending = True
                await close_page(client, b"too slow: reconnect")
                return
            except (ConnectionResetError, RuntimeError) as exc:
                _LOGGER.debug("inbox page left before a %r frame: %s", frame.get("type"), exc)
                self.detach(client)
                return

    def warn_refused(self, refusal: str) -> None:
        """Log a socket refused for its origin, once per origin (and refusal) in this process."""
        if refusal in self._warned or len(self._warned) >= MAX_WARNED_ORIGINS:
            return
        self._warned.add(refusal)
        _LOGGER.warning(
            "inbox: a live-updates socket was refused, so pages there get no live updates: %s. "
            "The page's origin must be the host the request reached or be listed in inbox.origins "
            "(behind a proxy, pass the Host header on or list the public origin); "
            "this is logged once per origin",
            refusal,
        )

    async def _missed(self, after: int) -> bool:
        """Whether rows after ``after`` are gone from the feed (pruned): the page must reload."""
        first = await self.hub.storage.activity.first_id()
        if first is None:
            return after < self.cursor
        return after + 1 < first

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
                self._offer(client, {"type": "activity", "cursor": max(cursor, client.floor), "events": shown})

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
                self._sign_out(client, "the session ended: signed out, expired, or the operator was disabled")

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
