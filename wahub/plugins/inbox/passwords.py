"""Operators' passwords and names: argon2id hashes, verified off the event
loop, and the same work done for a name that does not exist, so how long a
sign-in takes does not tell which names do."""

from __future__ import annotations

import asyncio
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

#: Shortest password the CLI and the admins' page accept.
MIN_PASSWORD = 8
#: Longest password taken (argon2 takes any length; this bounds the work per request).
MAX_PASSWORD = 1024
#: 1 to 64 characters: lowercase letters, digits, ``.``, ``_`` and ``-``.
NAME_PATTERN = re.compile(r"[a-z0-9._-]{1,64}")
#: Passwords hashed or checked at once per process: a flood of sign-ins waits
#: its turn here instead of filling the thread pool the rest of wahub uses.
CONCURRENT_CHECKS = 4


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an operator's name, or None when it can."""
    if NAME_PATTERN.fullmatch(name):
        return None
    return f"invalid operator name {name!r}: use 1 to 64 characters, lowercase letters, digits, '.', '_' or '-'"


def password_problem(password: str) -> str | None:
    """Why ``password`` is refused, or None when it is fine."""
    if len(password) < MIN_PASSWORD:
        return f"the password is too short: at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"the password is too long: at most {MAX_PASSWORD} characters"
    return None


class Passwords:
    """Hashes and checks passwords with argon2id (argon2-cffi's defaults),
    at most ``concurrent`` at a time off the event loop."""

    def __init__(self, *, concurrent: int = CONCURRENT_CHECKS) -> None:
        self._hasher = PasswordHasher()
        self._turns = asyncio.Semaphore(concurrent)
        # Hashed once per process: what an unknown name's sign-in is checked against.
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    async def hash_async(self, password: str) -> str:
        async with self._turns:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``; with None (an unknown
        name) the same work is done against a dummy hash and False returned."""
        if password_hash is None:
            if self._dummy is None:
                self._dummy = await self.hash_async("wahub: no operator has this name")
            await self._checked(self._dummy, password)
            return False
        return await self._checked(password_hash, password)

    async def _checked(self, password_hash: str, password: str) -> bool:
        async with self._turns:
            return await asyncio.to_thread(self._check, password_hash, password)

    def _check(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(password_hash, password))
        except (VerificationError, InvalidHashError):
            return False
