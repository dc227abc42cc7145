"""The operator inbox as people use it: the real daemon, operators signed in
through the real form in headless Chromium (a browser context each), and the
WhatsApp user on the sandbox chat page, on SQLite and PostgreSQL.

user page -> sandbox -> router hands over on "operator" -> inbox pages (live)
-> an operator answers -> sandbox -> user page, receipts -> ticks.
"""

from __future__ import annotations

import asyncio
import functools
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from tests.e2e.conftest import chromium
from tests.plugins.inbox.kit import TEMPLATE
from wahub.plugins.inbox.live import live_of
from wahub.plugins.inbox.passwords import Passwords
from wahub.testing import TEST_SECRET, RunningDaemon, build_config, running_daemon, sandbox_message, wait_until
from wahub.testing import signed_sandbox_webhook as signed

try:
    from playwright.async_api import Browser, Page, expect
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    Browser = Page = Any  # type: ignore[misc,assignment]
else:
    expect.set_options(timeout=10_000)

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
USER = "15551234567"
BOT_ANSWER = "Hello from the bot!"
HOSTILE = '<img src=x onerror="window.__pwned=1">'
SHOTS = Path("/tmp/inbox-shots")
# Refusals the tests cause on purpose, and the socket failing while the page is offline.
EXPECTED_CONSOLE = re.compile(
    r"^Failed to load resource: (the server responded with a status of (401|403|409|422|429)\b"
    r"|net::ERR_INTERNET_DISCONNECTED)"
    r"|^WebSocket connection to '.*/inbox/ws.*' failed"
)


# ---- the daemon --------------------------------------------------------------


def acceptance_config(database_url: str, media: Path) -> dict[str, Any]:
    sandbox = {
        "platform": "sandbox",
        "name": "sandbox",
        "secret": TEST_SECRET,
        "delivered_after": 0.3,
        "read_after": 1.0,
        "templates": [TEMPLATE],
    }
    raw = {
        "wahub": {"media": {"directory": str(media)}},
        "providers": [sandbox],
        "router": {
            "rules": [
                {"match": {"keyword": ["operator"]}, "handoff": "A person will answer."},
                {"match": {"keyword": ["hi"]}, "reply": BOT_ANSWER},
            ]
        },
        "inbox": {"sign_in": {"slow_after": 10}},
    }
    return build_config(raw, database=database_url)


@pytest.fixture
async def daemon(database_url: str, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(acceptance_config(database_url, tmp_path / "media")) as running:
        yield running


@functools.cache
def password_hash() -> str:
    """PASSWORD hashed once for every operator of the file: argon2id is slow on purpose."""
    return Passwords().hash(PASSWORD)


async def add_operator(daemon: RunningDaemon, name: str, *, admin: bool = False) -> None:
    assert await daemon.hub.storage.operators.add(name, password_hash(), admin=admin, now=time.time())


async def post_events(daemon: RunningDaemon, events: list[dict[str, Any]]) -> None:
    """What a user's phone sends, as a signed sandbox webhook."""
    body, headers = signed(events)
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as answer,
    ):
        assert answer.status == 200, await answer.text()


async def execute(daemon: RunningDaemon, statement: str, **values: Any) -> None:
    async with daemon.hub.storage.engine.begin() as conn:
        await conn.execute(sa.text(statement), values)


def picture() -> bytes:
    """A 96x64 PNG (a green and blue gradient), made here so nothing is fetched."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    width, height = 96, 64
    rows = b"".join(b"\x00" + b"".join(bytes((37, 120 + x, 80 + 2 * y)) for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# ---- the browser -------------------------------------------------------------


@dataclass
class Browsers:
    """One headless Chromium; each page in a context of its own (its own cookies)."""

    browser: Browser
    daemon: RunningDaemon
    errors: list[str] = field(default_factory=list)

    async def page(self, *, user: str | None = None) -> Page:
        context = await self.browser.new_context(timezone_id="UTC", viewport={"width": 1280, "height": 800})
        if user is not None:
            # The sandbox page keeps who the user is in localStorage.
            script = f"localStorage.setItem('wahub.sandbox.user', '{user}');"
            await context.add_init_script(script + "localStorage.setItem('wahub.sandbox.name', 'Ana');")
        page = await context.new_page()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"{message.text} at {message.location['url']}") if message.type == "error" else None
            ),
        )
        return page

    async def operator(self, name: str) -> Page:
        """A page of operator ``name``, signed in through the form, the inbox live."""
        page = await self.page()
        await sign_in(page, self.daemon, name)
        await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
        return page

    async def user(self, number: str = USER) -> Page:
        """The WhatsApp user's chat page."""
        page = await self.page(user=number)
        await page.goto(f"{self.daemon.url}/sandbox")
        await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
        return page


