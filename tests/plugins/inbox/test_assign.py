"""Automatic assignment and the alerts about queued conversations, on a running daemon."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from tests.plugins.inbox.kit import desk, frame, inbox_daemon, queued_conversation, user_says
from wahub.plugins.inbox.assign import alert_waiting, offer_waiting
from wahub.testing import RunningDaemon, serve_on_loopback, wait_until


async def test_auto_assign_gives_in_turn_within_the_limit(database_url: str) -> None:
    async with (
        inbox_daemon(database_url, auto_assign=True, max_open_per_operator=1) as daemon,
        aiohttp.ClientSession() as http,
    ):
        ana, bob = await desk(daemon, http, "ana"), await desk(daemon, http, "bob")
        async with ana.socket() as ana_ws, bob.socket() as bob_ws:
            assert (await frame(ana_ws))["type"] == (await frame(bob_ws))["type"] == "hello"

            async def both_present() -> bool:
                live = await daemon.hub.storage.operators.live_operators(daemon.hub.clock.time() - 60)
                return {o.name for o in live} == {"ana", "bob"}

            await wait_until(both_present)
            ids = [await handed_off(daemon, http, sender) for sender in ("15550000001", "15550000002", "15550000003")]
            owners = [await daemon.hub.storage.conversations.get(i) for i in ids]
            assert sorted(str(c.assignee) for c in owners[:2] if c) == ["ana", "bob"]
            assert owners[2] is not None and str(owners[2].owner) == "queued"  # both hold their one
            events = await daemon.hub.storage.conversations.events(ids[0])
            assert events[-1].actor == "inbox" and "auto_assign" in events[-1].reason

            # Ana gives hers back: it is not handed straight back to her...
            hers = next(c.id for c in owners if c and c.assignee == "ana")
            await ana.ok("POST", f"/conversations/{hers}/release")
            released = await daemon.hub.storage.conversations.get(hers)
            assert released is not None and str(released.owner) == "queued"
            # ...and the next round offers the oldest hand-off first: the third user's.
            await offer_waiting(daemon.hub)
            third = await daemon.hub.storage.conversations.get(ids[2])
            assert third is not None and third.assignee == "ana"


async def handed_off(daemon: RunningDaemon, http: aiohttp.ClientSession, sender: str) -> int:
    """The user asks for a person; their conversation's id, whoever has it now."""
    await user_says(daemon, http, "operator", sender=sender)
    page = await daemon.hub.storage.conversations.list()
    return next(int(row["id"]) for row in page.items if row["address"] == sender)


async def test_a_conversation_nobody_took_is_alerted_once(database_url: str) -> None:
    received: list[Any] = []

    async def alert(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/alert", alert)
    runner, url = await serve_on_loopback(app)
    try:
        notify = [f"json://{url.removeprefix('http://')}/alert"]
        async with (
            inbox_daemon(database_url, notify=notify, notify_after=0) as daemon,
            aiohttp.ClientSession() as http,
        ):
            queued = await queued_conversation(daemon, http)
            await alert_waiting(daemon.hub)
            await alert_waiting(daemon.hub)
            assert len(received) == 1
            assert f"Conversation {queued}" in received[0]["message"] and received[0]["title"]
    finally:
        await runner.cleanup()
