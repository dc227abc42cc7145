"""The dispatcher: sends queued messages through their provider.

Every send is a ``messages`` row first. The dispatcher of a business number
(one replica at a time, see ``wahub.core.runtime.leadership``) claims due rows with a
lease and sends each recipient's messages in order, recipients in parallel:

- **Pacing.** Sends through one number are spaced to its
  ``messages_per_second``; each recipient gets ``pair_limit.burst`` messages
  at once, then one every ``pair_limit.every`` seconds. A message held back
  for more than a moment goes back to the queue, due when it may go, and so do
  the recipient's later messages, keeping their order.
- **Lanes.** Conversation messages (lane 0) are claimed before bulk ones
  (lane 1, campaigns), and take the next free slot ahead of any bulk send not
  started; a number keeps only about a second of bulk sends claimed
  (``Pacer.bulk_window``). A bulk send to a new user is claimed only while
  the number's messaging limit has room (``wahub.core.outbound.limits``): the
  others wait in the queue, untouched, and never hold back that user's
  conversation messages. Bulk sends slow down when the provider says the
  number's throughput was exceeded.
- **Cancelled notifications.** Their messages are not claimed; one claimed
  already fails with ``cancelled`` just before its send (the cancelled
  notifications among those at hand are read at each claim), or when it would
  go back to the queue.
- **Failures.** A retryable failure (network, 5xx, throughput and pair-rate
  limits) is tried again with exponential backoff and jitter until
  ``retry_for`` after the message was queued; the recipient's later messages
  wait behind it. Any other failure is final and keeps the provider's code and
  reason. Refused credentials pause the provider (``/readyz`` says why) and
  its messages stay queued; a send is tried again every ``PAUSE_SECONDS``.
- **Quiet hours.** A business-initiated message whose retry or deferral would
  fall inside the contact's quiet hours is due at their end instead, and one
  claimed inside them goes back to the queue until then. Replies never wait.
- **Recording.** Provider ids are stored by one writer that commits whatever
  finished while its last commit ran, so a sent message stays unrecorded only
  for the length of one commit. While the database is unreachable the writer
  keeps its ids and tries again until they are stored, and the leases of those
  messages are renewed all that time (``wahub.core.work.leases``): a message the
  provider accepted is not claimed, so not sent, again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiohttp import web

from wahub.core.errors import ProviderError, Throttle
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.outbound.limits import LimitKeeper, starts_conversation
from wahub.core.outbound.pacing import Pacer, PairLimiter, Recipient
from wahub.core.outbound.recorder import Recorder
from wahub.core.plugins import call_hook, report_exception
from wahub.core.policy.checks import WINDOWLESS_TYPES, window_open
from wahub.core.policy.lessons import learn_from_refusal
from wahub.core.privacy import masked
from wahub.core.provider import Provider
from wahub.core.storage.campaigns import CANCELLED_CODE
from wahub.core.storage.leadership import dispatch_role
from wahub.core.storage.leases import database_unreachable
from wahub.core.storage.outbox import CANCELLED_REASON, OutboxRow
from wahub.core.work.backoff import backoff
from wahub.core.work.leases import LEASE_SECONDS, LeaseKeeper
from wahub.core.work.lifecycle import SHUTDOWN_GRACE, within_grace
from wahub.core.work.loop import ClaimLoop

_LOGGER = logging.getLogger(__name__)

BATCH = 64
#: Messages claimed and not yet finished, at most.
MAX_IN_FLIGHT = 256
POLL_SECONDS = 1.0
#: A send held back by pacing for longer than this goes back to the queue instead of waiting in memory.
MAX_HOLD_SECONDS = 1.0
#: Between tries of a provider paused for refused credentials.
PAUSE_SECONDS = 60.0
#: The dispatcher's key in ``Hub.state``.
DISPATCHER_STATE = "outbound.dispatcher"
#: Spacing between the due times of a recipient's messages put back in the queue, to keep their order.
_ORDER_STEP = 0.001


#: Backoff before attempt ``attempt + 1``: 2 ** (attempt - 1) s capped at 10 minutes, less up to half (jitter).
RETRY_BASE_SECONDS = 0.5
RETRY_CAP_SECONDS = 600.0
RETRY_JITTER = 0.5


class Dispatcher:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.recorder = Recorder(hub)
        # A lapsed claim needs no action: the row is skipped when its turn to be sent comes.
        self.leases = LeaseKeeper(
            "outbox", hub.storage.leases.renew_outbox, hub.storage.leases.hand_back_outbox, lambda claim: None
        )
        #: Messages from the provider's call to the storing of its answer.
        self._sending: set[int] = set()
        self.pacers = {name: Pacer(p.config["messages_per_second"]) for name, p in hub.providers.items()}
        self.pairs = {name: PairLimiter(p.config["pair_limit"]) for name, p in hub.providers.items()}
        self.limits = LimitKeeper(hub)
        #: Per provider, bulk rows claimed and not yet finished.
        self._bulk = dict.fromkeys(hub.providers, 0)
        #: Providers this replica dispatches for.
        self.leading: set[str] = set()
        self._queues: dict[Recipient, deque[OutboxRow]] = {}
        #: Per recipient, the earliest time its next message may go (a retry or pacing ahead of it).
        self._gates: dict[Recipient, float] = {}
        #: The cancelled notifications among those of the messages at hand, as the last claim read them.
        self._cancelled: set[int] = set()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._paused_until: dict[str, float] = {}
        self._workers: set[asyncio.Task[None]] = set()
        #: Replica role -> the provider it dispatches for.
        self._roles = {dispatch_role(name): name for name in hub.providers}
        self.claims = ClaimLoop(
            "queued messages",
            capacity=self._capacity,
            claim=self._claim,
            start=self._queue_claimed,
            leases=self.leases,
            wake=hub.outbox_ready,
            poll=POLL_SECONDS,
            unreachable=functools.partial(database_unreachable, from_storage=True),
            report=lambda exc: report_exception(hub, exc, {"loop": "dispatcher"}),
            logger=_LOGGER,
        )

    def active_providers(self) -> list[str]:
        now = time.monotonic()
        active = []
        for name in self.leading:
            provider = self.hub.providers[name]
            if provider.paused is not None and now >= self._paused_until.get(name, 0.0):
                provider.paused = None  # try again: the next send tells whether the credentials work now
            if provider.paused is None:
                active.append(name)
        return active

    def _capacity(self) -> tuple[int, float]:
        return min(BATCH, MAX_IN_FLIGHT - self._in_flight), POLL_SECONDS

    async def _claim(self, count: int) -> list[OutboxRow] | None:
        providers = self.active_providers()
        if not providers:
            return None
        now = self.hub.clock.time()
        await self.limits.refresh(providers, now)  # users who rolled out of the 24 h free the limit
        await self._read_cancelled()
        bulk = {name: max(0, self.pacers[name].bulk_window() - self._bulk[name]) for name in providers}
        admitted: list[OutboxRow] = []

        def admit(row: OutboxRow) -> bool:
            # A row already sent, its answer being stored, needs no second claim.
            if row.id in self._sending or not self.limits.admit(row, now):
                return False
            admitted.append(row)
            return True

        try:
            rows = await self.hub.storage.outbox.claim_outbox(
                count, LEASE_SECONDS, providers, now=now, bulk=bulk, admit=admit
            )
        except BaseException:
            for row in admitted:  # not claimed after all
                self.limits.release(row)
            raise
        self.limits.claimed(providers, now)
        return [row for row in rows if row.id not in self._sending]

    async def _read_cancelled(self) -> None:
        """Read which notifications of the messages at hand were cancelled since their claim."""
        at_hand = {row.campaign_id for queue in self._queues.values() for row in queue if row.campaign_id is not None}
        self._cancelled = await self.hub.storage.outbox.cancelled_campaigns(at_hand)

    def _queue_claimed(self, rows: Sequence[OutboxRow]) -> None:
        for row in rows:
            self._queue(row)

    def _queue(self, row: OutboxRow) -> None:
        key = (row.provider, row.message.to)
        self._in_flight += 1
        self._bulk[row.provider] += row.lane
        self._idle.clear()
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(row)  # its worker is running and takes it in order
            return
        self._queues[key] = deque([row])
        worker = asyncio.create_task(self._drain(key), name=f"wahub-send-{row.provider}")
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

    async def _drain(self, key: Recipient) -> None:
        queue = self._queues[key]
        try:
            while queue:
                row = queue[0]
                try:
                    held = await self._hold(key, row)
                    if held:
                        await self._put_back(key, queue)
                        break
                    await self._send_counted(row)
                    self.leases.done((row.id, row.attempts))
                except Exception as exc:  # noqa: BLE001 - the other recipients' sends go on
                    # Handed back to the queue: sent again as soon as the database takes it.
                    _LOGGER.error("sending message %d failed unexpectedly: %r", row.id, exc)
                    report_exception(self.hub, exc, {"message_id": row.id, "provider": row.provider})
                    self.leases.hand_back((row.id, row.attempts))
                if queue and queue[0] is row:
                    queue.popleft()
                    self._finished([row])
        finally:
            del self._queues[key]

    def _finished(self, rows: list[OutboxRow]) -> None:
        self._in_flight -= len(rows)
        refill = False
        for row in rows:
            self._bulk[row.provider] -= row.lane
            self.limits.release(row)  # admitted at its claim and not sent: its user is not reached
            # Bulk rows are claimed again once half the number's window has gone.
            refill |= not row.lane or self._bulk[row.provider] <= self.pacers[row.provider].bulk_window() // 2
        if refill and self._in_flight <= MAX_IN_FLIGHT // 2:
            self.hub.outbox_ready.set()
        if not self._in_flight:
            self._idle.set()

    async def _hold(self, key: Recipient, row: OutboxRow) -> bool:
        """Wait for pacing when it is short; True when the row must go back to the queue instead."""
        now = self.hub.clock.time()
        ready = max(self._gates.get(key, 0.0), self.pairs[row.provider].free_at(key, now))
        if ready - now > MAX_HOLD_SECONDS or row.provider not in self.leading:
            self._gates[key] = max(ready, now)
            return True
        if ready > now:
            await asyncio.sleep(ready - now)
        self._gates.pop(key, None)
        return False

    async def _send_counted(self, row: OutboxRow) -> None:
        """Send ``row``, keeping the messaging limit's count true: a bulk send
        admitted at its claim that did not happen is taken back, any other send
        that started a conversation is counted."""
        now = self.hub.clock.time()
        counts = starts_conversation(row, now)
        sent = False
        try:
            sent = await self._send(row)
        finally:
            self.limits.settle(row, sent=sent, counts=counts, now=now)

    async def _put_back(self, key: Recipient, queue: deque[OutboxRow]) -> None:
        """Return the recipient's remaining rows to the queue behind its gate, in order
        (business messages that would then fall in quiet hours: at their end)."""
        due = self._gates.get(key, self.hub.clock.time())
        rows = list(queue)
        queue.clear()
        deferred = False
        try:
            await self.hub.storage.outbox.defer(
                [(row.id, self._due(row, due + i * _ORDER_STEP)) for i, row in enumerate(rows)]
            )
            deferred = True
        finally:
            for row in rows:
                # Rows the database did not take back are handed back by the next heartbeat.
                (self.leases.done if deferred else self.leases.hand_back)((row.id, row.attempts))
            self._finished(rows)

    async def _send(self, row: OutboxRow) -> bool:
        """Send ``row`` now; True when the provider accepted it."""
        hub = self.hub
        provider = hub.providers.get(row.provider)
        if provider is None:
            await self._fail(row, "unknown_provider", f"provider {row.provider!r} is no longer configured")
            return False
        if row.message.type not in WINDOWLESS_TYPES and not window_open(row.last_inbound_at, hub.clock.time()):
            await self._fail(row, "window_closed", "the 24-hour service window closed before the message could go")
            return False
        if await self._held_for_quiet_hours(row):
            return False
        await self._slot(row)
        claim = (row.id, row.attempts)
        if not self.leases.holds(claim):
            _LOGGER.info("the lease of message %d ran out before its turn; leaving it to the next claim", row.id)
            return False
        if row.campaign_id in self._cancelled:
            await self._drop_cancelled(row)
            return False
        self.pairs[row.provider].take((row.provider, row.message.to), hub.clock.time())
        started = self.pacers[row.provider].clock()
        # From here the send cannot be undone: its claim holds however late a
        # heartbeat comes, and no claim of this process takes the row again.
        self.leases.pin(claim)
        self._sending.add(row.id)
        try:
            return await self._call(row, provider, started)
        finally:
            self._sending.discard(row.id)

    async def _call(self, row: OutboxRow, provider: Provider, started: float) -> bool:
        """Call the provider for ``row`` and store what it answered; True when it accepted it."""
        hub = self.hub
        try:
            result = await provider.send(row.message)
        except ProviderError as exc:
            if exc.auth:
                await self._pause(provider, row, exc)
                return False
            if exc.lesson is not None:  # learnt before the failure shows
                evidence = f"wahub.{row.id}"
                await learn_from_refusal(
                    hub.storage, row.provider, row.message, exc.lesson, code=exc.code, evidence=evidence
                )
            if exc.throttle is not None:
                self._throttled(row.provider, exc.throttle, started)
            await self._failed_attempt(row, exc.code, str(exc), retryable=exc.retryable)
            return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self._failed_attempt(row, "network", f"{type(exc).__name__}: {exc}", retryable=True)
            return False
        except Exception as exc:
            _LOGGER.exception("provider %s raised while sending message %d", row.provider, row.id)
            report_exception(hub, exc, {"message_id": row.id, "provider": row.provider})
            await self._failed_attempt(row, "provider_error", f"{type(exc).__name__}: {exc}", retryable=True)
            return False
        # Accepted: the claim (pinned) holds until the provider's id is stored.
        early_failure = await self.recorder.record(row, result)
        if early_failure is not None:  # its failed status came before the answer
            lesson = provider.classify_error(early_failure).lesson
            evidence = result.provider_message_id
            await learn_from_refusal(
                hub.storage, row.provider, row.message, lesson, code=early_failure, evidence=evidence
            )
        hub.metrics.child(hub.metrics.sends, row.provider, "sent", "").inc()
        await call_hook(hub, "outbound_message", hub=hub, message=row.message, result=result)
        return True

    async def _slot(self, row: OutboxRow) -> None:
        """Wait for the number's next slot: a bulk row only for one free now."""
        pacer = self.pacers[row.provider]
        if row.lane:
            await pacer.bulk_slot()
            return
        wait = pacer.reserve()
        if wait:
            await asyncio.sleep(wait)

    def _throttled(self, provider: str, throttle: Throttle, started: float) -> None:
        """The provider said a sending limit was hit by a send that went out at
        ``started`` (on the pacer's clock): a number's throughput slows its bulk
        sends; a recipient's pair rate holds only that recipient (its retry does)."""
        self.hub.metrics.child(self.hub.metrics.bulk_throttled, provider, throttle).inc()
        if throttle == "throughput":
            rate = self.pacers[provider].throttled(started)
            if rate is not None:
                _LOGGER.warning(
                    "%s: the provider said its throughput was exceeded; bulk sends slow to %.1f/s", provider, rate
                )

    def _due(self, row: OutboxRow, at: float) -> float:
        """When ``row`` may next go, given ``at``: the end of the contact's quiet
        hours when ``at`` falls inside them and the row is business-initiated."""
        end = self.hub.policy.quiet_end(at, row.timezone, origin=row.origin, kind=row.message.type)
        return at if end is None else end

    async def _held_for_quiet_hours(self, row: OutboxRow) -> bool:
        """Hand a business-initiated row claimed inside the contact's quiet hours
        back, due at their end (or fail it when its window closes before); True then."""
        now = self.hub.clock.time()
        due = self._due(row, now)
        if due == now:
            return False
        if row.message.type not in WINDOWLESS_TYPES and not window_open(row.last_inbound_at, due):
            await self._fail(row, "window_closed", "the 24-hour service window closes before the quiet hours end")
            return True
        _LOGGER.info("message %d waits %.0f s for the end of the contact's quiet hours", row.id, due - now)
        await self.hub.storage.outbox.defer([(row.id, due)])
        return True

    async def _pause(self, provider: Provider, row: OutboxRow, exc: ProviderError) -> None:
        if provider.paused is None and self._paused_until.get(provider.name) is None:
            _LOGGER.error(
                "provider %s refused its credentials (code %s): %s. Its messages stay queued; "
                "sending resumes once the credentials work (tried every %.0f s).",
                provider.name,
                exc.code,
                masked(str(exc), row.message.to),
                PAUSE_SECONDS,
            )
        provider.paused = f"credentials refused (code {exc.code}): {exc}"
        self._paused_until[provider.name] = time.monotonic() + PAUSE_SECONDS
        self.hub.metrics.sends.labels(row.provider, "paused", exc.code or "").inc()
        key = (row.provider, row.message.to)
        self._gates[key] = self.hub.clock.time() + PAUSE_SECONDS
        await self.hub.storage.outbox.defer([(row.id, self._due(row, self._gates[key]))])
        self._gates[key] += _ORDER_STEP

    async def _failed_attempt(self, row: OutboxRow, code: str | None, reason: str, *, retryable: bool) -> None:
        now = self.hub.clock.time()
        retry_at = now + backoff(row.attempts, base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS, jitter=RETRY_JITTER)
        due = self._due(row, retry_at)  # a business message's retry waits out quiet hours
        validity = self.hub.providers[row.provider].config["retry_for"]
        if retryable and due < row.created_at + validity:
            _LOGGER.warning(
                "send of message %d failed (%s), retrying in %.1f s", row.id, masked(reason, row.message.to), due - now
            )
            self.hub.metrics.sends.labels(row.provider, "retry", code or "").inc()
            if not await self.hub.storage.outbox.reschedule(row.id, retry_at=due, error_code=code, reason=reason):
                _LOGGER.info("message %d is not retried: its notification was cancelled", row.id)
                return
            # The recipient's later messages wait behind this one until its backoff ends;
            # quiet hours then hold only business messages, each on its own.
            self._gates[(row.provider, row.message.to)] = retry_at + _ORDER_STEP
            return
        await self._fail(row, code, reason)

    async def _drop_cancelled(self, row: OutboxRow) -> None:
        _LOGGER.info("message %d is not sent: its notification was cancelled", row.id)
        self.hub.metrics.sends.labels(row.provider, "failed", CANCELLED_CODE).inc()
        await self.hub.storage.outbox.mark_failed(row.id, error_code=CANCELLED_CODE, reason=CANCELLED_REASON)

    async def _fail(self, row: OutboxRow, code: str | None, reason: str) -> None:
        _LOGGER.error("message %d failed: %s", row.id, masked(reason, row.message.to))
        self.hub.metrics.sends.labels(row.provider, "failed", code or "").inc()
        await self.hub.storage.outbox.mark_failed(row.id, error_code=code, reason=reason)

    async def acquired(self, role: str) -> None:
        name = self._roles.get(role)
        if name is None:
            return
        if self.hub.storage.is_sqlite:
            # This process owns the file since it started: claims left in it are a crash's.
            # On PostgreSQL they run out with their leases, unless their process renews them.
            released = await self.hub.storage.outbox.release_outbox_claims(name)
            if released:
                _LOGGER.warning(
                    "%d sends of %s were in flight at the last shutdown; sending them again", released, name
                )
        self.leading.add(name)
        # The messaging limit's headroom shows from the start, before the first claim.
        await self.limits.refresh([name], self.hub.clock.time())
        self.hub.outbox_ready.set()

    async def lost(self, role: str) -> None:
        self.leading.discard(self._roles.get(role, ""))

    async def stop(self, grace: float) -> None:
        """Stop claiming; give sends in flight ``grace`` seconds. Rows not sent stay leased
        and go again when their leases run out (on SQLite, at the next start)."""
        self.claims.stop()
        await within_grace(
            "sends",
            self._idle.wait(),
            grace=grace,
            on_timeout_message="sends still in flight at shutdown are retried at the next start",
            cancel=self._workers,
            logger=_LOGGER,
        )
        await self.recorder.stop()
        # Nothing is handed back: a send cut off may have reached the provider.
        await self.leases.stop(within=0)


async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    dispatcher = Dispatcher(hub)
    # Its pacing state (rates, messaging limits) is readable while the daemon runs.
    hub.state[DISPATCHER_STATE] = dispatcher
    hub.leadership.on_change(dispatcher.acquired, dispatcher.lost)
    task = dispatcher.claims.start_task("wahub-dispatcher")
    dispatcher.leases.start()
    yield
    await dispatcher.stop(SHUTDOWN_GRACE["sends"])
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
