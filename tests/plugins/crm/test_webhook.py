"""The webhook crm: backend: its configuration, the address guard, and its
deliveries over real HTTP to receivers on loopback that verify each request
with the ``standardwebhooks`` library: secret rotation, a receiver down for
ten minutes, 429 with Retry-After, 410, filters, timeouts, redirects, and an
endpoint whose name resolves to a private address."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from wahub.core.errors import ConfigError
from wahub.core.hub import Hub
from wahub.plugins.crm.ssrf import AddressRefused, GuardedResolver, address_refusal, literal_refusal
from wahub.testing import ManualClock, build_config, running_daemon, sandbox_message, wait_until

SECRET = "whsec_" + base64.b64encode(b"wahub-test-key-one-0123456789ab").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"wahub-test-key-two-0123456789ab").decode()
WRONG_SECRET = "whsec_" + base64.b64encode(b"not-the-key-the-hub-signs-with").decode()
ANA, BRUNO = "15551230001", "15551230002"
ROUTER = {"rules": [{"match": {"keyword": "human"}, "handoff": "A person will answer."}], "default_reply": "Got it."}


@dataclass
class Request:
    """One request the receiver got, and what it answered (None: not yet, or never)."""

    body: bytes
    headers: dict[str, str]
    status: int | None = None

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """An event webhook receiver on 127.0.0.1: it verifies each request with
    ``standardwebhooks.Webhook(secret)`` (401 when that fails), answers
    ``status`` (with ``answer_headers``), or never answers while ``hang``."""

    def __init__(self, secret: str = SECRET) -> None:
        self.verifier = Webhook(secret)
        self.requests: list[Request] = []
        self.unverified: list[str] = []
        self.status = 200
        self.answer_headers: dict[str, str] = {}
        self.hang = False
        self._stopping = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._take)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _take(self, request: web.Request) -> web.Response:
        body = await request.read()
        taken = Request(body, dict(request.headers))
        self.requests.append(taken)
        if self.hang:  # until the receiver stops; the sender has long given up by then
            await self._stopping.wait()
            return web.Response(status=503)
        try:
            self.verifier.verify(body, taken.headers)
        except WebhookVerificationError as exc:
            self.unverified.append(str(exc))
            taken.status = 401
            return web.Response(status=401, text=str(exc))
        taken.status = self.status
        return web.Response(status=self.status, headers=self.answer_headers, text="noted")

    def accepted(self) -> list[dict[str, Any]]:
        """The events it answered 2xx, in arrival order, each with its ``webhook-id`` as ``id``."""
        return [
            {"id": taken.id, **json.loads(taken.body)}
            for taken in self.requests
            if taken.status is not None and 200 <= taken.status < 300
        ]

    def tried(self, event_id: str) -> int:
        return sum(taken.id == event_id for taken in self.requests)


def manual_clock() -> ManualClock:
    """A clock standing still a minute ahead of the real time: parts of the
    daemon stamp changes with the real time, and those must be due by it."""
    return ManualClock(time.time() + 60.0)


def webhook_entry(url: str, **extra: Any) -> dict[str, Any]:
    return {"platform": "webhook", "name": "hook", "url": url, "secret": SECRET, "allow_private": True, **extra}


def webhook_config(database_url: str, *entries: dict[str, Any], **raw: Any) -> dict[str, Any]:
    return build_config({"router": ROUTER, "crm": list(entries), **raw}, database=database_url)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = await Receiver().start()
    yield running
    await running.stop()


def problems(raw_entry: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_config({"crm": [raw_entry]}, database="sqlite:///unused.db")
    return [str(problem) for problem in caught.value.problems]


# -- the address guard ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.20", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "carrier-grade NAT (100.64.0.0/10)"),
        ("100.127.255.254", "carrier-grade NAT (100.64.0.0/10)"),
        ("224.0.0.251", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1%2", "link-local"),
        ("fd12:3456::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::", "loopback"),
        ("64:ff9b::a00:1", "private"),
        ("8.8.8.8", None),
        ("100.128.0.1", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_addresses_are_judged_public_or_not(address: str, kind: str | None) -> None:
    assert address_refusal(address) == kind


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("localhost", "loopback"),
        ("LocalHost.", "loopback"),
        ("api.localhost", "loopback"),
        ("127.1", "loopback"),
        ("2130706433", "loopback"),
        ("0x7f.0.0.1", "loopback"),
        ("::ffff:192.168.0.1", "private"),
        ("203.0.113.9", "private"),  # documentation addresses are no endpoint
        ("93.184.215.14", None),
        ("hooks.example.com", None),
    ],
)
def test_hosts_written_as_addresses_are_judged_without_resolving(host: str, kind: str | None) -> None:
    assert literal_refusal(host) == kind


async def test_the_resolver_refuses_a_name_with_any_private_address(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"mixed.example": ["93.184.215.14", "10.0.0.7"], "public.example": ["93.184.215.14", "2606:2800::1"]}
    fake_dns(monkeypatch, answers)
    guard = GuardedResolver(allow_private=False)
    with pytest.raises(AddressRefused) as refused:
        await guard.resolve("mixed.example", 443, family=socket.AF_UNSPEC)
    assert (refused.value.address, refused.value.kind) == ("10.0.0.7", "private")
    assert "mixed.example resolves to 10.0.0.7, a private address" in str(refused.value)
    assert "allow_private: true" in str(refused.value)

    found = await guard.resolve("public.example", 443, family=socket.AF_UNSPEC)
    assert [(item["hostname"], item["host"], item["port"]) for item in found] == [
        ("public.example", "93.184.215.14", 443),
        ("public.example", "2606:2800::1", 443),
    ]
    # Through the system's resolver too: localhost is loopback, in IPv4 and IPv6.
    monkeypatch.undo()
    with pytest.raises(AddressRefused) as refused:
        await guard.resolve("localhost", 80, family=socket.AF_UNSPEC)
    assert refused.value.kind == "loopback"
    with pytest.raises(AddressRefused):
        await guard.resolve("::ffff:127.0.0.1", 80, family=socket.AF_INET6)
    allowed = await GuardedResolver(allow_private=True).resolve("localhost", 80, family=socket.AF_INET)
    assert [item["host"] for item in allowed] == ["127.0.0.1"]


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """Answer ``answers``' names as a DNS server would (the rest as the system does)."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            return await real(host, port, *args, **kwargs)
        found = []
        for address in answers[host]:
            if ":" in address:
                found.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port), 0, 0)))
            else:
                found.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port))))
        return found

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