@pytest.fixture
async def browsers(daemon: RunningDaemon) -> AsyncIterator[Browsers]:
    async with chromium() as browser:
        made = Browsers(browser, daemon)
        yield made
    assert [error for error in made.errors if not EXPECTED_CONSOLE.search(error)] == []


async def sign_in(page: Page, daemon: RunningDaemon, name: str, password: str = PASSWORD) -> None:
    await page.goto(f"{daemon.url}/inbox/login")
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def say(page: Page, text: str) -> None:
    """The user types ``text`` and sends it; returns once the sandbox accepted it."""
    composer = page.get_by_label("Message")
    await composer.fill(text)
    await composer.press("Enter")
    await expect(bubble(page, "in", text).last).to_have_attribute("data-id", re.compile(r"^sbx\.in\."))


def bubble(page: Page, direction: str, text: str) -> Any:
    """A message on the sandbox chat page."""
    return page.locator(f'li.msg[data-direction="{direction}"]').filter(has_text=text)


def row(page: Page, conversation_id: int) -> Any:
    """A conversation in the inbox list."""
    return page.locator(f'li.conv[data-id="{conversation_id}"]')


def timeline_message(page: Page, text: str) -> Any:
    return page.locator("#timeline li.msg").filter(has_text=text)


async def open_conversation(page: Page, conversation_id: int) -> None:
    await row(page, conversation_id).get_by_role("button").click()
    await expect(page.locator("body")).to_have_attribute("data-open", str(conversation_id))


async def conversation_of(daemon: RunningDaemon, address: str = USER) -> int:
    """The id of the conversation with ``address``, once its first message is handled."""

    async def found() -> int | None:
        listed = await daemon.hub.storage.conversations.list(limit=100)
        return next((int(item["id"]) for item in listed.items if item["address"] == address), None)

    conversation_id: int = await wait_until(found)
    return conversation_id


async def api_get(page: Page, path: str) -> Any:
    """A GET of the inbox API with this page's session, as the page makes it."""
    answer = await page.request.get(f"{page.url.split('/inbox')[0]}/inbox/api{path}")
    assert answer.ok, (answer.status, await answer.text())
    return await answer.json()


async def fetched(page: Page, path: str, *, at_least: int) -> bool:
    """Whether the page has had ``at_least`` answers to requests for ``path``."""
    script = (
        "(path) => performance.getEntriesByType('resource').filter((e) => new URL(e.name).pathname === path).length"
    )
    count: int = await page.evaluate(script, path)
    return count >= at_least


async def shoot(page: Page, name: str) -> None:
    await asyncio.to_thread(SHOTS.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"accept-{name}.png"))


async def handed_over(browsers: Browsers, user: Page, *operators: Page) -> int:
    """The user asks for a person; the conversation is queued on every operator's page."""
    await say(user, "operator")
    conversation_id = await conversation_of(browsers.daemon)
    for page in operators:
        await expect(row(page, conversation_id)).to_have_attribute("data-section", "queued")
    return conversation_id


async def taken_by(page: Page, conversation_id: int) -> None:
    await open_conversation(page, conversation_id)
    await page.locator("#action-take").click()
    await expect(row(page, conversation_id)).to_have_attribute("data-section", "mine")


# ---- 1. two operators, one conversation (and the list, on screen) --------------------------------------


