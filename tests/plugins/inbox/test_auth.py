"""Sign-in, sessions, CSRF and origin checks and the security headers, over
real HTTP to the daemon, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from wahub import hookimpl
from wahub.core.http.api_io import json_response
from wahub.core.hub import Hub
from wahub.plugins.inbox.auth import CONTENT_SECURITY_POLICY, guarded, operator_of, session_of, slow_delay
from wahub.plugins.inbox.passwords import Passwords
from wahub.plugins.inbox.state import inbox_of
from wahub.testing import RunningDaemon, build_config, plugin_manager, running_daemon

API_TOKEN = "api-token-0123456789abcdef"
PASSWORD = "correct horse battery"


class Probe:
    """Routes behind ``guarded``, standing in for the inbox's own pages and API."""

    @hookimpl
    def register_routes(self, hub: Hub) -> list[web.RouteDef]:
        inbox = inbox_of(hub)

        async def whoami(request: web.Request) -> web.StreamResponse:
            operator = operator_of(request)
            return json_response({"name": operator.name, "csrf": session_of(request).csrf_token})

        async def page(request: web.Request) -> web.StreamResponse:
            return web.Response(text=f"<p>{operator_of(request).name}</p>", content_type="text/html")

        return [
            web.get("/inbox/api/probe", guarded(inbox, whoami)),
            web.post("/inbox/api/probe", guarded(inbox, whoami)),
            web.get("/inbox/probe-page", guarded(inbox, page, page=True)),
        ]


@asynccontextmanager
async def inbox_daemon(database_url: str, **inbox: Any) -> AsyncIterator[RunningDaemon]:
    pm = plugin_manager([Probe()])
    inbox.setdefault("sign_in", {"slow_after": 100})
    raw = {"wahub": {"api_tokens": [API_TOKEN]}, "inbox": inbox}
    async with running_daemon(build_config(raw, database=database_url, pm=pm), pm=pm) as daemon:
        yield daemon


async def add_operator(daemon: RunningDaemon, name: str, *, admin: bool = False, password: str = PASSWORD) -> None:
    assert await daemon.hub.storage.operators.add(name, Passwords().hash(password), admin=admin, now=0.0)


@asynccontextmanager
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        yield client


async def sign_in(
    client: aiohttp.ClientSession, daemon: RunningDaemon, name: str, password: str, *, next_path: str = "/inbox"
) -> aiohttp.ClientResponse:
    async with client.get(f"{daemon.url}/inbox/login") as page:
        assert page.status == 200
        match = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert match is not None
    form = {"name": name, "password": password, "csrf": match[1], "next": next_path}
    async with client.post(
        f"{daemon.url}/inbox/login", data=form, headers={"Origin": daemon.url}, allow_redirects=False
    ) as answer:
        await answer.read()
        return answer


async def whoami(client: aiohttp.ClientSession, daemon: RunningDaemon) -> tuple[int, Any]:
    async with client.get(f"{daemon.url}/inbox/api/probe") as answer:
        return answer.status, await answer.json()


def assert_secure_headers(answer: aiohttp.ClientResponse) -> None:
    assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "same-origin"
    assert answer.headers["Cache-Control"] == "no-store"