# -- configuration -------------------------------------------------------------------


def test_an_endpoint_written_as_a_private_address_needs_allow_private() -> None:
    for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::ffff:10.0.0.1]/x", "http://[::1]/"):
        found = problems({"platform": "webhook", "name": "hook", "url": url + "?token=abc", "secret": SECRET})
        assert len(found) == 1, found
        assert "crm[0].url" in found[0] and "allow_private: true" in found[0], found
        assert "token=abc" not in found[0]
    allowed = build_config({"crm": [webhook_entry("http://127.0.0.1:8080/hook")]}, database="sqlite:///unused.db")
    entry = allowed["crm"][0]
    assert (entry["secret"], entry["timeout"], entry["headers"]) == ([SECRET], 15, {})


def test_bad_urls_secrets_and_headers_are_named_without_printing_the_secret() -> None:
    short_key = "whsec_" + base64.b64encode(b"eight by").decode()
    not_base64 = "whsec_this-is-not*base64"
    found = problems(
        {
            "platform": "webhook",
            "name": "hook",
            "url": "ftp://hooks.example.com/x",
            "secret": [SECRET, short_key, not_base64, "plain-text-password"],
            "headers": {"Webhook-Signature": "forged", "X-Api-Key": "k1"},
        }
    )
    text = "\n".join(found)
    assert "crm[0].url: expected an http:// or https:// URL" in text
    assert "crm[0].secret[1]: the key is 8 bytes once decoded; a Standard Webhooks key is 24 to 64 bytes" in text
    assert "crm[0].secret[2]: the part after whsec_ is not base64" in text
    assert "crm[0].secret[3]: a secret starts with whsec_" in text
    assert "crm[0].headers.Webhook-Signature: Webhook-Signature is written by wahub itself" in text
    for secret in (SECRET, short_key, not_base64, "plain-text-password", "this-is-not"):
        assert secret not in text
    missing = problems({"platform": "webhook", "name": "hook"})
    assert any("required key 'url' is missing" in line for line in missing)
    assert any("required key 'secret' is missing" in line for line in missing)
    credentials = problems(webhook_entry("https://user:pw@hooks.example.com/x"))
    assert "send them as a header instead" in credentials[0] and "pw@" not in credentials[0]