async def test_two_operators_see_the_message_and_only_one_gets_it(daemon: RunningDaemon, browsers: Browsers) -> None:
    await add_operator(daemon, "ana")
    await add_operator(daemon, "bo")
    ana, bo = await browsers.operator("ana"), await browsers.operator("bo")
    user = await browsers.user()

    first = await handed_over(browsers, user, ana, bo)
    await say(user, "my parcel is late")
    for page in (ana, bo):
        await expect(row(page, first).locator(".conv__preview")).to_have_text("my parcel is late")

    # Ana takes it; Bo sees whose it is, in the list and in the conversation.
    await open_conversation(bo, first)
    await taken_by(ana, first)
    await expect(row(bo, first)).to_have_attribute("data-section", "open")
    await expect(row(bo, first).locator(".conv__owner")).to_have_text("ana")
    await expect(bo.locator("#conv-state")).to_contain_text("assigned to ana")
    await expect(bo.locator("#blocked-text")).to_have_text("ana has this conversation.")

    # Another user's conversation, taken by both at the same moment: one of them has it.
    await post_events(daemon, [sandbox_message("operator", sender="15557654321", name="Ben")])
    second = await conversation_of(daemon, "15557654321")
    for page in (ana, bo):
        await open_conversation(page, second)
        await expect(page.locator("#action-take")).to_be_visible()
    await asyncio.gather(ana.locator("#action-take").click(), bo.locator("#action-take").click())

    pane = await api_get(ana, f"/conversations/{second}")
    assigned = [e for e in pane["timeline"] if e["kind"] == "event" and e["to"] == "assigned"]
    assert len(assigned) == 1, pane["timeline"]
    owner = pane["conversation"]["assignee"]
    assert pane["conversation"]["owner"] == "assigned" and owner in ("ana", "bo")
    winner, loser = (ana, bo) if owner == "ana" else (bo, ana)
    await expect(row(winner, second)).to_have_attribute("data-section", "mine")
    await expect(loser.locator("#action-error")).to_have_text(f"conversation {second} cannot be taken: {owner} has it")
    await expect(loser.locator("#conv-state")).to_contain_text(f"assigned to {owner}")
    await expect(row(loser, second).locator(".conv__owner")).to_have_text(owner)

    await post_events(daemon, [sandbox_message("where is my order?", sender="15550002222", name="Carla")])
    await post_events(daemon, [sandbox_message("operator", sender="15550002222", name="Carla")])
    await expect(loser.locator("li.conv")).to_have_count(3)
    await shoot(loser, "list")


# ---- 2. the reply, its ticks, an image, and back to the bot ----------------------------

RECORD_TICKS = """() => {
  window.ticks = [];
  const note = (item) => {
    if (item.matches && item.matches("li.msg--out")) window.ticks.push([item.dataset.id, item.dataset.status]);
  };
  new MutationObserver((changes) => {
    for (const change of changes) {
      if (change.type === "attributes") note(change.target);
      for (const added of change.addedNodes || []) note(added);
    }
  }).observe(document.getElementById("timeline"),
             {subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"]});
}"""


async def test_the_reply_reaches_the_user_and_resolve_gives_it_back_to_the_bot(
    daemon: RunningDaemon, browsers: Browsers
) -> None:
    await add_operator(daemon, "ana")
    await add_operator(daemon, "bo")
    ana, bo = await browsers.operator("ana"), await browsers.operator("bo")
    user = await browsers.user()
    conversation_id = await handed_over(browsers, user, ana, bo)
    await taken_by(ana, conversation_id)
    await open_conversation(bo, conversation_id)

    await ana.evaluate(RECORD_TICKS)
    await ana.get_by_label("Message", exact=True).fill("Hello Ana, I am looking at it.")
    await ana.get_by_role("button", name="Send", exact=True).click()
    await expect(bubble(user, "out", "Hello Ana, I am looking at it.")).to_have_attribute("data-status", "read")
    reply = timeline_message(ana, "Hello Ana, I am looking at it.")
    await expect(reply.locator(".msg__tick")).to_have_attribute("aria-label", "read")
    reply_id = await reply.get_attribute("data-id")
    seen = [status for item, status in await ana.evaluate("window.ticks") if item == reply_id]
    shown = [status for index, status in enumerate(seen) if index == 0 or seen[index - 1] != status]
    assert [status for status in shown if status != "queued"] == ["sent", "delivered", "read"], seen

    # The user sends a photo. The sandbox hosts no files: it is kept first, as a download keeps it.
    await daemon.hub.storage.media.save(
        "sandbox", "image", picture(), "image/png", direction="in", provider_media_id="sbx.media.receipt"
    )
    photo = sandbox_message("", sender=USER, name="Ana")
    image_body = {"id": "sbx.media.receipt", "mime_type": "image/png", "caption": "My receipt"}
    photo["message"] = {"type": "image", "image": image_body}
    await post_events(daemon, [photo])
    image = ana.locator("#timeline li.msg img.media__image")
    await expect(image).to_have_attribute("src", re.compile(r"^/inbox/media/[0-9a-f]{32}$"))
    await expect(image).to_have_js_property("naturalWidth", 96)
    await expect(timeline_message(ana, "My receipt")).to_be_visible()
    await expect(row(bo, conversation_id).locator(".conv__preview")).to_have_text("My receipt")
    await shoot(ana, "conversation")

    await ana.locator("#action-resolve").click()
    for page in (ana, bo):
        await expect(row(page, conversation_id)).to_have_attribute("data-section", "resolved")
    await say(user, "hi")
    await expect(bubble(user, "out", BOT_ANSWER)).to_be_visible()
    for page in (ana, bo):
        await expect(timeline_message(page, BOT_ANSWER)).to_have_count(1)
        await expect(row(page, conversation_id).locator(".conv__preview")).to_have_text(f"Bot: {BOT_ANSWER}")


