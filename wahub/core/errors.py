"""Exceptions shared across the core, and what a provider's error means to the engine.

A provider's error codes are its own (numbers, names: each provider has its own);
the engine knows only their meaning, an ``ErrorMeaning`` the provider gives
(``Provider.classify_error``, or carried by the ``ProviderError`` it raises):

- ``retryable``: try again later with backoff (network trouble, 5xx,
  throughput and pair-rate limits);
- ``permanent``: fail the message at once, keeping the code and a reason;
- ``auth``: the credentials are wrong; pause the provider until they are fixed;
- ``policy``: WhatsApp's rules refused this message (the service window, the
  user's marketing opt-out, a paused or disabled template): fail it like a
  permanent error.

A meaning may carry a ``Lesson``, which the engine applies whatever the code
(``wahub.core.policy.lessons.learn``) so the next such message is refused
before it is sent, and a ``throttle``: the provider asked the number to slow
down (``throughput``: its bulk sends slow down; ``pair_rate``: only that
recipient waits).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal


class ErrorKind(enum.StrEnum):
    """What the engine does with a failed send."""

    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    AUTH = "auth"
    POLICY = "policy"


class Lesson(enum.StrEnum):
    """What a refusal teaches the send policy."""

    #: The user stopped marketing messages: an opt-out is recorded in the consent ledger.
    OPTED_OUT = "opted_out"
    #: The template was paused: its status becomes ``PAUSED``.
    TEMPLATE_PAUSED = "template_paused"
    #: The template was disabled for good: its status becomes ``DISABLED``.
    TEMPLATE_DISABLED = "template_disabled"


#: Which limit a refusal says was hit: the number's messages per second, or one recipient's pace.
Throttle = Literal["throughput", "pair_rate"]


@dataclass(frozen=True)
class ErrorMeaning:
    """An error code as the engine understands it: what to do, why (readable), what to
    learn, and whether it asks for slower sending (``throttle``)."""

    kind: ErrorKind
    reason: str
    lesson: Lesson | None = None
    throttle: Throttle | None = None


def meaning_of_status(code: str | None, http_status: int | None) -> ErrorMeaning:
    """The meaning of an error known only by its HTTP status (a code nobody
    classified): 5xx and 429 are retryable (429 asks for slower sending), 401
    refused credentials, anything else final."""
    if http_status == 429:
        return ErrorMeaning(ErrorKind.RETRYABLE, "the provider answered HTTP 429", throttle="throughput")
    if http_status is not None and http_status >= 500:
        return ErrorMeaning(ErrorKind.RETRYABLE, f"the provider answered HTTP {http_status}")
    if http_status == 401:
        return ErrorMeaning(ErrorKind.AUTH, "the provider refused the credentials (HTTP 401)")
    return ErrorMeaning(ErrorKind.PERMANENT, f"the provider refused the message (code {code}, HTTP {http_status})")


class SendRefused(Exception):
    """A send wahub refuses before queueing it; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class WebhookError(Exception):
    """A webhook body that cannot be parsed; the daemon answers 400 and quarantines it."""


class ProviderError(Exception):
    """A send the provider refused or could not take.

    ``meaning`` says what the engine does with it (see ``ErrorMeaning``); a
    provider that classifies its codes passes it. Without one, ``retryable``
    and ``auth`` give the kind (``permanent`` when neither is set) and nothing
    is learnt. ``code`` keeps the provider's own error code.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool = False,
        auth: bool = False,
        meaning: ErrorMeaning | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        if meaning is None:
            kind = ErrorKind.AUTH if auth else ErrorKind.RETRYABLE if retryable else ErrorKind.PERMANENT
            meaning = ErrorMeaning(kind, message)
        self.meaning = meaning

    @property
    def retryable(self) -> bool:
        """Whether the dispatcher tries the send again later."""
        return self.meaning.kind is ErrorKind.RETRYABLE

    @property
    def auth(self) -> bool:
        """Whether the credentials were refused (the dispatcher pauses the provider)."""
        return self.meaning.kind is ErrorKind.AUTH

    @property
    def lesson(self) -> Lesson | None:
        return self.meaning.lesson

    @property
    def throttle(self) -> Throttle | None:
        """Which sending limit the provider said was hit, if any."""
        return self.meaning.throttle


class InvalidMessage(Exception):
    """A message that cannot be sent; ``field`` is the JSON path the client wrote."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake in the configuration, located at a file and line (and 1-based column, if known)."""

    file: str
    line: int | None
    path: str
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" if self.column is None else f":{self.line}:{self.column}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class PluginError(Exception):
    """A plugin that cannot be loaded as written; start-up stops with this message."""


class InvalidTime(ValueError):
    """A consent event's time that is not a plausible unix time; the message says why."""


class StorageLocked(Exception):
    """Another process uses this SQLite database."""


class MediaRefused(Exception):
    """A file wahub will not keep or send: too big, of a refused type, or damaged."""


class MediaTooLarge(MediaRefused):
    """A file over its kind's size limit (``wahub.media.max_bytes``)."""


class LeaseLost(Exception):
    """An inbox row was claimed again (its lease ran out) while it was being processed."""


class IntakeClosed(Exception):
    """The daemon is shutting down and takes no more webhooks."""


class BodyRefused(ValueError):
    """A request body that is not acceptable JSON; the message names the problem."""


class Unprocessable(Exception):
    """The stored row is no event wahub can process (unreadable text, a payload
    that does not make an event): it fails at the first attempt."""


class DeliveryFailed(Exception):
    """A ``crm:`` entry could not take an event now: it is tried again on the
    retry schedule (not before ``retry_after`` seconds, when the other side
    said so), unless ``permanent`` (given up at once: the other side refused
    this event for good) or ``gone`` (the endpoint no longer exists: it is
    disabled until enabled again). ``status`` is the HTTP status, if any."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        permanent: bool = False,
        gone: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.permanent = permanent
        self.gone = gone