# -- deliveries -----------------------------------------------------------------------


async def test_every_secret_signs_so_a_receiver_knowing_either_verifies(database_url: str, receiver: Receiver) -> None:
    config = webhook_config(database_url, webhook_entry(receiver.url, secret=[SECRET, OTHER_SECRET]))
    async with running_daemon(config) as daemon:
        await daemon.post_sandbox([sandbox_message("hello", sender=ANA)])
        await wait_until(lambda: _accepted_types(receiver, ["message.received", "message.sent"]))
    first = receiver.requests[0]
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["webhook-id"].startswith("evt_")
    for secret in (SECRET, OTHER_SECRET):
        event = Webhook(secret).verify(first.body, first.headers)
        assert (event["type"], event["data"]["message"]["text"]) == ("message.received", "hello")
    with pytest.raises(WebhookVerificationError):
        Webhook(WRONG_SECRET).verify(first.body, first.headers)
    assert receiver.unverified == []


async def test_a_receiver_down_ten_minutes_gets_every_event_once_in_order(
    database_url: str, receiver: Receiver
) -> None:
    clock = manual_clock()
    receiver.status = 503
    async with running_daemon(webhook_config(database_url, webhook_entry(receiver.url)), clock=clock) as daemon:
        hub = daemon.hub
        for sender, text in ((ANA, "a1"), (BRUNO, "b1"), (ANA, "a2"), (BRUNO, "b2")):
            await daemon.post_sandbox([sandbox_message(text, sender=sender)])
            await wait_until(lambda sender=sender: _replied(hub, sender))
        # Down: the first attempt, then the retries 5 s and 5 min later, all answered 503.
        await wait_until(lambda: _heads_attempted(hub, 1))
        for attempts, step in ((2, 6.0), (3, 340.0)):
            clock.advance(step)
            await wait_until(lambda attempts=attempts: _heads_attempted(hub, attempts))
        clock.advance(300.0)  # ten minutes since the first attempt: it comes back
        receiver.status = 200
        clock.advance(1900.0)  # past the next retry (30 min)
        await wait_until(lambda: _pending_is(hub, 0), within=20)
        expected = await _all_deliveries(hub)
    accepted = receiver.accepted()
    assert Counter(event["id"] for event in accepted) == Counter(event_id for event_id, _ in expected)
    for contact_id in {contact for _, contact in expected}:
        in_order = [event_id for event_id, contact in expected if contact == contact_id]
        arrived = [event["id"] for event in accepted if event["data"]["contact"]["id"] == contact_id]
        assert arrived == in_order
    texts = [event["data"]["message"]["text"] for event in accepted if event["type"] == "message.received"]
    assert sorted(texts) == ["a1", "a2", "b1", "b2"]
    assert any(taken.status == 503 for taken in receiver.requests)
    assert receiver.unverified == []


async def test_429_with_retry_after_waits_that_long(database_url: str, receiver: Receiver) -> None:
    clock = manual_clock()
    receiver.status, receiver.answer_headers = 429, {"Retry-After": "120"}
    async with running_daemon(webhook_config(database_url, webhook_entry(receiver.url)), clock=clock) as daemon:
        hub = daemon.hub
        await daemon.post_sandbox([sandbox_message("hello", sender=ANA)])
        await wait_until(lambda: _heads_attempted(hub, 1))
        receiver.status, receiver.answer_headers = 200, {}
        head = await _head(hub, ANA)
        assert head["last_status"] == 429 and "answered 429" in head["last_error"]
        assert head["next_attempt_at"] >= clock.time() + 120 - 0.001
        # 119 s on (far past the 5 s of the schedule), another contact's events go, Ana's wait.
        clock.advance(119.0)
        await daemon.post_sandbox([sandbox_message("hello", sender=BRUNO)])
        await wait_until(lambda: _accepted_types(receiver, ["message.received", "message.sent"]))
        again = await hub.storage.deliveries.get(head["id"])
        assert again is not None and (again["attempts"], again["lease_until"]) == (1, None)
        assert receiver.tried(head["event_id"]) == 1
        clock.advance(2.0)
        await wait_until(lambda: _pending_is(hub, 0))
    assert receiver.tried(head["event_id"]) == 2


