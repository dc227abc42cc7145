"""The messaging limit of a business number: how many users it may start
conversations with (templates outside a service window) per rolling 24 h.

The limit is the provider option ``messaging_limit`` when set (null: none),
otherwise the provider's tier (``AccountState.messaging_limit``). The users
reached in the last 24 h are read from the stored messages
(``OutboxStore.reached_users``) every ``RELOAD_SECONDS`` and kept up to date in
memory by the dispatcher in between. The dispatcher claims a bulk send to a
new user only while the limit has room, counting the user at the claim: the
others stay in the queue, untouched, until the oldest reached user rolls out of
the 24 h. Users reached already, and sends inside an open service window, are
free. Conversation sends are never held (the provider judges them), but they count.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Awaitable, Callable, Iterable

from wahub.core.hub import Hub
from wahub.core.policy.checks import window_open
from wahub.core.provider import Provider
from wahub.core.storage.outbox import OutboxRow

_LOGGER = logging.getLogger(__name__)

#: The rolling period of the messaging limit.
DAY_SECONDS = 24 * 3600.0
#: How often the reached users are read again from the database.
RELOAD_SECONDS = 600.0


def starts_conversation(row: OutboxRow, now: float) -> bool:
    """Whether sending ``row`` at ``now`` reaches a user outside their service window."""
    return row.message.type == "template" and not window_open(row.last_inbound_at, now)


class MessagingLimit:
    """The users one number reached in the rolling 24 h, against its limit."""

    def __init__(self, provider: Provider, load: Callable[[str, float], Awaitable[dict[str, float]]]) -> None:
        self.provider = provider
        self._load = load
        #: Per user, the latest send that reached them.
        self._reached: dict[str, float] = {}
        #: ``(sent at, user)``, oldest first; entries a later send replaced are skipped.
        self._order: list[tuple[float, str]] = []
        self._loaded_at: float | None = None

    def limit(self) -> float | None:
        """Users per 24 h; None: no limit."""
        if "messaging_limit" in self.provider.config:
            configured: int | None = self.provider.config["messaging_limit"]
            return configured
        tier = self.provider.account_state().messaging_limit
        return None if tier is None or math.isinf(tier) else tier

    async def refresh(self, now: float) -> None:
        """Read the reached users from the database when the last reading is old."""
        if self._loaded_at is not None and now - self._loaded_at < RELOAD_SECONDS:
            return
        found = await self._load(self.provider.name, now - DAY_SECONDS)
        for user, at in self._reached.items():  # sends not stored yet when the query ran
            found[user] = max(at, found.get(user, at))
        self._reached = found
        self._order = sorted((at, user) for user, at in found.items())
        self._loaded_at = now

    def headroom(self, now: float) -> float:
        """New users the number may still reach now (``math.inf``: no limit)."""
        limit = self.limit()
        self._roll(now)
        return math.inf if limit is None else max(0.0, limit - len(self._reached))

    def admit(self, user: str, now: float) -> tuple[bool, float | None]:
        """Count a bulk send to ``user`` at ``now`` if the limit allows it.
        Returns whether it may go and, when it may, when the user was reached
        before (None if new: hand it to ``undo`` if the send does not happen)."""
        self._roll(now)
        previous = self._reached.get(user)
        limit = self.limit()
        if previous is None and limit is not None and len(self._reached) >= limit:
            return False, None
        self.reached(user, now)
        return True, previous

    def frees_at(self) -> float | None:
        """When the oldest reached user rolls out of the 24 h (None: none reached)."""
        self._roll_stale()
        return self._order[0][0] + DAY_SECONDS if self._order else None

    def reached(self, user: str, now: float) -> None:
        """A send at ``now`` reached ``user`` outside their service window."""
        self._reached[user] = now
        heapq.heappush(self._order, (now, user))

    def undo(self, user: str, previous: float | None) -> None:
        """Take back an ``admit`` whose send did not happen."""
        if previous is None:
            self._reached.pop(user, None)
        else:
            self._reached[user] = previous
            heapq.heappush(self._order, (previous, user))

    def _roll(self, now: float) -> None:
        """Forget users whose latest send is more than 24 h old."""
        while self._order:
            self._roll_stale()
            if not self._order:
                return
            at, user = self._order[0]
            if at + DAY_SECONDS > now:
                return
            heapq.heappop(self._order)
            del self._reached[user]

    def _roll_stale(self) -> None:
        """Drop the oldest entries a later send replaced or an ``undo`` took back."""
        while self._order and self._reached.get(self._order[0][1]) != self._order[0][0]:
            heapq.heappop(self._order)


class LimitKeeper:
    """The messaging limits of every number, as the dispatcher uses them: bulk
    sends admitted at their claim or left waiting, the count kept true when a
    send does not happen, and the ``messaging_limit_headroom`` gauge."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        load = hub.storage.outbox.reached_users
        self.numbers = {name: MessagingLimit(provider, load) for name, provider in hub.providers.items()}
        #: Bulk sends admitted and not yet sent: when their user was reached before (None: new).
        self._admitted: dict[int, float | None] = {}
        #: Per number, the bulk sends claims left waiting for the limit and not claimed since.
        self._waiting: dict[str, set[int]] = {name: set() for name in hub.providers}
        #: Per number, those the claim under way leaves waiting.
        self._left: dict[str, set[int]] = {name: set() for name in hub.providers}

    async def refresh(self, providers: Iterable[str], now: float) -> None:
        """Read the reached users again where the last reading is old; show the headroom."""
        for name in providers:
            await self.numbers[name].refresh(now)
            self._show_headroom(name, now)

    def admit(self, row: OutboxRow, now: float) -> bool:
        """Whether the bulk ``row`` may be claimed at ``now``: yes when it starts
        no conversation, or when the number's limit has room for its user, who
        is then counted (until ``settle`` or ``release`` says the send did not
        happen). A row refused waits in the queue; ``claimed`` reports it."""
        if not starts_conversation(row, now):
            return True
        admitted, previous = self.numbers[row.provider].admit(row.message.to, now)
        if not admitted:
            self._left[row.provider].add(row.id)
            return False
        self._admitted[row.id] = previous
        self._waiting[row.provider].discard(row.id)
        return True

    def claimed(self, providers: Iterable[str], now: float) -> None:
        """After a claim: count the bulk sends it left waiting for the first time,
        warn when a number's new users start waiting, and show the headroom."""
        for name in providers:
            left, waiting = self._left[name], self._waiting[name]
            self._left[name] = set()
            if left and not waiting:
                limit = self.numbers[name]
                frees_at = limit.frees_at()
                _LOGGER.warning(
                    "%s reached its messaging limit of %s users per 24 h; bulk sends to new users "
                    "wait in the queue, the next for %.0f s, until the oldest rolls out",
                    name,
                    limit.limit(),
                    (frees_at or now) - now,
                )
            fresh = len(left - waiting)
            if fresh:
                self.hub.metrics.child(self.hub.metrics.bulk_throttled, name, "messaging_limit").inc(fresh)
            waiting |= left
            if self.numbers[name].headroom(now):
                waiting.clear()  # the wait is over: a later one is a new one
            self._show_headroom(name, now)

    def release(self, row: OutboxRow) -> None:
        """Take back the admission of ``row``, claimed and not sent (put back in
        the queue, or its claim failed); nothing when it had none."""
        if row.id in self._admitted:
            self.numbers[row.provider].undo(row.message.to, self._admitted.pop(row.id))

    def settle(self, row: OutboxRow, *, sent: bool, counts: bool, now: float) -> None:
        """After a send of ``row`` at ``now`` (``sent``: the provider accepted it):
        an admitted bulk send that did not happen is taken back; a send not
        admitted that ``counts`` (it started a conversation) is counted."""
        limit = self.numbers.get(row.provider)
        if limit is None:
            return
        if row.id in self._admitted:
            previous = self._admitted.pop(row.id)
            if not sent:
                limit.undo(row.message.to, previous)
        elif sent and counts:
            limit.reached(row.message.to, now)
        self._show_headroom(row.provider, now)

    def _show_headroom(self, provider: str, now: float) -> None:
        headroom = self.numbers[provider].headroom(now)
        self.hub.metrics.child(self.hub.metrics.messaging_limit_headroom, provider).set(headroom)
