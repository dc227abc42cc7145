"""Pacing of the dispatcher (``wahub.core.outbound.dispatcher``): sends through one number
spaced to its rate (``Pacer``), and each recipient's own allowance, a token
bucket (``PairLimiter``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

#: A recipient of one provider: ``(provider, address)``.
Recipient = tuple[str, str]


class Pacer:
    """Spaces sends through one number evenly at ``rate`` per second (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    def reserve(self) -> float:
        """Take the next slot; returns how long to wait for it."""
        if not self.interval:
            return 0.0
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval
        return slot - now


class PairLimiter:
    """Per recipient, a token bucket of ``burst`` tokens refilled one per ``every`` seconds."""

    def __init__(self, config: Mapping[str, Any] | None) -> None:
        self.burst = config["burst"] if config else 0
        self.every = config["every"] if config else 0.0
        self._buckets: dict[Recipient, tuple[float, float]] = {}

    def _tokens(self, key: Recipient, now: float) -> float:
        tokens, stamp = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - stamp) / self.every)

    def free_at(self, key: Recipient, now: float) -> float:
        """When ``key``'s next message may go (``now`` or later)."""
        if not self.burst or not self.every:
            return now
        tokens = self._tokens(key, now)
        return now if tokens >= 1.0 else now + (1.0 - tokens) * self.every

    def take(self, key: Recipient, now: float) -> None:
        if not self.burst or not self.every:
            return
        if len(self._buckets) > 10_000:
            # Buckets that have refilled completely hold no information.
            for full in [k for k in self._buckets if self._tokens(k, now) >= self.burst]:
                del self._buckets[full]
        self._buckets[key] = (self._tokens(key, now) - 1.0, now)
