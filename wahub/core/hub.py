"""The Hub: the running daemon's parts, handed to every hook.

A thin container, built by ``create_app``; it holds no module-level state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import pluggy
from aiohttp import web

from wahub.core.clock import Clock
from wahub.core.errors import SendRefused
from wahub.core.models import OutgoingMessage
from wahub.core.work.lifecycle import within_grace

if TYPE_CHECKING:
    from wahub.core.ai import AIBackend
    from wahub.core.crm import CRMBackend
    from wahub.core.metrics import Metrics
    from wahub.core.policy.checks import Origin, Policy
    from wahub.core.policy.consent import Keyword
    from wahub.core.provider import Provider
    from wahub.core.storage.leadership import Leadership
    from wahub.core.storage.store import Storage

_LOGGER = logging.getLogger(__name__)


@dataclass
class Hub:
    config: dict[str, Any]
    pm: pluggy.PluginManager
    metrics: Metrics
    storage: Storage = field(init=False)
    policy: Policy = field(init=False)
    #: Which singleton roles (a number's dispatcher, the scheduler) this replica runs.
    leadership: Leadership = field(init=False)
    #: Normalized opt-out/opt-in keyword -> what it does (``wahub.core.policy.consent``).
    consent_keywords: dict[str, Keyword] = field(default_factory=dict)
    http: aiohttp.ClientSession = field(init=False)
    providers: dict[str, Provider] = field(default_factory=dict)
    #: AI backends by their ``ai:`` entry's name.
    ai: dict[str, AIBackend] = field(default_factory=dict)
    #: CRM, helpdesk and event-webhook backends by their ``crm:`` entry's name.
    crm: dict[str, CRMBackend] = field(default_factory=dict)
    #: The languages the configured texts are written in (plugins add theirs
    #: while the daemon starts); language detection chooses among them.
    languages: set[str] = field(default_factory=set)
    #: The language of a text among ``languages`` with at least the given
    #: probability (0 to 1), or None when unsure.
    detect_language: Callable[[str, float], str | None] = field(default=lambda _text, _confidence: None)
    #: Set whenever new work lands in the inbox or the outbox, to wake their loops.
    inbox_ready: asyncio.Event = field(default_factory=asyncio.Event)
    outbox_ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when a notification (or a reminder's firing) waits to be written out.
    campaigns_ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when shutdown begins; long-lived handlers (WebSockets) close on it.
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)
    #: Whether webhooks arrive faster than one commit at a time; inbox workers then yield.
    intake_busy: Callable[[], bool] = field(default=lambda: False)
    clock: Clock = field(default_factory=Clock)
    #: Why webhooks cannot be stored now (a short code), or None; read by /readyz.
    intake_stuck: Callable[[], str | None] = field(default=lambda: None)
    #: Why inbox processing is stuck (a short code), or None; read by /readyz.
    inbox_stuck: Callable[[], str | None] = field(default=lambda: None)
    #: Per-daemon objects of plugins and of the core's background parts, each
    #: under its own name (the inbox keeps its live feed and open pages under
    #: ``"inbox"``, the dispatcher itself is under ``"outbound.dispatcher"``).
    state: dict[str, Any] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def provider(self, name: str | None = None) -> Provider:
        """The provider called ``name``, or the first configured one."""
        if name is None:
            return next(iter(self.providers.values()))
        try:
            return self.providers[name]
        except KeyError:
            raise SendRefused("unknown_provider", f"no provider named {name!r}") from None

    async def send(
        self,
        message: OutgoingMessage,
        *,
        provider: str | None = None,
        idempotency_key: str,
        origin: Origin = "business",
    ) -> int:
        """Check ``message`` against the provider's limits and the policy, queue
        it, and return its id; raise ``SendRefused`` with a reason code instead.

        The same ``idempotency_key`` always yields the first message's id, sent
        once, without checking again. ``origin="reply"`` marks an answer to the
        contact's own message, which skips consent and quiet hours.
        """
        target = self.provider(provider)
        existing = await self.storage.messages.find_by_key(idempotency_key)
        if existing is not None:
            return existing
        try:
            decision = await self.policy.check(target, message, origin=origin)
        except SendRefused as exc:
            self.metrics.send_refusals.labels(target.name, exc.reason).inc()
            raise
        message_id, created = await self.storage.messages.enqueue(
            target.name,
            decision.message,
            idempotency_key=idempotency_key,
            contact_id=decision.contact.contact_id,
            conversation_id=decision.contact.conversation_id,
            not_before=decision.not_before,
            origin=origin,
            now=self.clock.time(),
        )
        if created:
            self.outbox_ready.set()
        return message_id

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain_background(self, grace: float) -> None:
        """Wait for background tasks (at shutdown), cancelling what outlives ``grace`` seconds."""
        await within_grace(
            "background",
            set(self._tasks),
            grace=grace,
            on_timeout_message="background tasks still running at shutdown were cancelled",
            logger=_LOGGER,
        )


HUB_KEY = web.AppKey("hub", Hub)
