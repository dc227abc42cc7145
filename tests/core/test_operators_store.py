"""The operators' accounts, sessions and failed sign-ins, on SQLite and PostgreSQL."""

from __future__ import annotations

from wahub.core.storage.store import Storage

NOW = 1_700_000_000.0


async def _session(storage: Storage, operator_id: int, token: str, *, expires_at: float = NOW + 3600) -> None:
    await storage.operators.start_session(
        operator_id, token, f"csrf-{token}", address="127.0.0.1", user_agent="test", now=NOW, expires_at=expires_at
    )


async def test_add_get_and_refuse_a_taken_name(storage: Storage) -> None:
    store = storage.operators
    ana = await store.add("ana", "hash-a", admin=True, now=NOW)
    assert ana is not None and ana.name == "ana" and ana.is_admin and not ana.disabled
    assert await store.add("ana", "other", admin=False, now=NOW) is None
    await store.add("bo", "hash-b", admin=False, now=NOW)
    assert [o.name for o in await store.all()] == ["ana", "bo"]
    assert await store.get("ana") == ana
    assert await store.by_id(ana.id) == ana
    assert await store.credentials("ana") == (ana, "hash-a")
    assert await store.get("nobody") is None and await store.credentials("nobody") is None


async def test_session_lookup_refuses_expired_and_disabled(storage: Storage) -> None:
    store = storage.operators
    ana = await store.add("ana", "h", admin=False, now=NOW)
    assert ana is not None
    await _session(storage, ana.id, "t1")
    await _session(storage, ana.id, "t2", expires_at=NOW + 10)
    session = await store.session("t1", now=NOW + 1)
    assert session is not None and session.operator == ana and session.csrf_token == "csrf-t1"
    assert session.created_at == NOW
    assert await store.session("t2", now=NOW + 11) is None
    assert await store.valid_sessions(["t1", "t2", "unknown"], now=NOW + 11) == {"t1"}
    assert await store.purge_sessions(NOW + 11) == 1

    assert await store.set_disabled("ana", True, now=NOW + 20)
    assert await store.session("t1", now=NOW + 21) is None
    assert await store.valid_sessions(["t1"], now=NOW + 21) == set()
    assert (await store.get("ana")).disabled  # type: ignore[union-attr]
    assert await store.set_disabled("ana", False, now=NOW + 30)
    # Disabling ended the sessions: enabling again opens none of them.
    assert await store.session("t1", now=NOW + 31) is None
    assert not await store.set_disabled("nobody", True, now=NOW)


async def test_password_change_ends_sessions_and_touch_extends(storage: Storage) -> None:
    store = storage.operators
    ana = await store.add("ana", "h", admin=False, now=NOW)
    assert ana is not None
    await _session(storage, ana.id, "t1", expires_at=NOW + 100)
    await store.touch_session("t1", now=NOW + 50, expires_at=NOW + 500, live=True)
    touched = await store.session("t1", now=NOW + 200)
    assert touched is not None and touched.expires_at == NOW + 500 and touched.seen_at == NOW + 50
    assert [o.name for o in await store.live_operators(NOW + 40)] == ["ana"]
    assert await store.live_operators(NOW + 60) == []
    assert await store.set_password("ana", "new", now=NOW + 60)
    assert await store.session("t1", now=NOW + 61) is None
    assert (await store.credentials("ana"))[1] == "new"  # type: ignore[index]
    assert not await store.set_password("nobody", "x", now=NOW)
    assert await store.set_admin("ana", True, now=NOW)
    assert (await store.get("ana")).is_admin  # type: ignore[union-attr]


async def test_end_sessions_and_round_robin(storage: Storage) -> None:
    store = storage.operators
    ana = await store.add("ana", "h", admin=False, now=NOW)
    bo = await store.add("bo", "h", admin=False, now=NOW)
    assert ana is not None and bo is not None
    await _session(storage, ana.id, "a1")
    await _session(storage, ana.id, "a2")
    await _session(storage, bo.id, "b1")
    await store.end_session("a1")
    assert await store.end_sessions(ana.id) == 1
    assert await store.valid_sessions(["a1", "a2", "b1"], now=NOW) == {"b1"}
    await store.mark_assigned(bo.id, NOW + 5)
    assert await store.last_assigned([ana.id, bo.id]) == {bo.id: NOW + 5}


