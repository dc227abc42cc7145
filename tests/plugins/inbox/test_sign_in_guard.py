"""The sign-in's guard: attempts made at once against the lockout, reverse
proxies' headers, password changes and the purge of old counts, over real
HTTP to the daemon, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from tests.plugins.inbox.test_auth import PASSWORD, add_operator, browser, inbox_daemon, sign_in, whoami
from wahub.core.errors import ConfigError
from wahub.core.storage.schema import operator_sessions
from wahub.plugins.inbox.assign import purge_sessions
from wahub.plugins.inbox.passwords import Passwords
from wahub.testing import RunningDaemon, build_config

# Headers a reverse proxy on this host would add for a client on the internet.
SPOOFED = "203.0.113.9"
CLIENT = "198.51.100.7"


class Attempt:
    """One sign-in form, fetched, to be posted later; cookies kept by hand so
    that a Secure cookie is sent back over the tests' plain HTTP."""

    def __init__(self, daemon: RunningDaemon, headers: Mapping[str, str]) -> None:
        self.daemon, self.headers = daemon, dict(headers)
        self.csrf = ""
        self.login_cookie: Any = None

    async def fetch(self, client: aiohttp.ClientSession) -> None:
        async with client.get(f"{self.daemon.url}/inbox/login", headers=self.headers) as page:
            assert page.status == 200
            match = re.search(r'name="csrf" value="([^"]+)"', await page.text())
            self.login_cookie = page.cookies["wahub_login"]
        assert match is not None
        self.csrf = match[1]

    async def post(self, client: aiohttp.ClientSession, name: str, password: str) -> aiohttp.ClientResponse:
        form = {"name": name, "password": password, "csrf": self.csrf, "next": "/inbox"}
        headers = {**self.headers, "Origin": self.daemon.url, "Cookie": f"wahub_login={self.csrf}"}
        async with client.post(
            f"{self.daemon.url}/inbox/login", data=form, headers=headers, allow_redirects=False
        ) as answer:
            await answer.read()
            return answer


