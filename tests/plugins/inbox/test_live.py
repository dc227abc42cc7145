"""The inbox's live socket over a real WebSocket, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.plugins.inbox.kit import Follower, desk, frame, inbox_daemon, queued_conversation, user_says
from wahub.testing import sandbox_status, signed_sandbox_webhook


async def test_socket_receives_messages_statuses_owners_and_notes(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, aiohttp.ClientSession() as http:
        ana = await desk(daemon, http, "ana")
        async with ana.socket() as ws:
            hello = await frame(ws)
            assert hello["type"] == "hello" and isinstance(hello["cursor"], int)
            feed = Follower(ws)
            queued = await queued_conversation(daemon, http)
            seen = await feed.until({"kind": "owner", "change": "queued"})
            assert any(e["kind"] == "message" and e["entry"]["direction"] == "in" for e in seen)
            assert seen[-1]["conversation"]["section"] == "queued"
            await ana.ok("POST", f"/conversations/{queued}/take")
            seen = await feed.until({"kind": "owner", "change": "assigned"})
            assert seen[-1]["conversation"]["section"] == "mine"
            sent = await ana.ok("POST", f"/conversations/{queued}/messages", {"text": "on my way"}, expect=202)
            await feed.until({"kind": "message", "id": sent["id"]})
            await feed.until({"kind": "status", "id": sent["id"], "status": "sent"})
            pmid = (await daemon.hub.storage.messages.get(sent["id"]))["provider_message_id"]
            body, headers = signed_sandbox_webhook([sandbox_status(pmid, "delivered")])
            async with http.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as answer:
                assert answer.status == 200
            await feed.until({"kind": "status", "id": sent["id"], "status": "delivered"})
            note = await ana.ok("POST", f"/conversations/{queued}/notes", {"text": "VIP"}, expect=201)
            await feed.until({"kind": "note", "id": note["id"], "text": "VIP"})


async def test_resume_after_a_drop_misses_and_repeats_nothing(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, aiohttp.ClientSession() as http:
        ana = await desk(daemon, http, "ana")
        async with ana.socket() as ws:
            cursor = (await frame(ws))["cursor"]
            feed = Follower(ws)
            await user_says(daemon, http, "first")
            seen = await feed.until({"kind": "message", "direction": "in"})
            cursor = max(cursor, max(e["id"] for e in seen))
            ids_seen = {e["id"] for e in seen}
        # Dropped: what happens now arrives on the next socket.
        await user_says(daemon, http, "second", sender="15557654321")
        await user_says(daemon, http, "third", sender="15557654321")
        async with ana.socket(after=cursor) as ws:
            hello = await frame(ws)
            assert hello == {"type": "hello", "cursor": cursor}
            feed = Follower(ws)
            missed = await feed.until(
                {"kind": "message", "direction": "in", "message": {"type": "text", "text": {"body": "third"}}}
            )
            texts = [e["entry"]["message"]["text"]["body"] for e in missed if e["kind"] == "message"]
            assert "first" not in texts and {"second", "third"} <= set(texts)
            assert not ids_seen & {e["id"] for e in missed}
            assert all(e["id"] > cursor for e in missed)


async def test_a_cursor_older_than_the_feed_gets_reset(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, aiohttp.ClientSession() as http:
        ana = await desk(daemon, http, "ana")
        await user_says(daemon, http, "one")
        await user_says(daemon, http, "two")
        await asyncio.sleep(0.05)
        between = time.time()
        await user_says(daemon, http, "three")
        # The oldest rows are pruned, the newest kept: a page that saw only the first missed some.
        assert await daemon.hub.storage.activity.prune(before=between) >= 2
        async with ana.socket(after=1) as ws:
            assert await frame(ws) == {"type": "reset"}
            assert (await frame(ws))["type"] == "hello"


async def test_a_disabled_operators_socket_is_signed_out(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, aiohttp.ClientSession() as http:
        ana = await desk(daemon, http, "ana")
        async with ana.socket() as ws:
            assert (await frame(ws))["type"] == "hello"
            await daemon.hub.storage.operators.set_disabled("ana", True, now=0)
            ended = await frame(ws, within=5)
            assert ended["type"] == "signed_out" and ended["reason"]
            closing = await ws.receive(timeout=5)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        async with http.get(f"{daemon.url}/inbox/ws", headers=ana.headers) as refused:
            assert refused.status == 401