# ---- 3. the 24 h window --------------------------------------------------------


async def test_a_closed_window_refuses_text_and_sends_a_template(daemon: RunningDaemon, browsers: Browsers) -> None:
    await add_operator(daemon, "ana")
    ana = await browsers.operator("ana")
    user = await browsers.user()
    conversation_id = await handed_over(browsers, user, ana)
    await taken_by(ana, conversation_id)

    # Opened, taken, and refreshed on the live "taken" event: the page asks nothing more.
    await wait_until(lambda: fetched(ana, f"/inbox/api/conversations/{conversation_id}", at_least=3))
    # The user last wrote 25 hours ago.
    await execute(
        daemon,
        "UPDATE conversations SET last_inbound_at = :at WHERE id = :id",
        at=time.time() - 25 * 3600,
        id=conversation_id,
    )
    # The page opened before: the server refuses the text, and the page says why.
    await ana.get_by_label("Message", exact=True).fill("are you still there?")
    await ana.get_by_role("button", name="Send", exact=True).click()
    await expect(ana.locator("#composer-error")).to_have_text(
        f"{USER} last wrote 25.0 hours ago; outside the 24-hour service window only approved templates may be sent"
    )
    await expect(timeline_message(ana, "are you still there?")).to_have_count(0)

    await ana.reload()
    await open_conversation(ana, conversation_id)
    await expect(ana.locator("#why-not")).to_contain_text("has not written in 24 hours")
    await expect(ana.get_by_label("Message", exact=True)).to_be_hidden()
    await ana.get_by_label("Template").select_option(label="order_ready (en, UTILITY)")
    await ana.get_by_label("{{1}}").fill("Ana")
    await ana.get_by_label("{{2}}").fill("A-42")
    await expect(ana.locator("#template-preview")).to_have_text("Hello Ana, your order A-42 is ready")
    await shoot(ana, "template")
    await ana.get_by_role("button", name="Send template").click()

    await expect(bubble(user, "out", "Hello Ana, your order A-42 is ready")).to_be_visible()
    await expect(ana.locator("#timeline li.msg[data-type='template']")).to_contain_text("order_ready")


# ---- 4. hostile text, other origins, guessed passwords, disabled operators ----


async def test_hostile_text_renders_as_text_and_other_origins_are_refused(
    daemon: RunningDaemon, browsers: Browsers
) -> None:
    await add_operator(daemon, "ana")
    ana = await browsers.operator("ana")
    user = await browsers.user()
    conversation_id = await handed_over(browsers, user, ana)
    await say(user, HOSTILE)

    await expect(row(ana, conversation_id).locator(".conv__preview")).to_have_text(HOSTILE)
    await open_conversation(ana, conversation_id)
    await expect(ana.locator("#timeline .msg__text").filter(has_text="onerror")).to_have_text(HOSTILE)
    assert await ana.locator('img[src="x"]').count() == 0
    assert await ana.evaluate("typeof window.__pwned") == "undefined"

    # The page's own cookie and CSRF token, sent from another origin.
    [cookie] = [c for c in await ana.context.cookies() if c["name"] == "wahub_session"]
    csrf = await ana.locator('meta[name="csrf-token"]').get_attribute("content")
    take = f"{daemon.url}/inbox/api/conversations/{conversation_id}/take"

    async def take_from(origin: str) -> tuple[int, Any]:
        headers = {"Cookie": f"wahub_session={cookie['value']}", "X-CSRF-Token": csrf or "", "Origin": origin}
        async with aiohttp.ClientSession() as http, http.post(take, headers=headers) as answer:
            return answer.status, await answer.json()

    status, refused = await take_from("http://evil.example")
    assert (status, refused["error"]["code"]) == (403, "cross_origin")
    await expect(row(ana, conversation_id)).to_have_attribute("data-section", "queued")
    # The same request from the inbox's own origin is the operator's.
    status, _ = await take_from(daemon.url)
    assert status == 200
    await expect(row(ana, conversation_id)).to_have_attribute("data-section", "mine")