async def test_failures_count_lock_and_clear(storage: Storage) -> None:
    store = storage.operators
    keys = ["account:ana", "address:10.0.0.1"]
    limits = {"account": 3, "address": 5}
    for i in range(2):
        counted = await store.record_failure(keys, now=NOW + i, window=900, lock_after=limits, lock_seconds=600)
    assert [(t.key, t.failures, t.locked_until) for t in counted] == [
        ("account:ana", 2, None),
        ("address:10.0.0.1", 2, None),
    ]
    counted = await store.record_failure(keys, now=NOW + 2, window=900, lock_after=limits, lock_seconds=600)
    assert counted[0].locked_until == NOW + 602 and counted[1].locked_until is None
    throttles = {t.key: t for t in await store.throttles([*keys, "account:bo"], now=NOW + 3)}
    assert throttles.keys() == set(keys) and throttles["account:ana"].locked_until == NOW + 602
    # Once the lock has run out, counting starts again.
    after = {t.key: t for t in await store.throttles(keys, now=NOW + 700)}
    assert after["account:ana"].failures == 0 and after["account:ana"].locked_until is None
    again = await store.record_failure(keys, now=NOW + 700, window=900, lock_after=limits, lock_seconds=600)
    assert again[0].failures == 1 and again[1].failures == 4
    # A count older than the window starts again as well.
    stale = await store.record_failure(keys, now=NOW + 2000, window=900, lock_after=limits, lock_seconds=600)
    assert [t.failures for t in stale] == [1, 1]
    await store.clear_failures("account:ana")
    assert [t.key for t in await store.throttles(keys, now=NOW + 2001)] == ["address:10.0.0.1"]


async def test_attempts_are_reserved_and_a_success_forgotten(storage: Storage) -> None:
    store = storage.operators
    keys = ["account:ana", "address:10.0.0.1"]
    limits = {"account": 2, "address": 3}

    async def reserve(at: float) -> list[tuple[int, bool, bool]]:
        attempts = await store.reserve_attempt(keys, now=at, window=900, lock_after=limits, lock_seconds=600)
        return [(a.throttle.failures, a.was_locked, a.locked_now) for a in attempts]

    assert await reserve(NOW) == [(1, False, False), (1, False, False)]
    # The attempt that reaches the limit sets the lock but was not refused by it...
    assert await reserve(NOW + 1) == [(2, False, True), (2, False, False)]
    # ...the next one finds the lock.
    assert await reserve(NOW + 2) == [(3, True, False), (3, False, True)]
    address = (await store.reserve_attempt(keys, now=NOW + 3, window=900, lock_after=limits, lock_seconds=600))[1]
    assert address.was_locked and not address.locked_now
    await store.forget_attempt(address)
    found = {t.key: t for t in await store.throttles(keys, now=NOW + 4)}
    # Forgetting takes back the count, not a lock set before.
    assert found["address:10.0.0.1"].failures == 3 and found["address:10.0.0.1"].locked_until == NOW + 602


async def test_a_new_password_clears_the_account_lock(storage: Storage) -> None:
    store = storage.operators
    assert await store.add("ana", "h", admin=False, now=NOW) is not None
    keys = ["account:ana", "address:10.0.0.1", "account:bo"]
    await store.record_failure(keys, now=NOW, window=900, lock_after={"account": 1}, lock_seconds=600)
    assert await store.set_password("ana", "new", now=NOW + 1)
    assert sorted(t.key for t in await store.throttles(keys, now=NOW + 2)) == ["account:bo", "address:10.0.0.1"]


async def test_purge_failures_keeps_what_still_slows_or_locks(storage: Storage) -> None:
    store = storage.operators
    limits = {"account": 2}
    for key, at, times in (
        ("account:old", NOW - 1000, 1),
        ("account:served", NOW - 700, 2),
        ("account:recent", NOW - 10, 1),
        ("account:locked", NOW - 10, 2),
    ):
        for _ in range(times):
            await store.record_failure([key], now=at, window=900, lock_after=limits, lock_seconds=600)
    assert await store.purge_failures(NOW, 900) == 2
    keys = ["account:old", "account:served", "account:recent", "account:locked"]
    assert sorted(t.key for t in await store.throttles(keys, now=NOW)) == ["account:locked", "account:recent"]