async def test_410_disables_the_entry_until_it_is_enabled(database_url: str, receiver: Receiver) -> None:
    clock = manual_clock()
    witness = await Receiver().start()
    receiver.status = 410
    entries = (webhook_entry(receiver.url), webhook_entry(witness.url, name="witness"))
    try:
        async with running_daemon(webhook_config(database_url, *entries), clock=clock) as daemon:
            hub = daemon.hub
            await daemon.post_sandbox([sandbox_message("hello", sender=ANA)])
            await wait_until(lambda: hub.storage.deliveries.disabled("hook"))
            disabled = await hub.storage.deliveries.disabled("hook")
            assert disabled is not None and "answered 410 Gone" in disabled[1]
            tried = len(receiver.requests)
            # Nothing more is attempted, however much time passes and whatever happens.
            clock.advance(86400.0)
            await daemon.post_sandbox([sandbox_message("still there?", sender=BRUNO)])
            await wait_until(lambda: _accepted_texts(witness, {"hello", "still there?"}))
            assert len(receiver.requests) == tried
            receiver.status = 200
            assert await hub.storage.deliveries.enable("hook", now=clock.time())
            await wait_until(lambda: _pending_is(hub, 0, endpoint="hook"))
            held = [event_id for event_id, _ in await _all_deliveries(hub, endpoint="hook")]
    finally:
        await witness.stop()
    assert sorted(event["id"] for event in receiver.accepted()) == sorted(held)
    assert {event["data"]["message"]["text"] for event in receiver.accepted()} >= {"hello", "still there?"}


async def test_an_events_filter_takes_only_the_types_it_names(database_url: str, receiver: Receiver) -> None:
    everything = await Receiver().start()
    entries = (webhook_entry(receiver.url, events=["message.*"]), webhook_entry(everything.url, name="all"))
    try:
        async with running_daemon(webhook_config(database_url, *entries)) as daemon:
            await daemon.post_sandbox([sandbox_message("human please", sender=ANA)])
            await wait_until(lambda: _has_type(everything, "conversation.queued"))
            await daemon.post_sandbox([sandbox_message("last words", sender=ANA)])
            # Ana's events reach each entry in order, so the last message ends what the filter took.
            await wait_until(lambda: _accepted_texts(receiver, {"human please", "last words"}))
    finally:
        await everything.stop()
    assert {event["type"] for event in everything.accepted()} >= {"message.received", "conversation.queued"}
    assert {event["type"] for event in receiver.accepted()} <= {"message.received", "message.sent", "message.status"}
    assert "message.sent" in {event["type"] for event in receiver.accepted()}


async def test_a_receiver_that_never_answers_times_out_and_is_retried(database_url: str, receiver: Receiver) -> None:
    clock = manual_clock()
    receiver.hang = True
    config = webhook_config(database_url, webhook_entry(receiver.url, timeout=1))
    async with running_daemon(config, clock=clock) as daemon:
        hub = daemon.hub
        await daemon.post_sandbox([sandbox_message("hello", sender=ANA)])
        await wait_until(lambda: _heads_attempted(hub, 1))
        head = await _head(hub, ANA)
        # Whichever gave up first, the backend's own timeout or the deliverer's, says so.
        assert "within 1 s" in head["last_error"], head["last_error"]
        receiver.hang = False
        clock.advance(6.0)
        await wait_until(lambda: _pending_is(hub, 0))
    assert receiver.tried(head["event_id"]) == 2


async def test_a_redirect_is_not_followed_and_is_retried(database_url: str, receiver: Receiver) -> None:
    clock = manual_clock()
    receiver.status, receiver.answer_headers = 302, {"Location": "http://127.0.0.1:9/elsewhere?key=secret"}
    async with running_daemon(webhook_config(database_url, webhook_entry(receiver.url)), clock=clock) as daemon:
        hub = daemon.hub
        await daemon.post_sandbox([sandbox_message("hello", sender=ANA)])
        await wait_until(lambda: _heads_attempted(hub, 1))
        head = await _head(hub, ANA)
        assert (
            "answered 302, a redirect to http://127.0.0.1:9/elsewhere: redirects are not followed"
            in (head["last_error"])
        )
        assert head["state"] == "pending" and head["last_status"] == 302
        receiver.status, receiver.answer_headers = 200, {}
        clock.advance(6.0)
        await wait_until(lambda: _pending_is(hub, 0))
    assert [taken.status for taken in receiver.requests if taken.id == head["event_id"]] == [302, 200]


