"""The inbox's operators: their accounts, their signed-in sessions and the
failed sign-ins that slow and then lock an account or an address.

Passwords arrive here already hashed (the inbox hashes them with argon2id);
session cookies are stored only as the SHA-256 of their token, so a copy of
the database opens no session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wahub.core.storage.engine import Database


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


@dataclass(frozen=True)
class Throttle:
    """Failed sign-ins counted under one key (``account:<name>``, ``address:<ip>``)."""

    key: str
    failures: int
    last_failed_at: float
    locked_until: float | None


class OperatorStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- accounts ----------------------------------------------------------

    async def add(self, name: str, password_hash: str, *, admin: bool, now: float) -> Operator | None:
        """Create an operator; None when the name is taken."""
        raise NotImplementedError

    async def get(self, name: str) -> Operator | None:
        raise NotImplementedError

    async def by_id(self, operator_id: int) -> Operator | None:
        raise NotImplementedError

    async def credentials(self, name: str) -> tuple[Operator, str] | None:
        """The operator and their password hash, for a sign-in."""
        raise NotImplementedError

    async def all(self) -> list[Operator]:
        """Every operator, by name."""
        raise NotImplementedError

    async def set_password(self, name: str, password_hash: str, *, now: float) -> bool:
        """Change the password and end every session of the operator; False if unknown."""
        raise NotImplementedError

    async def set_disabled(self, name: str, disabled: bool, *, now: float) -> bool:
        """Disable (ending every session at once) or enable again; False if unknown."""
        raise NotImplementedError

    async def set_admin(self, name: str, admin: bool, *, now: float) -> bool:
        raise NotImplementedError

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
        raise NotImplementedError

    async def session(self, token_hash: str, *, now: float) -> Session | None:
        """The session, or None when it is unknown, expired or its operator disabled."""
        raise NotImplementedError

    async def touch_session(self, token_hash: str, *, now: float, expires_at: float, live: bool = False) -> None:
        """Note the session was used (``live``: by its page's open socket), extending it."""
        raise NotImplementedError

    async def valid_sessions(self, token_hashes: Sequence[str], *, now: float) -> set[str]:
        """Those of ``token_hashes`` that still open the inbox (the open pages'
        sessions, checked together so a disabled operator's pages end at once)."""
        raise NotImplementedError

    async def end_session(self, token_hash: str) -> None:
        raise NotImplementedError

    async def end_sessions(self, operator_id: int) -> int:
        raise NotImplementedError

    async def purge_sessions(self, now: float) -> int:
        """Delete expired sessions; how many."""
        raise NotImplementedError

    async def live_operators(self, since: float) -> list[Operator]:
        """Enabled operators with a page whose socket was live at or after ``since``."""
        raise NotImplementedError

    async def mark_assigned(self, operator_id: int, now: float) -> None:
        """Note an automatic assignment, for the round robin."""
        raise NotImplementedError

    async def last_assigned(self, operator_ids: Sequence[int]) -> dict[int, float]:
        """When each was last given a conversation automatically (absent: never)."""
        raise NotImplementedError

    # -- failed sign-ins ---------------------------------------------------

    async def throttles(self, keys: Sequence[str], *, now: float) -> list[Throttle]:
        """The counted failures under each key that has some."""
        raise NotImplementedError

    async def record_failure(
        self, keys: Sequence[str], *, now: float, window: float, lock_after: dict[str, int], lock_seconds: float
    ) -> list[Throttle]:
        """Count a failed sign-in under each key (a count older than ``window``
        starts again); a key reaching its ``lock_after`` is locked for ``lock_seconds``."""
        raise NotImplementedError

    async def clear_failures(self, key: str) -> None:
        raise NotImplementedError