DISABLE_BO = """async (csrf) => {
  const answer = await fetch("/inbox/api/operators/bo", {
    method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify({disabled: true}),
  });
  return answer.status;
}"""


async def test_guessed_passwords_lock_and_a_disabled_operator_is_signed_out(
    daemon: RunningDaemon, browsers: Browsers
) -> None:
    await add_operator(daemon, "root", admin=True)
    await add_operator(daemon, "bo")
    await add_operator(daemon, "cy")
    guesser = await browsers.page()
    await sign_in(guesser, daemon, "cy", "not the password")
    for _ in range(9):
        # The refusal shows the form again, the name kept.
        await expect(guesser.get_by_text("wrong name or password")).to_be_visible()
        await expect(guesser.get_by_label("Name")).to_have_value("cy")
        await guesser.get_by_label("Password").fill("not the password")
        await guesser.get_by_role("button", name="Sign in").click()
    locked = re.compile(r"too many failed sign-ins: try again in 15 minutes \(at \d\d:\d\d UTC\)")
    await expect(guesser.get_by_text(locked)).to_be_visible()
    await sign_in(guesser, daemon, "cy", PASSWORD)
    await expect(guesser.get_by_text(locked)).to_be_visible()
    assert guesser.url.startswith(f"{daemon.url}/inbox/login")

    # An admin disables bo, whose page is open: it lands on the sign-in form, which refuses bo.
    root, bo = await browsers.operator("root"), await browsers.operator("bo")
    csrf = await root.locator('meta[name="csrf-token"]').get_attribute("content")
    assert await root.evaluate(DISABLE_BO, csrf) == 200
    await expect(bo.get_by_role("button", name="Sign in")).to_be_visible()
    assert bo.url.startswith(f"{daemon.url}/inbox/login")
    await sign_in(bo, daemon, "bo")
    await expect(bo.get_by_text("the operator bo is disabled: ask an admin to enable it")).to_be_visible()
    assert bo.url.startswith(f"{daemon.url}/inbox/login")


# ---- 5. nothing lost when the socket drops ---------------------------------------


async def test_a_dropped_socket_or_a_reload_loses_no_message(daemon: RunningDaemon, browsers: Browsers) -> None:
    await add_operator(daemon, "ana")
    ana = await browsers.operator("ana")
    user = await browsers.user()
    conversation_id = await handed_over(browsers, user, ana)
    await taken_by(ana, conversation_id)

    # The network goes away and the server closes the socket: the page is reconnecting.
    await ana.context.set_offline(True)
    for client in list(live_of(daemon.hub).clients):
        await client.ws.close()
    await expect(ana.locator("body")).to_have_attribute("data-connection", "reconnecting")
    missed = ["first while away", "second while away", "third while away"]
    for text in missed:
        await say(user, text)
    await ana.context.set_offline(False)

    await expect(ana.locator("body")).to_have_attribute("data-connection", "connected")
    for text in missed:
        await expect(timeline_message(ana, text)).to_have_count(1)
    await expect(row(ana, conversation_id).locator(".conv__preview")).to_have_text(missed[-1])
    await say(user, "after the return")
    await expect(timeline_message(ana, "after the return")).to_have_count(1)

    await ana.reload()
    await open_conversation(ana, conversation_id)
    for text in [*missed, "after the return"]:
        await expect(timeline_message(ana, text)).to_have_count(1)
    await expect(ana.locator('#timeline li.msg[data-direction="in"]')).to_have_count(5)