async def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(
    database_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wahub.plugins.crm.webhook")
    clock = manual_clock()
    fake_dns(monkeypatch, {"events.example": ["127.0.0.1"]})
    url = receiver.url.replace("127.0.0.1", "events.example")
    entries = (
        webhook_entry(url, allow_private=False),
        webhook_entry(url, name="inside", allow_private=True),
    )
    async with running_daemon(webhook_config(database_url, *entries), clock=clock) as daemon:
        hub = daemon.hub
        await daemon.post_sandbox([sandbox_message("hello", sender=ANA)])
        await wait_until(lambda: _accepted_types(receiver, ["message.received", "message.sent"]))
        await wait_until(lambda: _heads_attempted(hub, 1, endpoint="hook"))
        head = await _head(hub, ANA, endpoint="hook")
    assert head["state"] == "pending" and head["next_attempt_at"] > clock.time()
    assert "events.example resolves to 127.0.0.1, a loopback address" in head["last_error"]
    assert any("events.example resolves to 127.0.0.1" in record.getMessage() for record in caplog.records)
    # The entry that allows it connected to the address its name resolved to.
    assert {taken.headers["Host"] for taken in receiver.requests} == {url.split("/")[2]}


# -- helpers ---------------------------------------------------------------------------


async def _accepted_types(receiver: Receiver, wanted: list[str]) -> bool:
    await asyncio.sleep(0)
    return [event["type"] for event in receiver.accepted()][: len(wanted)] == wanted


async def _accepted_texts(receiver: Receiver, texts: set[str]) -> bool:
    await asyncio.sleep(0)
    got = {event["data"]["message"]["text"] for event in receiver.accepted() if event["type"] == "message.received"}
    return texts <= got


async def _has_type(receiver: Receiver, event_type: str) -> bool:
    await asyncio.sleep(0)
    return any(event["type"] == event_type for event in receiver.accepted())


async def _replied(hub: Hub, sender: str) -> bool:
    history = await hub.storage.messages.history("sandbox", sender)
    return bool(history) and (history[-1]["direction"], history[-1]["status"]) == ("out", "sent")


async def _all_deliveries(hub: Hub, endpoint: str = "hook") -> list[tuple[str, int]]:
    """Every delivery of ``endpoint`` as (event id, contact id), oldest first."""
    rows, _ = await hub.storage.deliveries.listing(endpoint=endpoint, limit=500)
    return [(row["event_id"], row["contact_id"]) for row in reversed(rows)]


async def _heads_attempted(hub: Hub, attempts: int, endpoint: str = "hook") -> bool:
    """Every contact's oldest pending delivery was tried ``attempts`` times (or more)."""
    rows, _ = await hub.storage.deliveries.listing(endpoint=endpoint, state="pending", limit=500)
    heads: dict[int, dict[str, Any]] = {}
    for row in rows:  # newest first: the last one kept per contact is its oldest
        heads[row["contact_id"]] = row
    return bool(heads) and all(row["attempts"] >= attempts for row in heads.values())


async def _head(hub: Hub, sender: str, endpoint: str = "hook") -> dict[str, Any]:
    """The oldest pending delivery of ``sender``'s contact."""
    contact = (await hub.storage.messages.history("sandbox", sender))[0]["contact_id"]
    rows, _ = await hub.storage.deliveries.listing(endpoint=endpoint, state="pending", contact_id=contact, limit=500)
    found = await hub.storage.deliveries.get(rows[-1]["id"])
    assert found is not None
    return found


async def _pending_is(hub: Hub, count: int, endpoint: str = "hook") -> bool:
    rows, _ = await hub.storage.deliveries.listing(endpoint=endpoint, state="pending", limit=500)
    return len(rows) == count and bool(await _all_deliveries(hub, endpoint))
