"""Several providers in one daemon, and a number moved from one provider to
another: the daemon on a real socket, the fake Graph API and the fake Twilio on
others, one SQLite file across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import AUTH, TOKEN
from wahub.testing import build_config, plugin_manager, running_daemon, wait_until
from wahub.testing.fake_graph import FakeGraphServer
from wahub.testing.fake_twilio import FakeTwilio

ANA, BRUNO, CARLA = "16505551234", "14155550100", "447700900123"
ROUTER = {"rules": [{"match": {"keyword": "hi"}, "reply": "Hello from wahub"}]}


def _config(database: str, tmp_path: Path, *entries: dict[str, Any]) -> dict[str, Any]:
    raw = {
        "wahub": {"api_tokens": [TOKEN], "database": database, "media": {"directory": str(tmp_path / "media")}},
        "providers": [{**entry, "pair_limit": None} for entry in entries],
        "router": ROUTER,
    }
    return build_config(raw, database=database, pm=plugin_manager())


def _graph_texts(server: FakeGraphServer) -> list[tuple[str, str]]:
    return [(m["to"], m["text"]["body"]) for m in server.messages if m.get("type") == "text"]


def _twilio_texts(fake: FakeTwilio) -> list[tuple[str, str]]:
    return [(sent.to, sent.text) for sent in fake.sent if sent.kind == "text"]


async def test_one_daemon_answers_each_user_through_the_number_they_wrote_to(sqlite_url: str, tmp_path: Path) -> None:
    meta, twilio = FakeGraphServer(), FakeTwilio()
    await meta.start()
    await twilio.start()
    try:
        config = _config(sqlite_url, tmp_path, meta.provider_entry("meta"), twilio.provider_entry("tw"))
        async with running_daemon(config, pm=plugin_manager()) as daemon:
            meta.attach(daemon.url, "meta")
            twilio.attach(daemon.url, "tw")
            assert await meta.send_inbound({"type": "text", "text": {"body": "hi"}}, wa_id=ANA) == 200
            assert await twilio.send_inbound(BRUNO, "hi", name="tw") == 200

            async def both_answered() -> bool:
                return bool(_graph_texts(meta)) and bool(_twilio_texts(twilio))

            await wait_until(both_answered, within=20)
            await meta.settle()
            await twilio.settle()
        assert _graph_texts(meta) == [(ANA, "Hello from wahub")]
        assert _twilio_texts(twilio) == [(BRUNO, "Hello from wahub")]
    finally:
        await meta.close()
        await twilio.close()


async def test_moving_a_number_from_meta_cloud_to_twilio_keeps_history_consent_and_templates(
    sqlite_url: str, tmp_path: Path
) -> None:
    meta = FakeGraphServer()
    await meta.start()
    try:
        async with running_daemon(_config(sqlite_url, tmp_path, meta.provider_entry("main")), pm=plugin_manager()) as d:
            meta.attach(d.url, "main")
            assert await meta.send_inbound({"type": "text", "text": {"body": "hi"}}, wa_id=ANA) == 200
            assert await meta.send_inbound({"type": "text", "text": {"body": "STOP"}}, wa_id=CARLA) == 200
            await wait_until(lambda: _answered(meta), within=20)
            await meta.settle()
    finally:
        await meta.close()

    twilio = FakeTwilio()
    await twilio.start()
    try:
        content_sid = twilio.content.add("order_ready", "Hi {{1}}, order {{2}} is ready", status="approved")
        config = _config(sqlite_url, tmp_path, twilio.provider_entry("main"))
        async with running_daemon(config, pm=plugin_manager()) as daemon, aiohttp.ClientSession() as http:
            twilio.attach(daemon.url, "main")
            storage = daemon.hub.storage
            # The history written through Meta is the same conversation's.
            before = [row["direction"] for row in await storage.messages.history("main", ANA)]
            assert before[:2] == ["in", "out"]
            # Carla's opt-out holds on the new provider.
            refused = await _send(http, daemon.url, {"to": CARLA, "type": "text", "text": {"body": "sale!"}})
            assert refused["error"]["code"] == "opted_out", refused
            # Ana writes again, now through Twilio, and is answered there.
            assert await twilio.send_inbound(ANA, "hi") == 200
            await wait_until(lambda: _twilio_sent(twilio, "text"), within=20)
            # Templates are the new provider's: synced from its Content API, sent by name.
            await daemon.hub.providers["main"].sync_templates()
            template = {
                "name": "order_ready",
                "language": {"code": "en"},
                "components": [
                    {"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "7"}]}
                ],
            }
            queued = await _send(http, daemon.url, {"to": ANA, "type": "template", "template": template})
            assert "id" in queued, queued
            await wait_until(lambda: _twilio_sent(twilio, "template"), within=20)
            await twilio.settle()
        assert _twilio_texts(twilio) == [(ANA, "Hello from wahub")]
        [sent] = [s for s in twilio.sent if s.kind == "template"]
        assert (sent.to, sent.body["ContentSid"]) == (ANA, content_sid)
        assert [s for s in twilio.sent if s.to == CARLA] == []
    finally:
        await twilio.close()


async def _answered(server: FakeGraphServer) -> bool:
    return (ANA, "Hello from wahub") in _graph_texts(server)


async def _twilio_sent(fake: FakeTwilio, kind: str) -> bool:
    return any(sent.kind == kind for sent in fake.sent)


async def _send(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{url}/api/v1/messages", json=body, headers=AUTH) as response:
        answer: dict[str, Any] = await response.json()
        return answer
