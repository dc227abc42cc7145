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
    from wahub.core.ai import AIBackend, AITool
    from wahub.core.crm import CRMBackend
    from wahub.core.hub import Hub
    from wahub.core.models import (
        AccountEvent,
        Conversation,
        InboundMessage,
        OutgoingMessage,
        OwnershipChange,
        SendResult,
        StatusEvent,
    )
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
        "register_ai_backends",
        "register_crm_backends",
        "ai_tools",
    }
)

#: Hooks that observe: called through ``wahub.core.plugins.call_hook``, each
#: implementation may be async, isolated and timed out.
OBSERVER_HOOKS = frozenset(
    {
        "inbound_message",
        "outbound_message",
        "status_update",
        "account_update",
        "conversation_changed",
        "handle_exception",
    }
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
def register_ai_backends() -> Iterable[type[AIBackend]]:
    """Contribute AI backend classes.

    When: once, before validation (their ``CONFIG_SCHEMA`` validates the
    ``ai:`` entries whose ``platform:`` equals their ``PLATFORM``).
    Returns: an iterable of ``wahub.core.ai.AIBackend`` subclasses.
    Sync only.
    """


@hookspec
def register_crm_backends() -> Iterable[type[CRMBackend]]:
    """Contribute CRM, helpdesk and event-webhook backend classes.

    When: once, before validation (their ``CONFIG_SCHEMA`` validates the
    ``crm:`` entries whose ``platform:`` equals their ``PLATFORM``).
    Returns: an iterable of ``wahub.core.crm.CRMBackend`` subclasses.
    Sync only.
    """


@hookspec
def register_routes(hub: Hub) -> Iterable[Any] | None:
    """Add HTTP routes to the daemon.

    When: once, while ``create_app`` builds the aiohttp application.
    Params: ``hub``, the running hub (config, storage, providers).
    Returns: aiohttp route definitions (``web.get(...)``...) and
    ``wahub.core.http.openapi.Operation`` objects (endpoints described in
    ``/api/v1/openapi.json``, their JSON body checked against their schema),
    or None. Sync only.
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

    When: after the ``inbound_message`` observers, only while the bot owns
    the conversation (never while a person does). The first non-None result
    wins; the built-in rules router is ``trylast``, so any plugin can take a
    message before it. ``message`` is the turn's latest message.
    Returns: a ``wahub.Route`` (whose async ``respond(hub, turn)`` produces
    the answer) or None to let the next implementation decide. Sync only.
    """


@hookspec
def conversation_changed(hub: Hub, conversation: Conversation, change: OwnershipChange) -> None:
    """Observe a change of a conversation's owner: ``change.change`` is
    ``queued``, ``assigned``, ``released``, ``resolved`` or ``phone``.

    When: after the change is stored (``conversation`` shows the new owner).
    Returns: None. May be async.
    """


@hookspec
def ai_tools(hub: Hub) -> Iterable[AITool] | None:
    """Offer tools (functions) to the AI models.

    When: each time an AI request is built.
    Returns: ``wahub.core.ai.AITool`` items (name, description, the JSON
    Schema of the arguments, and ``run``), or None. Sync only.
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
class Turn:
    """What the bot answers at once: the messages a contact sent in a burst
    (within ``conversations.debounce_seconds`` of each other), oldest first, with
    their conversation. ``message`` is the latest; ``language`` the
    contact's (set, detected, or the default)."""

    messages: tuple[InboundMessage, ...]
    conversation: Conversation
    language: str
    #: Whether this is the conversation's first turn (the contact's first message to this number).
    first_contact: bool = False

    @property
    def message(self) -> InboundMessage:
        return self.messages[-1]

    def text(self) -> str:
        """The texts of the turn's messages, one per line."""
        return "\n".join(text for text in (message.text() for message in self.messages) if text)


@dataclass(frozen=True)
class Answer:
    """What a ``respond`` returns: the replies, and whether a person should
    take over (``handoff``, its reason) once they are queued."""

    replies: list[OutgoingMessage] = field(default_factory=list)
    handoff: str | None = None
    #: Who decided, for the conversation's history: ``rule``, ``ai:<name>``...
    actor: str = "bot"


@dataclass(frozen=True)
class Route:
    """The answer of ``route_message``: who handles the turn, and how.

    ``respond(hub, turn)`` is awaited by the pipeline and returns the replies
    to queue (a list, or an ``Answer`` that may also hand off); the pipeline
    gives each reply a stable idempotency key, so a re-run after a crash never
    sends a reply twice, and queues them only if the bot still owns the
    conversation.
    """

    handler: str
    respond: Callable[[Hub, Turn], Awaitable[list[OutgoingMessage] | Answer]]


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
