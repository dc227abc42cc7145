"""The send path end to end: REST API, policy, dispatcher and a fault-injecting
provider cloud, all over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.helpers import AUTH, TOKEN
from wahub.core.clock import Clock
from wahub.core.storage.policy import Template
from wahub.testing import (
    RunningDaemon,
    build_config,
    plugin_manager,
    running_daemon,
    signed_sandbox_webhook,
    wait_until,
)
from wahub.testing import fake_provider as fake_plugin
from wahub.testing.fake_provider import DEFAULT_SECRET, FakeProviderServer

USER = "15557654321"


@dataclass
class Engine:
    daemon: RunningDaemon
    server: FakeProviderServer
    http: aiohttp.ClientSession

    async def inbound(self, text: str, *, sender: str = USER, age: float = 0.0) -> str:
        """The user writes ``text`` (``age`` seconds ago); returns once it is processed."""
        event_id = f"in.{time.monotonic_ns()}"
        event = {
            "type": "message",
            "id": event_id,
            "from": sender,
            "name": "Ana",
            "timestamp": time.time() - age,
            "message": {"type": "text", "text": {"body": text}},
        }
        await self.webhook([event])
        messages = self.daemon.hub.storage.messages

        async def processed() -> bool:
            inbox_depth, _ = await self.daemon.hub.storage.inbox_depth()
            history = await messages.history("fake", sender)
            return inbox_depth == 0 and any(m["provider_message_id"] == event_id for m in history)

        await wait_until(processed, within=30)
        return event_id

    async def webhook(self, events: list[dict[str, Any]]) -> None:
        body, headers = signed_sandbox_webhook(events, secret=DEFAULT_SECRET)
        async with self.http.post(f"{self.daemon.url}/webhooks/fake", data=body, headers=headers) as response:
            assert response.status == 200, await response.text()

    async def send(self, body: dict[str, Any], *, key: str | None = None) -> tuple[int, dict[str, Any]]:
        headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
        async with self.http.post(f"{self.daemon.url}/api/v1/messages", json=body, headers=headers) as response:
            return response.status, await response.json()

    async def message(self, message_id: int) -> dict[str, Any]:
        async with self.http.get(f"{self.daemon.url}/api/v1/messages/{message_id}", headers=AUTH) as response:
            assert response.status == 200
            result: dict[str, Any] = await response.json()
            return result

    async def status_becomes(self, message_id: int, status: str, within: float = 10.0) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            found = await self.message(message_id)
            return found if found["status"] == status else None

        result: dict[str, Any] = await wait_until(reached, within=within)
        return result


def text(body: str, to: str = USER) -> dict[str, Any]:
    return {"to": to, "type": "text", "text": {"body": body}}


def template(name: str, to: str = USER) -> dict[str, Any]:
    return {"to": to, "type": "template", "template": {"name": name, "language": {"code": "en"}}}


async def engine_for(
    database_url: str,
    *,
    config: dict[str, Any] | None = None,
    plugins: tuple[object, ...] = (),
    clock: Clock | None = None,
    **provider: Any,
) -> AsyncIterator[Engine]:
    """A daemon sending through a fake provider; ``config`` adds sections (``policy``, ``router``)."""
    server = await FakeProviderServer().start()
    pm = plugin_manager([fake_plugin, *plugins])
    raw = {**(config or {}), "wahub": {"api_tokens": [TOKEN]}, "providers": [server.provider_entry(**provider)]}
    try:
        async with running_daemon(build_config(raw, database=database_url, pm=pm), pm=pm, clock=clock) as daemon:
            server.attach(daemon.url)
            async with aiohttp.ClientSession() as http:
                yield Engine(daemon, server, http)
    finally:
        await server.close()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Engine]:
    async for running in engine_for(database_url, pair_limit=None):
        yield running


async def test_free_form_outside_the_window_is_refused_until_the_contact_writes(engine: Engine) -> None:
    await engine.inbound("hello", age=25 * 3600)

    status, body = await engine.send(text("Your order shipped"))

    assert status == 422 and body["error"]["code"] == "window_closed"
    assert "25.0 hours ago" in body["error"]["message"]
    assert engine.server.calls == []  # decided before sending

    await engine.inbound("any news?")
    status, body = await engine.send(text("Your order shipped"))
    assert status == 202 and body["status"] == "queued"
    delivered = await engine.status_becomes(body["id"], "delivered")
    assert [s["status"] for s in delivered["statuses"]] == ["sent", "delivered"]
    assert [c.body["text"]["body"] for c in engine.server.accepted()] == ["Your order shipped"]


async def test_stop_and_start_keywords_keep_a_ledger(engine: Engine) -> None:
    await engine.daemon.hub.storage.policy.upsert_template("fake", _approved("order_update", "UTILITY"))

    await engine.inbound("STOP")
    status, body = await engine.send(template("order_update"))
    assert status == 422 and body["error"]["code"] == "opted_out"

    await engine.inbound("Start")
    status, body = await engine.send(template("order_update"))
    assert status == 202
    await engine.status_becomes(body["id"], "delivered")

    await engine.inbound("СТОП!")
    status, body = await engine.send(template("order_update"))
    assert status == 422 and body["error"]["code"] == "opted_out"
    await engine.inbound("старт")

    async with engine.http.get(f"{engine.daemon.url}/api/v1/contacts/fake/{USER}/consent", headers=AUTH) as response:
        ledger = await response.json()
    assert [(e["action"], e["evidence"]["text"], e["source"]) for e in ledger["events"]] == [
        ("opt_out", "STOP", "keyword"),
        ("opt_in", "Start", "keyword"),
        ("opt_out", "СТОП!", "keyword"),
        ("opt_in", "старт", "keyword"),
    ]
    assert ledger["state"]["all"] == "opt_in"

    async def confirmations() -> list[str] | None:
        bodies = [c.body.get("text", {}).get("body", "") for c in engine.server.accepted()]
        replies = [b for b in bodies if "subscri" in b or "подпис" in b]
        return replies if len(replies) == 4 else None

    replies = await wait_until(confirmations)
    assert replies[0].startswith("You are unsubscribed") and replies[2].startswith("Вы отписались")


async def test_a_keyword_is_confirmed_in_the_contacts_language(engine: Engine) -> None:
    await engine.inbound("hello")
    async with engine.http.get(f"{engine.daemon.url}/api/v1/contacts?q={USER}", headers=AUTH) as response:
        (contact,) = (await response.json())["contacts"]
    url = f"{engine.daemon.url}/api/v1/contacts/{contact['id']}"
    async with engine.http.patch(url, json={"language": "pt-BR"}, headers=AUTH) as response:
        assert response.status == 200

    await engine.inbound("STOP")  # an English word, from a contact who speaks Portuguese

    async def confirmation() -> str | None:
        bodies = [c.body.get("text", {}).get("body", "") for c in engine.server.accepted()]
        return next((body for body in bodies if "inscrição" in body or "unsubscribed" in body), None)

    assert (await wait_until(confirmation)).startswith("Sua inscrição foi cancelada")


async def test_marketing_templates_need_an_opt_in(engine: Engine) -> None:
    await engine.daemon.hub.storage.policy.upsert_template("fake", _approved("spring_sale", "MARKETING"))
    await engine.inbound("hi")

    status, body = await engine.send(template("spring_sale"))
    assert status == 422 and body["error"]["code"] == "opt_in_required"

    consent = {"action": "opt_in", "scope": "marketing", "evidence": {"form": "checkout", "checkbox": "Send me offers"}}
    url = f"{engine.daemon.url}/api/v1/contacts/fake/{USER}/consent"
    async with engine.http.post(url, json=consent, headers=AUTH) as response:
        assert response.status == 200 and (await response.json())["state"]["marketing"] == "opt_in"
    status, body = await engine.send(template("spring_sale"))
    assert status == 202

    # Meta's "stop promotions" preference withdraws it again.
    preference = {"type": "preference", "id": "pref-1", "user": USER, "value": "stop", "timestamp": time.time()}
    await engine.webhook([preference])

    async def refused() -> bool:
        status, body = await engine.send(template("spring_sale"))
        return status == 422 and body["error"]["code"] == "opt_in_required"

    await wait_until(refused)


async def test_provider_outage_delays_but_never_loses_or_doubles(database_url: str) -> None:
    async for engine in engine_for(database_url, pair_limit=None):
        for n in range(5):
            await engine.inbound(f"hello {n}", sender=f"1555000000{n}")
        engine.server.fail_for(30)
        ids = []
        for n in range(5):
            status, body = await engine.send(text(f"notice {n}", to=f"1555000000{n}"))
            assert status == 202
            ids.append(body["id"])

        for message_id in ids:
            await engine.status_becomes(message_id, "delivered", within=90)

        assert engine.server.bodies_by_text() == {f"notice {n}": 1 for n in range(5)}
        for n in range(5):
            tries = [c.received_at for c in engine.server.calls if c.body["to"] == f"1555000000{n}"]
            gaps = [b - a for a, b in itertools.pairwise(tries)]
            assert len(tries) >= 4, tries
            # Exponential backoff: each gap longer than the one two before it (jitter spans 2x).
            assert all(later > earlier for earlier, later in zip(gaps, gaps[2:], strict=False)), gaps
            answers = [c.status for c in engine.server.calls if c.body["to"] == f"1555000000{n}"]
            assert answers == [503] * (len(answers) - 1) + [200]


async def test_late_failed_status_fails_the_message_with_its_code(engine: Engine) -> None:
    await engine.inbound("hi")
    engine.server.fail_later[USER] = 131047

    status, body = await engine.send(text("too late?"))

    assert status == 202
    failed = await engine.status_becomes(body["id"], "failed")
    assert failed["error"] == {
        "code": "131047",
        "message": "more than 24 hours have passed since the user last wrote: send an approved template instead",
    }


async def test_a_late_delivered_never_overwrites_read(engine: Engine) -> None:
    engine.server.statuses = False
    await engine.inbound("hi")
    _, body = await engine.send(text("read me"))
    sent = await engine.status_becomes(body["id"], "sent")
    wamid = sent["provider_message_id"]

    def status_event(name: str, at: float) -> dict[str, Any]:
        return {"type": "status", "id": f"{wamid}:{name}", "message_id": wamid, "status": name, "timestamp": at}

    await engine.webhook([status_event("read", time.time())])
    await engine.status_becomes(body["id"], "read")
    await engine.webhook([status_event("delivered", time.time() - 1)])

    async def both_kept() -> dict[str, Any] | None:
        found = await engine.message(body["id"])
        return found if "delivered" in [s["status"] for s in found["statuses"]] else None

    found = await wait_until(both_kept)
    assert found["status"] == "read"
    assert [(s["status"], s["implied"]) for s in found["statuses"]] == [
        ("sent", True),
        ("delivered", False),
        ("read", False),
    ]


async def test_a_delivered_without_sent_shows_an_implied_sent_until_the_real_one_comes(engine: Engine) -> None:
    engine.server.statuses = False
    await engine.inbound("hi")
    _, body = await engine.send(text("where is my sent?"))
    wamid = (await engine.status_becomes(body["id"], "sent"))["provider_message_id"]
    delivered_at = time.time()

    def status_event(name: str, at: float) -> dict[str, Any]:
        return {"type": "status", "id": f"{wamid}:{name}", "message_id": wamid, "status": name, "timestamp": at}

    await engine.webhook([status_event("delivered", delivered_at)])
    found = await engine.status_becomes(body["id"], "delivered")
    assert [(s["status"], s["timestamp"], s["implied"]) for s in found["statuses"]] == [
        ("sent", delivered_at, True),
        ("delivered", delivered_at, False),
    ]

    # The provider's own sent, late and out of order: it takes the implied one's place.
    await engine.webhook([status_event("sent", delivered_at - 2)])

    async def real_sent() -> dict[str, Any] | None:
        found = await engine.message(body["id"])
        return found if not found["statuses"][0]["implied"] else None

    found = await wait_until(real_sent)
    assert found["status"] == "delivered"
    assert [(s["status"], s["timestamp"], s["implied"]) for s in found["statuses"]] == [
        ("sent", delivered_at - 2, False),
        ("delivered", delivered_at, False),
    ]


async def test_refused_credentials_pause_the_provider(engine: Engine) -> None:
    await engine.inbound("hi")
    engine.server.fail_next(1, code=190, status=401, title="Error validating access token")

    status, body = await engine.send(text("anyone there?"))
    assert status == 202

    async def not_ready() -> dict[str, Any] | None:
        async with engine.http.get(f"{engine.daemon.url}/readyz") as response:
            found: dict[str, Any] = await response.json()
            return found if response.status == 503 else None

    readiness = await wait_until(not_ready)
    assert readiness["providers"] == {"fake": False}
    assert readiness["paused"] == ["fake"]
    async with engine.http.get(f"{engine.daemon.url}/api/v1/status", headers=AUTH) as response:
        assert response.status == 200
        assert "code 190" in (await response.json())["providers"]["fake"]["paused"]
    assert (await engine.message(body["id"]))["status"] == "queued"  # kept, not failed


async def test_api_needs_a_token_and_keys_make_retries_safe(engine: Engine) -> None:
    await engine.inbound("hi")
    url = f"{engine.daemon.url}/api/v1/messages"
    async with engine.http.post(url, json=text("x")) as response:
        assert response.status == 401 and (await response.json())["error"]["code"] == "unauthorized"

    first = await engine.send(text("only once"), key="order-42-shipped")
    again = await engine.send(text("only once"), key="order-42-shipped")
    other = await engine.send(text("only once", to="15550000001"), key="order-42-shipped")

    assert first[0] == again[0] == 202 and first[1]["id"] == again[1]["id"]
    assert other[0] == 409 and other[1]["error"]["code"] == "idempotency_conflict"
    await engine.status_becomes(first[1]["id"], "delivered")
    assert engine.server.bodies_by_text()["only once"] == 1

    status, body = await engine.send({"to": USER, "type": "text", "text": {"body": "x" * 4097}})
    assert status == 422 and body["error"]["code"] == "invalid_message" and "text.body" in body["error"]["message"]


async def test_pair_limit_spaces_one_recipients_messages_in_order(database_url: str) -> None:
    async for engine in engine_for(database_url, pair_limit={"burst": 2, "every": 1.5}):
        await engine.inbound("hi")
        ids = [(await engine.send(text(f"part {n}")))[1]["id"] for n in range(4)]
        for message_id in ids:
            await engine.status_becomes(message_id, "delivered", within=20)
        calls = engine.server.accepted()
        assert [c.body["text"]["body"] for c in calls] == [f"part {n}" for n in range(4)]
        # Two at once, then one per 1.5 s (a token bucket: the third may go 1.5 s after the first two).
        start = calls[0].received_at
        assert calls[1].received_at - start < 1.0
        assert calls[2].received_at - start >= 1.45
        assert calls[3].received_at - start >= 2.95


def _approved(name: str, category: str) -> Template:
    return Template(name, "en", category, "APPROVED")
