"""The inbox's JSON API over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.plugins.inbox.kit import desk, inbox_daemon, queued_conversation, user_says
from wahub.testing import ManualClock


async def test_sections_search_and_the_conversation_pane(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, aiohttp.ClientSession() as http:
        ana = await desk(daemon, http, "ana")
        queued = await queued_conversation(daemon, http)
        await user_says(daemon, http, "hello there", sender="15557654321")
        me = await ana.ok("GET", "/me")
        assert me["operator"] == {"name": "ana", "admin": False} and me["operators"] == ["ana"]
        assert me["canned_replies"] == [{"title": "Thanks", "text": "Thank you!"}]
        sections = (await ana.ok("GET", "/conversations"))["sections"]
        assert [i["id"] for i in sections["queued"]] == [queued]
        [listed] = sections["queued"]
        assert listed["contact"]["address"] == "15551234567" and listed["unread"] >= 1
        assert listed["window"]["open"] is True and listed["last"]["direction"] == "out"
        found = (await ana.ok("GET", "/conversations?q=hello"))["sections"]
        assert [i["contact"]["address"] for s in found.values() for i in s] == ["15557654321"]
        only = (await ana.ok("GET", "/conversations?section=queued"))["sections"]
        assert only["resolved"] == [] and len(only["queued"]) == 1
        pane = await ana.ok("GET", f"/conversations/{queued}")
        kinds = [(e["kind"], e.get("direction") or e.get("change")) for e in pane["timeline"]]
        assert ("message", "in") in kinds and ("event", "queued") in kinds
        assert pane["contact"]["consent"]["state"] == "unknown"
        assert pane["composer"]["can_reply"] is False and "take" in pane["composer"]["why_not"]
        [template] = pane["composer"]["templates"]
        assert template["name"] == "order_ready" and template["parameters"] == ["1", "2"]
        assert (await ana.call("GET", "/conversations/999999"))[0] == 404


async def test_take_reply_note_read_release_resolve(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, aiohttp.ClientSession() as http:
        ana, bob = await desk(daemon, http, "ana"), await desk(daemon, http, "bob")
        queued = await queued_conversation(daemon, http)
        one = f"/conversations/{queued}"
        status, refused = await bob.call("POST", f"{one}/messages", {"text": "hi"})
        assert status == 403 and refused["error"]["code"] == "not_yours"
        taken = await ana.ok("POST", f"{one}/take")
        assert taken["conversation"]["section"] == "mine" and taken["conversation"]["assignee"] == "ana"
        status, refused = await bob.call("POST", f"{one}/messages", {"text": "hi"})
        assert status == 403 and refused["error"]["code"] == "not_yours"
        pane = await ana.ok("GET", one)
        assert pane["composer"]["can_reply"] is True and pane["composer"]["why_not"] is None
        inbound = next(e for e in pane["timeline"] if e["kind"] == "message" and e["direction"] == "in")
        sent = await ana.ok("POST", f"{one}/messages", {"text": "Hi, Ana here", "client_id": "c1"}, expect=202)
        assert sent["kind"] == "message" and sent["message"]["text"]["body"] == "Hi, Ana here"
        again = await ana.ok("POST", f"{one}/messages", {"text": "Hi, Ana here", "client_id": "c1"}, expect=202)
        assert again["id"] == sent["id"]  # a retry never sends twice
        quoted = await ana.ok("POST", f"{one}/messages", {"text": "about this", "reply_to": inbound["id"]}, expect=202)
        assert quoted["reply_to"] == inbound["provider_message_id"]
        template = {"name": "order_ready", "language": "en", "parameters": ["Ana", "42"]}
        await ana.ok("POST", f"{one}/messages", {"template": template}, expect=202)
        note = await ana.ok("POST", f"{one}/notes", {"text": "asked about her order"}, expect=201)
        assert note["kind"] == "note" and note["author"] == "ana"
        read = await ana.ok("POST", f"{one}/read", {"message_id": inbound["id"]})
        assert read["conversation"]["unread"] == 0
        timeline = (await ana.ok("GET", one))["timeline"]
        assert [e["text"] for e in timeline if e["kind"] == "note"] == ["asked about her order"]
        outbound = [e for e in timeline if e["kind"] == "message" and e["direction"] == "out"]
        assert [e["origin"] for e in outbound[-3:]] == ["reply", "reply", "reply"]
        assert (await bob.call("POST", f"{one}/release"))[0] == 403
        released = await ana.ok("POST", f"{one}/release")
        assert released["conversation"]["section"] == "queued"
        resolved = await bob.ok("POST", f"{one}/resolve")
        assert resolved["conversation"]["section"] == "resolved" and resolved["conversation"]["owner"] == "bot"
        given = await bob.ok("POST", f"{one}/assign", {"operator": "ana"})
        assert given["conversation"]["assignee"] == "ana"
        status, unknown = await bob.call("POST", f"{one}/assign", {"operator": "nobody"})
        assert status == 422 and unknown["error"]["code"] == "unknown_operator"


async def test_two_operators_taking_at_once_one_gets_it(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, aiohttp.ClientSession() as http:
        ana, bob = await desk(daemon, http, "ana"), await desk(daemon, http, "bob")
        queued = await queued_conversation(daemon, http)
        answers = await asyncio.gather(
            ana.call("POST", f"/conversations/{queued}/take"), bob.call("POST", f"/conversations/{queued}/take")
        )
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200, 409]
        winner = next(body for status, body in answers if status == 200)["conversation"]["assignee"]
        conflict = next(body for status, body in answers if status == 409)["error"]
        assert conflict["code"] == "owner_conflict" and conflict["assignee"] == winner
        assert winner in conflict["message"]
        events = await daemon.hub.storage.conversations.events(queued)
        assert [e.change for e in events].count("assigned") == 1


async def test_attachment_contact_edit_and_media(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, aiohttp.ClientSession() as http:
        ana = await desk(daemon, http, "ana")
        queued = await queued_conversation(daemon, http)
        await ana.ok("POST", f"/conversations/{queued}/take")
        form = aiohttp.FormData()
        form.add_field("file", b"%PDF-1.4 menu", filename="menu.pdf", content_type="application/pdf")
        async with http.post(f"{daemon.url}/inbox/api/media", data=form, headers=ana.headers) as answer:
            assert answer.status == 201, await answer.text()
            uploaded = await answer.json()
        assert uploaded["id"].startswith("wahub:") and uploaded["filename"] == "menu.pdf"
        async with http.get(f"{daemon.url}{uploaded['url']}", headers=ana.headers) as file:
            assert file.status == 200 and await file.read() == b"%PDF-1.4 menu"
        async with http.get(f"{daemon.url}{uploaded['url']}") as anonymous:
            assert anonymous.status == 401
        # The sandbox shows text only: the attachment is refused, saying why.
        body = {"media": uploaded["id"], "caption": "our menu"}
        status, refused = await ana.call("POST", f"/conversations/{queued}/messages", body)
        assert status == 422 and refused["error"]["code"] == "invalid_message"
        assert "not supported by this provider" in refused["error"]["message"]
        status, refused = await ana.call("POST", f"/conversations/{queued}/messages", {"media": "wahub:nope"})
        assert status == 422 and "POST /inbox/api/media" in refused["error"]["message"]
        pane = await ana.ok("GET", f"/conversations/{queued}")
        contact_id = pane["contact"]["id"]
        edited = await ana.ok("PATCH", f"/contacts/{contact_id}", {"language": "pt-BR", "tags": ["vip", "vip"]})
        assert edited["contact"]["language"] == "pt-BR" and edited["contact"]["tags"] == ["vip"]
        status, wrong = await ana.call("PATCH", f"/contacts/{contact_id}", {"language": "not a language"})
        assert status == 422 and "language" in wrong["error"]["message"]
        status, wrong = await ana.call("PATCH", f"/contacts/{contact_id}", {"name": "x"})
        assert status == 422
        pane = await ana.ok("GET", f"/conversations/{queued}")
        assert pane["composer"]["canned_replies"] == [{"title": "Thanks", "text": "Obrigado!"}]


async def test_stored_files_never_run_as_pages_or_scripts(database_url: str) -> None:
    """An uploaded script or HTML page is only ever downloaded; pictures show inline."""
    async with inbox_daemon(database_url) as daemon, aiohttp.ClientSession() as http:
        ana = await desk(daemon, http, "ana")
        served = {}
        for filename, mime_type in (("x.js", "application/javascript"), (None, "text/html"), ("p.png", "image/png")):
            form = aiohttp.MultipartWriter("form-data")
            part = form.append(b"<script>window.__pwned=1</script>", {"Content-Type": mime_type})
            # A hand-written body may leave the file name out.
            part.set_content_disposition("form-data", name="file", **({"filename": filename} if filename else {}))
            async with http.post(f"{daemon.url}/inbox/api/media", data=form, headers=ana.headers) as answer:
                assert answer.status == 201, await answer.text()
                url = (await answer.json())["url"]
            async with http.get(f"{daemon.url}{url}", headers=ana.headers) as file:
                served[mime_type] = file.headers
        for hostile in ("application/javascript", "text/html"):
            headers = served[hostile]
            assert headers["Content-Type"] == "application/octet-stream"
            assert headers["Content-Disposition"].startswith("attachment")
            assert headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
            assert headers["X-Content-Type-Options"] == "nosniff"
        assert served["image/png"]["Content-Type"] == "image/png"
        assert served["image/png"]["Content-Disposition"].startswith("inline")


async def test_closed_window_allows_templates_only(database_url: str) -> None:
    clock = ManualClock(time.time())
    async with inbox_daemon(database_url, clock=clock) as daemon, aiohttp.ClientSession() as http:
        ana = await desk(daemon, http, "ana")
        queued = await queued_conversation(daemon, http)
        await ana.ok("POST", f"/conversations/{queued}/take")
        clock.advance(25 * 3600)
        composer = (await ana.ok("GET", f"/conversations/{queued}"))["composer"]
        assert composer["window"]["open"] is False and composer["can_reply"] is True
        assert "window" in composer["why_not"]
        status, refused = await ana.call("POST", f"/conversations/{queued}/messages", {"text": "still there?"})
        assert status == 422 and refused["error"]["code"] == "window_closed"
        template = {"name": "order_ready", "language": "en", "parameters": ["Ana", "42"]}
        sent = await ana.ok("POST", f"/conversations/{queued}/messages", {"template": template}, expect=202)
        assert sent["type"] == "template" and sent["origin"] == "business"
