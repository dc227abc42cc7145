"""The contract every AI backend implements.

An AI backend is one class per platform, registered through the
``register_ai_backends`` hook, with ``PLATFORM`` (the ``platform:`` value of
an ``ai:`` entry) and ``CONFIG_SCHEMA`` (a voluptuous schema extending
``AI_SCHEMA_BASE``). The daemon makes one instance per ``ai:`` entry; the
router's ``fallback:`` names the entry (``name:``) that answers what no rule
matched.

A backend is handed an ``AIRequest`` (the messages of the turn, the earlier
history with ownership changes written in as dated notes, the contact's
language, the tools it may offer) and returns an ``AIAnswer``. It never
queues a message itself: the core checks ownership, converts and splits the
text, and queues it in the same transaction that finishes the turn, so a
turn that runs again after a crash answers once.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import voluptuous as vol

if TYPE_CHECKING:
    import aiohttp

    from wahub.core.clock import Clock

#: Keys every ``ai:`` entry has; a backend's CONFIG_SCHEMA extends this.
AI_SCHEMA_BASE = vol.Schema(
    {
        vol.Required("platform"): str,
        vol.Required("name"): vol.All(
            str, vol.Match(r"^[a-z0-9][a-z0-9_-]*$", msg="use lowercase letters, digits, '-' and '_'")
        ),
    }
)

#: The tool every AI request offers: the model asks for a person with it.
HANDOFF_TOOL = "handoff_to_human"


class AIHost(Protocol):
    """What an AI backend may use of the running daemon (``wahub.core.hub.Hub`` is one)."""

    config: dict[str, Any]
    http: aiohttp.ClientSession
    clock: Clock
    #: Every configured backend by name (a backend may fall back on another, such as a FAQ).
    ai: dict[str, AIBackend]


HistoryRole = Literal["user", "assistant", "note"]


@dataclass(frozen=True)
class HistoryEntry:
    """One earlier item of the conversation.

    ``user``: the contact wrote it; ``assistant``: the business sent it (the
    bot, an operator, the business app); ``note``: an ownership change, such
    as "handed to a person (reason)" or "returned to the bot", written in so
    that a model never resumes from a stale "I will stay silent".
    """

    role: HistoryRole
    text: str
    #: Unix seconds.
    at: float


@dataclass(frozen=True)
class AITool:
    """A function the model may call.

    ``parameters`` is the JSON Schema of its arguments; a call whose arguments
    do not match it is never run (the turn fails). ``run(request, arguments)``
    returns the text handed back to the model. The built-in
    ``handoff_to_human`` tool has no ``run``: the core acts on it.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    run: Callable[[AIRequest, Mapping[str, Any]], Awaitable[str]] | None = None


@dataclass(frozen=True)
class AIRequest:
    """What a backend answers: the turn's messages and their context."""

    conversation_id: int
    #: The contact's address and name (for tools that look things up).
    contact: str
    contact_name: str | None
    #: The contact's language (BCP 47): answer in it.
    language: str
    #: The texts of the turn, oldest first: a burst sent within the debounce
    #: time is one turn.
    messages: Sequence[str]
    #: Earlier items, oldest first, notes included; the turn's messages are not in it.
    history: Sequence[HistoryEntry] = ()
    #: The tools the model may call (``handoff_to_human`` and the plugins' ``ai_tools``).
    tools: Sequence[AITool] = ()
    #: Unix seconds when the turn started.
    now: float = 0.0


@dataclass(frozen=True)
class AIAnswer:
    """A backend's answer.

    ``text`` is sent to the contact (Markdown is allowed: the core turns it
    into WhatsApp formatting and splits long texts). ``handoff`` asks for a
    person, with its reason; the text, if any, is sent first. ``failed`` says
    why no answer came (the model was down, the budget spent); with neither
    text nor hand-off, the router's default reply is sent. ``tokens`` is what
    the turn cost, as the model reported it.
    """

    text: str | None = None
    handoff: str | None = None
    failed: str | None = None
    tokens: int = 0
    #: Which backend answered, when another stood in (a FAQ behind a model that failed).
    answered_by: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


class AIBackend(abc.ABC):
    """Base class of an AI backend (the offline FAQ, an OpenAI-compatible model...)."""

    PLATFORM: ClassVar[str]
    CONFIG_SCHEMA: ClassVar[vol.Schema] = AI_SCHEMA_BASE

    def __init__(self, host: AIHost, config: Mapping[str, Any]) -> None:
        self.host = host
        self.config = config
        self.name: str = config["name"]

    async def start(self) -> None:
        """Open what the backend needs (called once at start-up, after every backend exists)."""
        return None

    async def stop(self) -> None:
        """Release what ``start`` opened."""
        return None

    @classmethod
    def references(cls, entry: Mapping[str, Any], config: Mapping[str, Any]) -> Iterable[tuple[list[Any], str]]:
        """Problems with what ``entry`` names elsewhere in the (valid) ``config``,
        as ``(path within the entry, message)``: checked with the rest of the
        configuration, so ``wahub check-config`` reports them. None by default."""
        return ()

    def languages(self) -> set[str]:
        """The languages the backend has texts in (a FAQ's entries), so that
        language detection can tell them apart; empty when it answers in any."""
        return set()

    @abc.abstractmethod
    async def reply(self, request: AIRequest) -> AIAnswer:
        """Answer the turn. A failure of the backend's own service is an
        ``AIAnswer(failed=...)``; an exception counts as a failed turn too."""
