"""Pacing of the dispatcher (``wahub.core.outbound.dispatcher``): sends through one number
spaced to its rate (``Pacer``), and each recipient's own allowance, a token
bucket (``PairLimiter``).

The pacer serves two lanes. Conversation sends (replies, API sends, operators)
take the next free slot at once; bulk sends (campaigns) wait until a slot is
free now, so a reply queued behind any number of bulk sends goes after at most
the bulk sends already started plus one interval. Bulk sends also keep their own,
adaptive rate: halved (down to ``FLOOR_RATE``) when the provider says the
number's throughput was exceeded, and raised again by ``RECOVERY_STEP`` of the
configured rate per ``RECOVERY_SECONDS`` without such an error. Only a refusal
of a send that went out after the last halving halves the rate again: sends in
flight together were all paced at the old rate, so their refusals are one signal.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

#: A recipient of one provider: ``(provider, address)``.
Recipient = tuple[str, str]

#: Bulk sends per second never slow down below this (or the configured rate, if lower).
FLOOR_RATE = 1.0
#: After this many seconds without a throughput error, the bulk rate climbs one step...
RECOVERY_SECONDS = 10.0
#: ...of this share of the configured rate.
RECOVERY_STEP = 0.1
#: Bulk rows a number keeps claimed or waiting for a slot: about this many seconds of sends.
BULK_WINDOW_SECONDS = 1.0
#: The bulk window of an unpaced number, and the smallest window of a paced one.
UNPACED_BULK_WINDOW = 64
MIN_BULK_WINDOW = 2


class Pacer:
    """Spaces sends through one number evenly at ``rate`` per second (None: no limit),
    conversation sends ahead of bulk ones. ``clock`` is monotonic seconds."""

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.interval = 1.0 / rate if rate else 0.0
        #: The pacer's time (monotonic seconds); ``throttled`` takes a send's start on it.
        self.clock = clock
        self._next = 0.0
        self._next_bulk = 0.0
        # Bulk sends take slots one at a time, in the order they asked.
        self._bulk_turn = asyncio.Lock()
        #: The bulk rate right after the last throughput error, and when it came (None: never).
        self.slowed: tuple[float, float] | None = None
        #: When the bulk rate was last halved (None: never).
        self._halved_at: float | None = None

    def reserve(self) -> float:
        """Take the next slot for a conversation send; returns how long to wait for it."""
        if not self.interval:
            return 0.0
        now = self.clock()
        slot = max(now, self._next)
        self._next = slot + self.interval
        return slot - now

    async def bulk_slot(self) -> None:
        """Wait for a slot free now for a bulk send, and take it: a conversation send
        reserving meanwhile goes first."""
        if not self.interval:
            return
        async with self._bulk_turn:
            while True:
                now = self.clock()
                free = max(self._next, self._next_bulk)
                if free <= now:
                    self._next = now + self.interval
                    self._next_bulk = now + self.bulk_interval(now)
                    return
                await asyncio.sleep(free - now)

    def bulk_rate(self, now: float | None = None) -> float | None:
        """Bulk sends per second at ``now`` (default: the clock's time); None: unpaced."""
        if self.rate is None:
            return None
        if self.slowed is None:
            return self.rate
        slowed, since = self.slowed
        steps = math.floor(max(0.0, (self.clock() if now is None else now) - since) / RECOVERY_SECONDS)
        return min(self.rate, slowed + steps * RECOVERY_STEP * self.rate)

    def bulk_interval(self, now: float | None = None) -> float:
        """Seconds between two bulk sends at ``now``."""
        rate = self.bulk_rate(now)
        return 1.0 / rate if rate else 0.0

    def bulk_window(self) -> int:
        """How many bulk rows the number keeps claimed or waiting for a slot."""
        rate = self.bulk_rate()
        if rate is None:
            return UNPACED_BULK_WINDOW
        return max(MIN_BULK_WINDOW, math.ceil(rate * BULK_WINDOW_SECONDS))

    def throttled(self, started: float) -> float | None:
        """The provider refused a send that went out at ``started`` (on ``clock``)
        because the number's throughput was exceeded: halve the bulk rate (not
        below ``FLOOR_RATE``) unless it was halved after that send went out, and
        start its recovery again; returns the bulk rate now (None: unpaced)."""
        if self.rate is None:
            return None
        now = self.clock()
        current = self.bulk_rate(now)
        assert current is not None
        if self._halved_at is None or started > self._halved_at:
            current = max(min(FLOOR_RATE, self.rate), current / 2)
            self._halved_at = now
        self.slowed = (current, now)
        return current


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
