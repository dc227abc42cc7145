"""The messaging limit of a business number: how many users it may start
conversations with (templates outside a service window) per rolling 24 h.

The limit is the provider option ``messaging_limit`` when set (null: none),
otherwise the provider's tier (``AccountState.messaging_limit``). The users
reached in the last 24 h are read from the stored messages
(``OutboxStore.reached_users``) every ``RELOAD_SECONDS`` and kept up to date in
memory by the dispatcher in between. A bulk send to a new user past the limit
waits until the oldest reached user rolls out of the 24 h; users reached
already, and sends inside an open service window, are free. Conversation sends
are never held (the provider judges them), but they count.
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
        #: Until when bulk sends to new users wait (logged once per pause).
        self.paused_until: float | None = None

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

    def admit(self, user: str, now: float) -> tuple[float | None, float | None]:
        """Count a bulk send to ``user`` at ``now`` if the limit allows it.
        Returns ``(previous, None)`` when it may go (``previous``: when the user
        was reached before, None if new; hand it to ``undo`` if the send does not
        happen), or ``(None, due)`` when it must wait until ``due``."""
        self._roll(now)
        previous = self._reached.get(user)
        limit = self.limit()
        if previous is None and limit is not None and len(self._reached) >= limit:
            due = self._order[0][0] + DAY_SECONDS
            if self.paused_until is None or now >= self.paused_until:
                _LOGGER.warning(
                    "%s reached its messaging limit of %d users per 24 h; bulk sends to new users "
                    "wait %.0f s, until the oldest rolls out",
                    self.provider.name,
                    limit,
                    due - now,
                )
            self.paused_until = due
            return None, due
        self.reached(user, now)
        return previous, None

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
            at, user = self._order[0]
            if self._reached.get(user) != at:
                heapq.heappop(self._order)  # replaced by a later send, or taken back
            elif at + DAY_SECONDS <= now:
                heapq.heappop(self._order)
                del self._reached[user]
            else:
                return


class LimitKeeper:
    """The messaging limits of every number, as the dispatcher uses them: bulk
    sends admitted or held, the count kept true when a send does not happen,
    and the ``messaging_limit_headroom`` gauge."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        load = hub.storage.outbox.reached_users
        self.numbers = {name: MessagingLimit(provider, load) for name, provider in hub.providers.items()}
        #: Bulk sends admitted and not yet sent: when their user was reached before (None: new).
        self._admitted: dict[int, float | None] = {}

    async def refresh(self, providers: Iterable[str], now: float) -> None:
        """Read the reached users again where the last reading is old; show the headroom."""
        for name in providers:
            await self.numbers[name].refresh(now)
            self._show_headroom(name, now)

    async def admit(self, row: OutboxRow, now: float) -> float | None:
        """Count a bulk send to a user outside their window against the number's
        limit; returns when it may go instead if the limit is full."""
        limit = self.numbers[row.provider]
        await limit.refresh(now)
        previous, due = limit.admit(row.message.to, now)
        if due is None:
            self._admitted[row.id] = previous
        else:
            self.hub.metrics.child(self.hub.metrics.bulk_throttled, row.provider, "messaging_limit").inc()
        self._show_headroom(row.provider, now)
        return due

    def settle(self, row: OutboxRow, *, sent: bool, counts: bool, now: float) -> None:
        """After a send of ``row`` at ``now`` (``sent``: the provider accepted it):
        an admitted bulk send that did not happen is taken back; a conversation
        send that ``counts`` (it started a conversation) is counted."""
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
