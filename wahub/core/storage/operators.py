"""The inbox's operators: their accounts, their signed-in sessions and the
failed sign-ins that slow and then lock an account or an address.

Passwords arrive here already hashed (the inbox hashes them with argon2id);
session cookies are stored only as the SHA-256 of their token, so a copy of
the database opens no session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.schema import operator_sessions, operators, sign_in_failures


@dataclass(frozen=True)
class Operator:
    id: int
    name: str
    is_admin: bool
    disabled: bool
    created_at: float


@dataclass(frozen=True)
class Session:
    """A signed-in page: whose, its CSRF token, and until when it holds."""

    token_hash: str
    operator: Operator
    csrf_token: str
    expires_at: float
    #: When it was signed in (it never lasts past ``created_at`` + ``inbox.session_days``).
    created_at: float = 0.0
    #: When it was last used (its expiry was last extended then).
    seen_at: float = 0.0


@dataclass(frozen=True)
class Throttle:
    """Failed sign-ins counted under one key (``account:<name>``, ``address:<ip>``)."""

    key: str
    failures: int
    last_failed_at: float
    locked_until: float | None


@dataclass(frozen=True)
class Attempt:
    """A sign-in attempt counted under one key before its password is checked."""

    #: The count with this attempt included, and the key's lock.
    throttle: Throttle
    #: The key was locked before this attempt: it is refused without checking the password.
    was_locked: bool
    #: This attempt's count reached the limit and set the lock.
    locked_now: bool


class OperatorStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- accounts ----------------------------------------------------------

    async def add(self, name: str, password_hash: str, *, admin: bool, now: float) -> Operator | None:
        """Create an operator; None when the name is taken."""
        values = {
            "name": name,
            "password_hash": password_hash,
            "is_admin": admin,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.begin() as conn:
            result = await conn.execute(insert_ignore(conn, operators, ["name"]).values(**values))
            if not result.rowcount:
                return None
            row = (await conn.execute(sa.select(*_OPERATOR).where(operators.c.name == name))).one()
        return _operator(row)

    async def get(self, name: str) -> Operator | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(*_OPERATOR).where(operators.c.name == name))).first()
        return _operator(row) if row is not None else None

    async def by_id(self, operator_id: int) -> Operator | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(*_OPERATOR).where(operators.c.id == operator_id))).first()
        return _operator(row) if row is not None else None

    async def credentials(self, name: str) -> tuple[Operator, str] | None:
        """The operator and their password hash, for a sign-in."""
        query = sa.select(*_OPERATOR, operators.c.password_hash).where(operators.c.name == name)
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        return (_operator(row), str(row.password_hash)) if row is not None else None

    async def all(self) -> list[Operator]:
        """Every operator, by name."""
        async with self.db.connect() as conn:
            rows = (await conn.execute(sa.select(*_OPERATOR).order_by(operators.c.name))).all()
        return [_operator(row) for row in rows]

    async def set_password(self, name: str, password_hash: str, *, now: float) -> bool:
        """Change the password, end every session of the operator and clear the
        failed sign-ins (and lock) of their account; False if unknown."""
        values = {"password_hash": password_hash, "updated_at": now}
        return await self._change(name, values, end_sessions=True, clear_failures=True)

    async def set_disabled(self, name: str, disabled: bool, *, now: float) -> bool:
        """Disable (ending every session at once) or enable again; False if unknown."""
        values: dict[str, Any] = {"disabled_at": now if disabled else None, "updated_at": now}
        if disabled:
            # Disabling twice keeps the first time it was disabled.
            values["disabled_at"] = sa.func.coalesce(operators.c.disabled_at, now)
        return await self._change(name, values, end_sessions=disabled)

    async def set_admin(self, name: str, admin: bool, *, now: float) -> bool:
        return await self._change(name, {"is_admin": admin, "updated_at": now}, end_sessions=False)

    async def _change(
        self, name: str, values: dict[str, Any], *, end_sessions: bool, clear_failures: bool = False
    ) -> bool:
        async with self.db.begin() as conn:
            operator_id = (
                await conn.execute(
                    sa.update(operators).where(operators.c.name == name).values(**values).returning(operators.c.id)
                )
            ).scalar()
            if operator_id is None:
                return False
            if end_sessions:
                await conn.execute(sa.delete(operator_sessions).where(operator_sessions.c.operator_id == operator_id))
            if clear_failures:
                await conn.execute(sa.delete(sign_in_failures).where(sign_in_failures.c.key == f"account:{name}"))
        return True

    # -- sessions ----------------------------------------------------------

    async def start_session(
        self,
        operator_id: int,
        token_hash: str,
        csrf_token: str,
        *,
        address: str | None,
        user_agent: str | None,
        now: float,
        expires_at: float,
    ) -> None:
        values = {
            "token_hash": token_hash,
            "operator_id": operator_id,
            "csrf_token": csrf_token,
            "address": address[:64] if address else None,
            "user_agent": user_agent[:256] if user_agent else None,
            "created_at": now,
            "seen_at": now,
            "expires_at": expires_at,
        }
        async with self.db.begin() as conn:
            await conn.execute(sa.insert(operator_sessions).values(**values))

    async def session(self, token_hash: str, *, now: float) -> Session | None:
        """The session, or None when it is unknown, expired or its operator disabled."""
        query = (
            sa.select(
                *_OPERATOR,
                operator_sessions.c.token_hash,
                operator_sessions.c.csrf_token,
                operator_sessions.c.expires_at,
                operator_sessions.c.created_at.label("session_created_at"),
                operator_sessions.c.seen_at,
            )
            .select_from(operator_sessions.join(operators, operators.c.id == operator_sessions.c.operator_id))
            .where(_open_session(now), operator_sessions.c.token_hash == token_hash)
        )
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return Session(
            token_hash=row.token_hash,
            operator=_operator(row),
            csrf_token=row.csrf_token,
            expires_at=float(row.expires_at),
            created_at=float(row.session_created_at),
            seen_at=float(row.seen_at),
        )

    async def touch_session(self, token_hash: str, *, now: float, expires_at: float, live: bool = False) -> None:
        """Note the session was used (``live``: by its page's open socket), extending it."""
        values: dict[str, Any] = {"seen_at": now, "expires_at": sa.func.max(operator_sessions.c.expires_at, expires_at)}
        async with self.db.begin() as conn:
            if conn.dialect.name != "sqlite":
                values["expires_at"] = sa.func.greatest(operator_sessions.c.expires_at, expires_at)
            if live:
                values["live_at"] = now
            await conn.execute(
                sa.update(operator_sessions)
                .where(operator_sessions.c.token_hash == token_hash, operator_sessions.c.expires_at > now)
                .values(**values)
            )

    async def valid_sessions(self, token_hashes: Sequence[str], *, now: float) -> set[str]:
        """Those of ``token_hashes`` that still open the inbox (the open pages'
        sessions, checked together so a disabled operator's pages end at once)."""
        if not token_hashes:
            return set()
        query = (
            sa.select(operator_sessions.c.token_hash)
            .select_from(operator_sessions.join(operators, operators.c.id == operator_sessions.c.operator_id))
            .where(_open_session(now), operator_sessions.c.token_hash.in_(list(token_hashes)))
        )
        async with self.db.connect() as conn:
            return {str(row[0]) for row in await conn.execute(query)}

    async def end_session(self, token_hash: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(sa.delete(operator_sessions).where(operator_sessions.c.token_hash == token_hash))

    async def end_sessions(self, operator_id: int) -> int:
        async with self.db.begin() as conn:
            result = await conn.execute(
                sa.delete(operator_sessions).where(operator_sessions.c.operator_id == operator_id)
            )
        return int(result.rowcount)

    async def purge_sessions(self, now: float) -> int:
        """Delete expired sessions; how many."""
        async with self.db.begin() as conn:
            result = await conn.execute(sa.delete(operator_sessions).where(operator_sessions.c.expires_at <= now))
        return int(result.rowcount)

    async def live_operators(self, since: float) -> list[Operator]:
        """Enabled operators with a page whose socket was live at or after ``since``."""
        live = sa.select(operator_sessions.c.operator_id).where(
            operator_sessions.c.live_at >= since, operator_sessions.c.expires_at > since
        )
        query = (
            sa.select(*_OPERATOR)
            .where(operators.c.disabled_at.is_(None), operators.c.id.in_(live))
            .order_by(operators.c.name)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_operator(row) for row in rows]

    async def mark_assigned(self, operator_id: int, now: float) -> None:
        """Note an automatic assignment, for the round robin."""
        async with self.db.begin() as conn:
            await conn.execute(sa.update(operators).where(operators.c.id == operator_id).values(last_assigned_at=now))

    async def last_assigned(self, operator_ids: Sequence[int]) -> dict[int, float]:
        """When each was last given a conversation automatically (absent: never)."""
        if not operator_ids:
            return {}
        query = sa.select(operators.c.id, operators.c.last_assigned_at).where(
            operators.c.id.in_(list(operator_ids)), operators.c.last_assigned_at.is_not(None)
        )
        async with self.db.connect() as conn:
            return {int(row.id): float(row.last_assigned_at) for row in await conn.execute(query)}

    # -- failed sign-ins ---------------------------------------------------

    async def throttles(self, keys: Sequence[str], *, now: float) -> list[Throttle]:
        """The counted failures under each key that has some."""
        if not keys:
            return []
        query = sa.select(sign_in_failures).where(sign_in_failures.c.key.in_(list(keys)))
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_throttle(row, now) for row in rows]

    async def record_failure(
        self, keys: Sequence[str], *, now: float, window: float, lock_after: dict[str, int], lock_seconds: float
    ) -> list[Throttle]:
        """Count a failed sign-in under each key (a count older than ``window``
        starts again); a key reaching its ``lock_after`` is locked for ``lock_seconds``.

        ``lock_after`` is keyed by the key's kind (``account``, ``address``) or
        by the whole key; a key under neither is counted but never locked."""
        attempts = await self.reserve_attempt(
            keys, now=now, window=window, lock_after=lock_after, lock_seconds=lock_seconds
        )
        return [attempt.throttle for attempt in attempts]

    async def reserve_attempt(
        self, keys: Sequence[str], *, now: float, window: float, lock_after: dict[str, int], lock_seconds: float
    ) -> list[Attempt]:
        """Count a sign-in attempt under each key, as ``record_failure`` does,
        before its password is checked, and tell for each key whether it was
        locked before this attempt.

        One transaction: each key's row is created or locked by one upsert, so
        of attempts made at once (on any replica) each sees the others' counts
        and no more than ``lock_after`` of them find the key unlocked."""
        attempts: list[Attempt] = []
        table = sign_in_failures
        async with self.db.begin() as conn:
            insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
            for key in keys:
                upsert = (
                    insert(table)
                    .values(key=key, failures=0, first_failed_at=now, last_failed_at=now)
                    .on_conflict_do_update(index_elements=["key"], set_={"failures": table.c.failures})
                    .returning(*table.c)
                )
                row = (await conn.execute(upsert)).one()
                failures, first = int(row.failures), float(row.first_failed_at)
                locked_until = row.locked_until
                was_locked = locked_until is not None and locked_until > now
                stale = now - float(row.last_failed_at) > window and not was_locked
                if stale or (locked_until is not None and not was_locked):
                    # The window passed, or a lock ran out: counting starts again.
                    failures, first, locked_until = 0, now, None
                failures += 1
                limit = lock_after.get(key, lock_after.get(key.partition(":")[0]))
                locked_now = limit is not None and failures >= limit and locked_until is None
                if locked_now:
                    locked_until = now + lock_seconds
                await conn.execute(
                    sa.update(table)
                    .where(table.c.key == key)
                    .values(failures=failures, first_failed_at=first, last_failed_at=now, locked_until=locked_until)
                )
                attempts.append(Attempt(Throttle(key, failures, now, locked_until), was_locked, locked_now))
        return attempts

    async def forget_attempt(self, attempt: Attempt) -> None:
        """Take back one attempt's count (a sign-in that succeeded), and the
        lock it set, if it set one."""
        table = sign_in_failures
        values: dict[str, Any] = {"failures": sa.case((table.c.failures > 0, table.c.failures - 1), else_=0)}
        if attempt.locked_now:
            values["locked_until"] = sa.case(
                (table.c.locked_until == attempt.throttle.locked_until, sa.null()), else_=table.c.locked_until
            )
        async with self.db.begin() as conn:
            await conn.execute(sa.update(table).where(table.c.key == attempt.throttle.key).values(**values))

    async def clear_failures(self, key: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(sa.delete(sign_in_failures).where(sign_in_failures.c.key == key))

    async def purge_failures(self, now: float, window: float) -> int:
        """Delete the counts that no longer slow or lock anything: a lock that has
        run out, or no lock and no failure for ``window`` seconds; how many."""
        table = sign_in_failures
        dead = sa.or_(
            table.c.locked_until <= now,
            sa.and_(table.c.locked_until.is_(None), table.c.last_failed_at < now - window),
        )
        async with self.db.begin() as conn:
            result = await conn.execute(sa.delete(table).where(dead))
        return int(result.rowcount)


_OPERATOR = (
    operators.c.id,
    operators.c.name,
    operators.c.is_admin,
    operators.c.disabled_at,
    operators.c.created_at,
)


def _operator(row: Any) -> Operator:
    return Operator(
        id=int(row.id),
        name=str(row.name),
        is_admin=bool(row.is_admin),
        disabled=row.disabled_at is not None,
        created_at=float(row.created_at),
    )


def _open_session(now: float) -> sa.ColumnElement[bool]:
    return sa.and_(operator_sessions.c.expires_at > now, operators.c.disabled_at.is_(None))


def _throttle(row: Any, now: float) -> Throttle:
    if row.locked_until is not None and row.locked_until <= now:
        # The lock has been served: counting starts again with the next failure.
        return Throttle(str(row.key), 0, float(row.last_failed_at), None)
    return Throttle(str(row.key), int(row.failures), float(row.last_failed_at), row.locked_until)
