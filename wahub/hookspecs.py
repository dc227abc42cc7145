"""Every hook a wahub plugin can implement.

Implementations are plain functions (or methods) decorated with
``wahub.hookimpl``. pluggy never awaits: hooks marked *sync only* must return
their value directly (start-up refuses coroutine functions for them); hooks
marked *may be async* (``OBSERVER_HOOKS``) may return an awaitable, which the
core awaits per implementation, each isolated and timed out, a failure logged
with the plugin's name and reported through ``handle_exception``. Every hook
is called through pluggy, so ``@hookimpl(wrapper=True)`` wrappers see it.

``docs/hooks.md`` documents each hook for plugin authors; a test fails when a
hook here is missing from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from aiohttp.web import AbstractRouteDef

    from wahub.core.hub import Hub
    from wahub.core.models import AccountEvent, InboundMessage, OutgoingMessage, SendResult, StatusEvent
    from wahub.core.provider import Provider

hookspec = pluggy.HookspecMarker("wahub")

#: Hooks whose implementations must not be coroutine functions.
SYNC_ONLY_HOOKS = frozenset(
    {
        "register_config_sections",
        "register_providers",
        "register_routes",
        "lifespan",
        "scheduled_jobs",
        "route_message",
    }
)

#: Hooks that observe: called through ``wahub.core.plugins.call_hook``, each
#: implementation may be async, isolated and timed out.
OBSERVER_HOOKS = frozenset(
    {"inbound_message", "outbound_message", "status_update", "account_update", "handle_exception"}
)


@hookspec
def register_config_sections() -> Mapping[str, Any]:
    """Contribute top-level configuration sections.

    When: once, before the configuration is validated.
    Returns: ``{section_name: voluptuous schema}``; the section is optional in
    the YAML and validated by that schema (defaults belong in the schema).
    Sync only.
    """


@hookspec
def register_providers() -> Iterable[type[Provider]]:
    """Contribute WhatsApp provider classes.

    When: once, before validation (their ``CONFIG_SCHEMA`` validates the
    ``providers:`` entries whose ``platform:`` equals their ``PLATFORM``).
    Returns: an iterable of ``wahub.core.provider.Provider`` subclasses.
    Sync only.
    """


@hookspec
def register_routes(hub: Hub) -> Iterable[AbstractRouteDef] | None:
    """Add HTTP routes to the daemon.

    When: once, while ``create_app`` builds the aiohttp application.
    Params: ``hub``, the running hub (config, storage, providers).
    Returns: aiohttp route definitions (``web.get(...)``...) or None. Sync only.
    """


@hookspec
def lifespan(hub: Hub) -> AbstractAsyncContextManager[None] | None:
    """Run code for the whole life of the daemon.

    When: entered at start-up after storage and providers are ready, exited
    at shutdown in reverse order.
    Returns: an async context manager (for example a function decorated with
    ``contextlib.asynccontextmanager`` and called) or None. The hook itself is
    sync only; the context manager is async.
    """


@hookspec
def scheduled_jobs(hub: Hub) -> Iterable[JobSpec] | None:
    """Declare periodic or timed jobs.

    When: once, when the scheduler starts (on the replica that runs it).
    Returns: ``wahub.core.runtime.scheduler.JobSpec`` items, each with a stable ``id``
    so a restart replaces rather than duplicates it; ``at_start=True`` also
    runs one whenever the replica takes the scheduler role. Sync only.
    """


@hookspec
def inbound_message(hub: Hub, message: InboundMessage) -> None:
    """Observe an inbound message.

    When: after the message is stored and its contact and conversation are
    known, before routing. A crash may re-run it for the same message, so
    implementations must be idempotent (``message.external_id`` is stable).
    Returns: None. May be async.
    """


@hookspec(firstresult=True)
def route_message(hub: Hub, message: InboundMessage) -> Route | None:
    """Choose who answers an inbound message.

    When: after the ``inbound_message`` observers. The first non-None result
    wins; the built-in rules router is ``trylast``, so any plugin can take a
    message before it.
    Returns: a ``wahub.core.models.Route`` (whose async ``respond`` produces
    the replies) or None to let the next implementation decide. Sync only.
    """


@hookspec
def outbound_message(hub: Hub, message: OutgoingMessage, result: SendResult) -> None:
    """Observe a message the provider accepted.

    When: after a send succeeds and the provider's message id is stored.
    Returns: None. May be async.
    """


@hookspec
def status_update(hub: Hub, status: StatusEvent) -> None:
    """Observe a delivery status (sent, delivered, read, failed).

    When: after the status is stored and applied to its message.
    Returns: None. May be async.
    """


@hookspec
def account_update(hub: Hub, event: AccountEvent) -> None:
    """Observe news about a business account: a template approved, paused or
    re-categorised, a quality rating or messaging limit changed, a restriction.

    When: after the provider applied it (the ``templates`` table is already
    current). ``event.field`` is the webhook field, ``event.event`` its
    headline (``APPROVED``, ``PAUSED``, ``FLAGGED``...), ``event.data`` the
    whole report.
    Returns: None. May be async.
    """


@hookspec
def handle_exception(hub: Hub, exception: BaseException, context: Mapping[str, Any]) -> None:
    """Observe a failure the core isolated (a hook, a worker step, a send).

    When: after the failure is logged. ``context`` names where it happened
    (``hook``, ``plugin``, ``inbox_id``...).
    Returns: None. May be async; a failure here is only logged.
    """


@dataclass(frozen=True)
class Route:
    """The answer of ``route_message``: who handles the message, and how.

    ``respond`` is awaited by the pipeline and returns the replies to queue;
    the pipeline gives each a stable idempotency key, so a re-run after a
    crash never sends a reply twice.
    """

    handler: str
    respond: Callable[[Hub, InboundMessage], Awaitable[list[OutgoingMessage]]]


@dataclass(frozen=True)
class JobSpec:
    """A job: ``func(hub)`` run on ``trigger`` ("interval", "cron" or "date")
    with APScheduler's ``trigger_args`` (e.g. ``{"minutes": 5}``), and also at
    once whenever this replica takes the scheduler role (at start-up, or taking
    over from another) when ``at_start`` is set.
    ``id`` must be stable so a restart replaces the job instead of adding one."""

    id: str
    func: Callable[[Hub], Awaitable[None]]
    trigger: str
    trigger_args: dict[str, Any] = field(default_factory=dict)
    at_start: bool = False