async def test_sign_in_sets_the_session_cookie_with_its_flags(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, browser() as client:
        await add_operator(daemon, "ana")
        answer = await sign_in(client, daemon, "ana", PASSWORD, next_path="/inbox/probe-page?x=1")
        assert answer.status == 303 and answer.headers["Location"] == "/inbox/probe-page?x=1"
        cookie = next(c for c in answer.headers.getall("Set-Cookie") if c.startswith("wahub_session="))
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert {"httponly", "samesite=strict", "path=/inbox"} <= set(flags)
        assert "secure" not in flags  # served over plain HTTP here
        token = cookie.split(";")[0].removeprefix("wahub_session=")
        assert len(token) >= 43
        status, body = await whoami(client, daemon)
        assert status == 200 and body["name"] == "ana"
        # Only the token's hash is stored.
        assert await daemon.hub.storage.operators.session(token, now=1e10) is None
        async with client.get(f"{daemon.url}/inbox/login", allow_redirects=False) as again:
            assert again.status == 303 and again.headers["Location"] == "/inbox"
        async with client.get(f"{daemon.url}/inbox/probe-page") as page:
            assert page.status == 200 and "<p>ana</p>" in await page.text()
        async with client.post(
            f"{daemon.url}/inbox/logout",
            data={"csrf": body["csrf"]},
            headers={"Origin": daemon.url},
            allow_redirects=False,
        ) as out:
            assert out.status == 303 and out.headers["Location"] == "/inbox/login"
            assert_secure_headers(out)
        assert (await whoami(client, daemon))[0] == 401


async def test_next_outside_the_inbox_goes_to_the_inbox(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, browser() as client:
        await add_operator(daemon, "ana")
        for elsewhere in ("https://evil.example/inbox", "//evil.example/inbox", "/api/v1/messages", "/inboxes"):
            client.cookie_jar.clear()
            answer = await sign_in(client, daemon, "ana", PASSWORD, next_path=elsewhere)
            assert answer.status == 303 and answer.headers["Location"] == "/inbox"


async def test_wrong_password_and_unknown_name_are_refused_alike(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, browser() as client:
        await add_operator(daemon, "ana")
        for name, password in (("ana", "not the password"), ("nobody", PASSWORD)):
            answer = await sign_in(client, daemon, name, password)
            assert answer.status == 401
            async with client.get(f"{daemon.url}/inbox/login") as page:
                assert page.status == 200
        async with client.get(f"{daemon.url}/inbox/login") as page:
            text = await page.text()
        assert "wahub operators add" not in text  # an operator exists
        assert (await whoami(client, daemon))[0] == 401
        failures = await daemon.hub.storage.operators.throttles(["account:ana", "account:nobody"], now=0)
        assert sorted((t.key, t.failures) for t in failures) == [("account:ana", 1), ("account:nobody", 1)]


async def test_the_refused_page_says_why(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, browser() as client:
        await add_operator(daemon, "ana")
        async with client.get(f"{daemon.url}/inbox/login") as page:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert csrf is not None
        form = {"name": "ana", "password": "nope", "csrf": csrf[1], "next": "/inbox"}
        async with client.post(f"{daemon.url}/inbox/login", data=form, headers={"Origin": daemon.url}) as answer:
            assert answer.status == 401
            assert "wrong name or password" in await answer.text()
            assert_secure_headers(answer)
        # Without the form's token (its cookie is gone) the sign-in is refused.
        client.cookie_jar.clear()
        async with client.post(f"{daemon.url}/inbox/login", data=form, headers={"Origin": daemon.url}) as answer:
            assert answer.status == 403 and "expired" in await answer.text()


async def test_first_operator_hint_when_there_is_none(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, browser() as client:
        async with client.get(f"{daemon.url}/inbox/login") as page:
            text = await page.text()
            assert page.status == 200
            assert_secure_headers(page)
            login_cookie = page.cookies["wahub_login"]
        assert "wahub operators add NAME --admin" in text
        assert '<link rel="stylesheet" href="/inbox/static/login.css">' in text
        assert "<script" not in text and "style=" not in text
        assert login_cookie["httponly"] and login_cookie["samesite"] == "Strict" and login_cookie["path"] == "/inbox"


async def test_lockout_refuses_even_the_right_password(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wahub.plugins.inbox.auth")
    async with inbox_daemon(database_url, sign_in={"slow_after": 100, "lock_after": 3}) as daemon, browser() as client:
        await add_operator(daemon, "ana")
        statuses = [(await sign_in(client, daemon, "ana", f"wrong {i}")).status for i in range(3)]
        assert statuses == [401, 401, 429]
        locked = await sign_in(client, daemon, "ana", PASSWORD)
        assert locked.status == 429 and int(locked.headers["Retry-After"]) > 0
        async with client.get(f"{daemon.url}/inbox/login") as page:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert csrf is not None
        form = {"name": "ana", "password": PASSWORD, "csrf": csrf[1], "next": "/inbox"}
        async with client.post(f"{daemon.url}/inbox/login", data=form, headers={"Origin": daemon.url}) as answer:
            text = await answer.text()
        assert answer.status == 429
        assert re.search(r"too many failed sign-ins: try again in 15 minutes \(at \d\d:\d\d UTC\)", text)
        assert (await whoami(client, daemon))[0] == 401
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("account ana locked" in w and "127.0.0.1" in w for w in warnings)
        assert not any(PASSWORD in w or "wrong 2" in w for w in warnings)


async def test_address_lock_over_every_account(database_url: str) -> None:
    sign_in_config = {"slow_after": 100, "lock_after": 100, "address_lock_after": 3}
    async with inbox_daemon(database_url, sign_in=sign_in_config) as daemon, browser() as client:
        await add_operator(daemon, "ana")
        statuses = [(await sign_in(client, daemon, name, "wrong password")).status for name in ("x", "y", "z")]
        assert statuses == [401, 401, 429]
        assert (await sign_in(client, daemon, "ana", PASSWORD)).status == 429


async def test_a_success_clears_the_account_count(database_url: str) -> None:
    async with inbox_daemon(database_url, sign_in={"slow_after": 100, "lock_after": 3}) as daemon, browser() as client:
        await add_operator(daemon, "ana")
        for _ in range(2):
            assert (await sign_in(client, daemon, "ana", "wrong password")).status == 401
        assert (await sign_in(client, daemon, "ana", PASSWORD)).status == 303
        client.cookie_jar.clear()
        for _ in range(2):
            assert (await sign_in(client, daemon, "ana", "wrong password")).status == 401


async def test_disabled_operator_session_answers_401_at_once(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, browser() as client:
        await add_operator(daemon, "ana")
        assert (await sign_in(client, daemon, "ana", PASSWORD)).status == 303
        assert (await whoami(client, daemon))[0] == 200
        assert await daemon.hub.storage.operators.set_disabled("ana", True, now=1.0)
        status, body = await whoami(client, daemon)
        assert status == 401 and body["error"]["code"] == "signed_out"
        client.cookie_jar.clear()
        await daemon.hub.storage.operators.set_disabled("ana", False, now=2.0)
        # A disabled operator with the right password is told so, not "wrong password".
        await daemon.hub.storage.operators.set_disabled("ana", True, now=3.0)
        assert (await sign_in(client, daemon, "ana", PASSWORD)).status == 403


async def test_cross_origin_and_missing_csrf_are_refused(database_url: str) -> None:
    origins = ["https://inbox.example.com"]
    async with inbox_daemon(database_url, origins=origins) as daemon, browser() as client:
        await add_operator(daemon, "ana")
        assert (await sign_in(client, daemon, "ana", PASSWORD)).status == 303
        csrf = (await whoami(client, daemon))[1]["csrf"]
        url = f"{daemon.url}/inbox/api/probe"
        refused = {
            "cross_origin": [
                {"Origin": "https://evil.example", "X-CSRF-Token": csrf},
                {"Referer": "https://evil.example/inbox", "X-CSRF-Token": csrf},
                {"X-CSRF-Token": csrf},  # neither Origin nor Referer
            ],
            "csrf": [{"Origin": daemon.url}, {"Origin": daemon.url, "X-CSRF-Token": "not-the-token"}],
        }
        for code, cases in refused.items():
            for headers in cases:
                async with client.post(url, headers=headers) as answer:
                    body = await answer.json()
                    assert answer.status == 403 and body["error"]["code"] == code, headers
                    assert_secure_headers(answer)
        accepted = [
            {"Origin": daemon.url, "X-CSRF-Token": csrf},
            {"Origin": daemon.url.replace("http://", "https://"), "X-CSRF-Token": csrf},  # behind a TLS proxy
            {"Referer": f"{daemon.url}/inbox", "X-CSRF-Token": csrf},
            {"Origin": "https://inbox.example.com", "X-CSRF-Token": csrf},
        ]
        for headers in accepted:
            async with client.post(url, headers=headers) as answer:
                assert answer.status == 200, headers


async def test_bearer_token_and_session_cookie_open_only_their_own_api(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, browser() as client:
        await add_operator(daemon, "ana")
        bearer = {"Authorization": f"Bearer {API_TOKEN}"}
        async with aiohttp.ClientSession() as plain:
            async with plain.get(f"{daemon.url}/inbox/api/probe", headers=bearer) as answer:
                assert answer.status == 401
            async with plain.get(f"{daemon.url}/api/v1/inbox/failed", headers=bearer) as answer:
                assert answer.status == 200
        answer = await sign_in(client, daemon, "ana", PASSWORD)
        cookie = next(c for c in answer.headers.getall("Set-Cookie") if c.startswith("wahub_session="))
        async with aiohttp.ClientSession() as plain:
            headers = {"Cookie": cookie.split(";")[0]}
            async with plain.get(f"{daemon.url}/inbox/api/probe", headers=headers) as answer:
                assert answer.status == 200
            async with plain.get(f"{daemon.url}/api/v1/inbox/failed", headers=headers) as answer:
                assert answer.status == 401


async def test_security_headers_on_page_json_error_and_redirect(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, browser() as client:
        await add_operator(daemon, "ana")
        async with client.get(f"{daemon.url}/inbox/probe-page", allow_redirects=False) as redirect:
            assert redirect.status == 303
            assert redirect.headers["Location"] == "/inbox/login?next=/inbox/probe-page"
            assert_secure_headers(redirect)
        async with client.get(f"{daemon.url}/inbox/api/probe") as unauthorized:
            assert unauthorized.status == 401
            assert_secure_headers(unauthorized)
        sign = await sign_in(client, daemon, "ana", PASSWORD)
        assert_secure_headers(sign)
        async with client.get(f"{daemon.url}/inbox/api/probe") as data:
            assert data.status == 200 and data.content_type == "application/json"
            assert_secure_headers(data)
        async with client.get(f"{daemon.url}/inbox/probe-page") as page:
            assert page.status == 200 and page.content_type == "text/html"
            assert_secure_headers(page)
        for missing in ("/inbox/no-such-page", "/inbox/static/no-such.js", "/inbox/api/no/such/thing"):
            async with client.get(f"{daemon.url}{missing}") as nothing:
                assert nothing.status == 404, missing
                assert_secure_headers(nothing)


async def test_admins_manage_operators(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, browser() as admin, browser() as other:
        await add_operator(daemon, "root", admin=True)
        assert (await sign_in(admin, daemon, "root", PASSWORD)).status == 303
        csrf = (await whoami(admin, daemon))[1]["csrf"]
        headers = {"Origin": daemon.url, "X-CSRF-Token": csrf}
        api = f"{daemon.url}/inbox/api/operators"

        async def post(path: str, body: Any) -> tuple[int, Any]:
            async with admin.post(api + path, json=body, headers=headers) as answer:
                assert_secure_headers(answer)
                return answer.status, await answer.json()

        status, body = await post("", {"name": "bo", "password": PASSWORD, "admin": False})
        assert status == 201 and body["operator"]["name"] == "bo" and body["operator"]["admin"] is False
        assert (await post("", {"name": "bo", "password": PASSWORD}))[0] == 409
        assert (await post("", {"name": "Bad Name", "password": PASSWORD}))[1]["error"]["code"] == "invalid_name"
        assert (await post("", {"name": "cy", "password": "short"}))[1]["error"]["code"] == "invalid_password"
        async with admin.get(api) as answer:
            listed = (await answer.json())["operators"]
        assert [(o["name"], o["admin"], o["disabled"]) for o in listed] == [("bo", False, False), ("root", True, False)]

        for change in ({"disabled": True}, {"admin": False}):
            status, body = await post("/root", change)
            assert status == 409 and body["error"]["code"] == "self_change"
        assert (await post("/nobody", {"admin": True}))[0] == 404

        assert (await sign_in(other, daemon, "bo", PASSWORD)).status == 303
        bo_csrf = (await whoami(other, daemon))[1]["csrf"]
        async with other.get(api) as answer:
            assert answer.status == 403 and (await answer.json())["error"]["code"] == "admin_only"
        status, body = await post("/bo", {"password": "a new password"})
        assert status == 200
        # The new password ended bo's session.
        assert (await whoami(other, daemon))[0] == 401
        assert (await sign_in(other, daemon, "bo", "a new password")).status == 303
        status, body = await post("/bo", {"disabled": True, "admin": True})
        assert status == 200 and body["operator"]["disabled"] and body["operator"]["admin"]
        async with other.post(
            f"{daemon.url}/inbox/api/probe", headers={"Origin": daemon.url, "X-CSRF-Token": bo_csrf}
        ) as answer:
            assert answer.status == 401


def test_slow_schedule() -> None:
    assert [slow_delay(n, 3) for n in range(1, 11)] == [0, 0, 0, 1, 2, 4, 8, 8, 8, 8]
