"""The one backoff: how long to wait before trying failed work again."""

from __future__ import annotations

import random

#: Doublings past which every delay is at its cap anyway (keeps ``2.0 ** attempt`` finite).
_MAX_DOUBLINGS = 512


def backoff(attempt: int, *, base: float, cap: float, jitter: float = 0.0) -> float:
    """Seconds to wait after failed try ``attempt``: ``base * 2 ** attempt``,
    at most ``cap``; with ``jitter``, a random share of up to ``jitter`` is
    taken off it (0.5: anything from half the delay to all of it)."""
    delay = min(base * 2.0 ** min(attempt, _MAX_DOUBLINGS), cap)
    if jitter:
        delay *= random.uniform(1.0 - jitter, 1.0)
    return delay
