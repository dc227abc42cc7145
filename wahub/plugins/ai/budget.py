"""A daily token budget: what a backend may spend per UTC day, counted from the model's ``usage``."""

from __future__ import annotations

import datetime as dt

from wahub.core.clock import Clock

__all__ = ["DailyBudget"]


class DailyBudget:
    """Tokens spent today (UTC, by ``clock``) against ``limit``; None means no limit.

    The count is kept by the running daemon: it starts again at zero on a
    restart and each replica keeps its own.
    """

    def __init__(self, limit: int | None, clock: Clock) -> None:
        self.limit = limit
        self._clock = clock
        self._day = self._today()
        self._spent = 0

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self._clock.time(), dt.UTC).date()

    @property
    def spent(self) -> int:
        """Tokens spent so far today."""
        self._roll()
        return self._spent

    def exhausted(self) -> bool:
        """Whether today's tokens are all spent."""
        return self.limit is not None and self.spent >= self.limit

    def spend(self, tokens: int) -> None:
        """Count ``tokens`` against today."""
        self._roll()
        self._spent += max(tokens, 0)

    def _roll(self) -> None:
        today = self._today()
        if today != self._day:
            self._day, self._spent = today, 0