async def attempt(
    daemon: RunningDaemon, name: str, password: str, headers: Mapping[str, str] | None = None
) -> tuple[Attempt, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        form = Attempt(daemon, headers or {})
        await form.fetch(client)
        return form, await form.post(client, name, password)


def cookie_flags(answer: aiohttp.ClientResponse, name: str) -> set[str]:
    cookie = next(c for c in answer.headers.getall("Set-Cookie") if c.startswith(f"{name}="))
    return {part.strip().lower() for part in cookie.split(";")[1:]}


async def failures(daemon: RunningDaemon, *keys: str) -> dict[str, tuple[int, bool]]:
    found = await daemon.hub.storage.operators.throttles(list(keys), now=daemon.hub.clock.time())
    return {t.key: (t.failures, t.locked_until is not None) for t in found}


async def session_addresses(daemon: RunningDaemon) -> list[str | None]:
    async with daemon.hub.storage.operators.db.connect() as conn:
        return [row[0] for row in await conn.execute(sa.select(operator_sessions.c.address))]


# -- attempts at once ----------------------------------------------------------


async def test_sign_ins_at_once_check_no_more_passwords_than_lock_after(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    running, most = [0], [0]
    guard = threading.Lock()
    check = Passwords._check

    def counted_check(self: Passwords, password_hash: str, password: str) -> bool:
        with guard:
            checked.append(password)
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return check(self, password_hash, password)
        finally:
            with guard:
                running[0] -= 1

    monkeypatch.setattr(Passwords, "_check", counted_check)
    async with (
        inbox_daemon(database_url, sign_in={"slow_after": 100, "lock_after": 10}) as daemon,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
    ):
        await add_operator(daemon, "ana")
        forms = [Attempt(daemon, {}) for _ in range(30)]
        for form in forms:
            await form.fetch(client)
        answers = await asyncio.gather(*(form.post(client, "ana", f"wrong {i}") for i, form in enumerate(forms)))
        # The tenth attempt locks the account; the twenty after it find it locked, unchecked.
        assert Counter(answer.status for answer in answers) == {401: 9, 429: 21}
        assert len(checked) == 10
        assert most[0] <= 4
        assert (await failures(daemon, "account:ana"))["account:ana"][1]
        _, right = await attempt(daemon, "ana", PASSWORD)
        assert right.status == 429 and len(checked) == 10


async def test_the_attempt_that_reaches_the_limit_still_signs_in(database_url: str) -> None:
    sign_in_config = {"slow_after": 100, "lock_after": 3, "address_lock_after": 3}
    async with inbox_daemon(database_url, sign_in=sign_in_config) as daemon, browser() as client:
        await add_operator(daemon, "ana")
        for _ in range(2):
            assert (await sign_in(client, daemon, "ana", "wrong password")).status == 401
        # The third attempt reaches both limits, but its password is right.
        assert (await sign_in(client, daemon, "ana", PASSWORD)).status == 303
        assert (await whoami(client, daemon))[0] == 200
        # The account's count is cleared; the address keeps only the two failures.
        assert await failures(daemon, "account:ana", "address:127.0.0.1") == {"address:127.0.0.1": (2, False)}
        client.cookie_jar.clear()
        assert (await sign_in(client, daemon, "bo", "wrong password")).status == 429


# -- password changes ----------------------------------------------------------


async def test_a_new_password_from_an_admin_opens_a_locked_account(database_url: str) -> None:
    async with (
        inbox_daemon(database_url, sign_in={"slow_after": 100, "lock_after": 2}) as daemon,
        browser() as admin,
        browser() as other,
    ):
        await add_operator(daemon, "root", admin=True)
        await add_operator(daemon, "bo")
        assert (await sign_in(admin, daemon, "root", PASSWORD)).status == 303
        csrf = (await whoami(admin, daemon))[1]["csrf"]
        assert [(await sign_in(other, daemon, "bo", "wrong password")).status for _ in range(2)] == [401, 429]
        async with admin.post(
            f"{daemon.url}/inbox/api/operators/bo",
            json={"password": "a new password"},
            headers={"Origin": daemon.url, "X-CSRF-Token": csrf},
        ) as answer:
            assert answer.status == 200
        assert await failures(daemon, "account:bo") == {}
        assert (await sign_in(other, daemon, "bo", "a new password")).status == 303


# -- the purge -------------------------------------------------------------------


async def test_the_hourly_purge_deletes_counts_that_no_longer_matter(database_url: str) -> None:
    async with inbox_daemon(database_url, sign_in={"slow_after": 100, "lock_after": 2, "lock_minutes": 15}) as daemon:
        store, now = daemon.hub.storage.operators, daemon.hub.clock.time()
        limits = {"account": 2}
        for key, at, times in (
            ("account:old", now - 3600, 1),  # one failure an hour ago: forgotten
            ("account:served", now - 1800, 2),  # locked half an hour ago for 15 minutes: served
            ("account:recent", now - 60, 1),
            ("account:locked", now - 60, 2),
        ):
            for _ in range(times):
                await store.record_failure([key], now=at, window=900, lock_after=limits, lock_seconds=900)
        await purge_sessions(daemon.hub)
        keys = ["account:old", "account:served", "account:recent", "account:locked"]
        rows = await store.throttles(keys, now=now)
        assert sorted(t.key for t in rows) == ["account:locked", "account:recent"]


# -- reverse proxies -------------------------------------------------------------


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon:
        await add_operator(daemon, "ana")
        headers = {"X-Forwarded-For": CLIENT, "X-Forwarded-Proto": "https"}
        _, failed = await attempt(daemon, "ana", "wrong password", headers)
        assert failed.status == 401 and "secure" not in cookie_flags(failed, "wahub_login")
        assert set(await failures(daemon, f"address:{CLIENT}", "address:127.0.0.1")) == {"address:127.0.0.1"}
        _, signed = await attempt(daemon, "ana", PASSWORD, headers)
        assert signed.status == 303 and "secure" not in cookie_flags(signed, "wahub_session")
        assert await session_addresses(daemon) == ["127.0.0.1"]


async def test_a_trusted_proxy_names_the_client_and_its_https(database_url: str) -> None:
    proxies = ["127.0.0.1", "10.0.0.0/8"]
    async with inbox_daemon(database_url, trusted_proxies=proxies) as daemon:
        await add_operator(daemon, "ana")
        # The client wrote SPOOFED itself; the proxies appended CLIENT and 10.1.2.3.
        headers = {"X-Forwarded-For": f"{SPOOFED}, {CLIENT}, 10.1.2.3", "X-Forwarded-Proto": "https"}
        form, failed = await attempt(daemon, "ana", "wrong password", headers)
        assert failed.status == 401
        assert "secure" in cookie_flags(failed, "wahub_login")
        assert form.login_cookie["secure"]
        keys = (f"address:{CLIENT}", f"address:{SPOOFED}", "address:10.1.2.3", "address:127.0.0.1")
        assert await failures(daemon, *keys) == {f"address:{CLIENT}": (1, False)}
        _, signed = await attempt(daemon, "ana", PASSWORD, headers)
        assert signed.status == 303 and "secure" in cookie_flags(signed, "wahub_session")
        assert await session_addresses(daemon) == [CLIENT]
        # Plain HTTP at the proxy: no Secure cookie.
        _, plain = await attempt(daemon, "ana", "wrong password", {"X-Forwarded-For": CLIENT})
        assert plain.status == 401 and "secure" not in cookie_flags(plain, "wahub_login")


async def test_ipv6_clients_are_counted_by_their_64_network(database_url: str) -> None:
    sign_in_config = {"slow_after": 100, "lock_after": 100, "address_lock_after": 2}
    async with inbox_daemon(database_url, trusted_proxies=["127.0.0.1"], sign_in=sign_in_config) as daemon:
        await add_operator(daemon, "ana")
        first = {"X-Forwarded-For": "2001:db8:1:2:aaaa::1"}
        assert (await attempt(daemon, "x", "wrong password", first))[1].status == 401
        assert await failures(daemon, "address:2001:db8:1:2::/64") == {"address:2001:db8:1:2::/64": (1, False)}
        # Another host of the same /64 is locked with it...
        second = {"X-Forwarded-For": "[2001:db8:1:2:bbbb::2]:51234"}
        assert (await attempt(daemon, "y", "wrong password", second))[1].status == 429
        assert (await attempt(daemon, "ana", PASSWORD, first))[1].status == 429
        # ...but not another network.
        elsewhere = {"X-Forwarded-For": "2001:db8:1:3::1"}
        assert (await attempt(daemon, "ana", PASSWORD, elsewhere))[1].status == 303
        assert await session_addresses(daemon) == ["2001:db8:1:3::1"]


async def test_secure_cookies_always(database_url: str) -> None:
    async with inbox_daemon(database_url, secure_cookies="always") as daemon:
        await add_operator(daemon, "ana")
        _, failed = await attempt(daemon, "ana", "wrong password")
        assert "secure" in cookie_flags(failed, "wahub_login")
        _, signed = await attempt(daemon, "ana", PASSWORD)
        assert signed.status == 303 and "secure" in cookie_flags(signed, "wahub_session")


def test_trusted_proxies_and_secure_cookies_are_validated(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'wahub.db'}"
    inbox = {"trusted_proxies": ["10.0.0.1/8", "proxy.local", 7, "fd00::/8", " 10.0.0.2 "], "secure_cookies": "yes"}
    with pytest.raises(ConfigError) as caught:
        build_config({"inbox": inbox}, database=database_url)
    message = str(caught.value)
    assert "'10.0.0.1/8' has host bits set: write the network as 10.0.0.0/8" in message
    assert "'proxy.local' is not an IP address or a CIDR network" in message
    assert "expected an IP address or a CIDR network" in message
    assert "expected auto or always" in message
    good = build_config({"inbox": {"trusted_proxies": ["10.0.0.2", "fd00::/8"]}}, database=database_url)
    assert good["inbox"]["trusted_proxies"] == ["10.0.0.2/32", "fd00::/8"]
    assert good["inbox"]["secure_cookies"] == "auto"
