"""The contract every WhatsApp provider plugin implements.

A provider is one class per platform, registered through the
``register_providers`` hook, with ``PLATFORM`` (the ``platform:`` value in the
config) and ``CONFIG_SCHEMA`` (a voluptuous schema extending
``PROVIDER_SCHEMA_BASE``). The daemon makes one instance per ``providers:``
entry; the entry's ``name`` is its webhook path, ``/webhooks/{name}``.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import voluptuous as vol
from aiohttp import web

from wahub.core.canonical.fit import CLOUD_API, Capabilities
from wahub.core.config.validators import number_between as _seconds
from wahub.core.errors import ErrorMeaning, meaning_of_status
from wahub.core.models import AccountEvent, Event, OutgoingMessage, SendResult

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Coroutine

    import aiohttp

    from wahub.core.policy.checks import Origin
    from wahub.core.storage.media import Download, IncomingFile
    from wahub.core.storage.store import Storage


class ProviderHost(Protocol):
    """What a provider may use of the running daemon (``wahub.core.hub.Hub`` is one)."""

    config: dict[str, Any]
    storage: Storage
    http: aiohttp.ClientSession
    providers: dict[str, Provider]
    #: Set when shutdown begins.
    shutting_down: asyncio.Event

    async def send(
        self, message: OutgoingMessage, *, provider: str | None = None, idempotency_key: str, origin: Origin = ...
    ) -> int: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...


#: Keys every provider entry has; a provider's CONFIG_SCHEMA extends this.
PROVIDER_SCHEMA_BASE = vol.Schema(
    {
        vol.Required("platform"): str,
        vol.Required("name"): vol.All(
            str, vol.Match(r"^[a-z0-9][a-z0-9_-]*$", msg="use lowercase letters, digits, '-' and '_'")
        ),
        # Sends per second through this business number; null sends as fast as the provider answers.
        vol.Optional("messages_per_second", default=80): vol.Any(None, _seconds(0.01, 100_000)),
        # Per recipient: `burst` messages at once, then one every `every` seconds; null turns it off.
        vol.Optional("pair_limit", default=dict): vol.Any(
            None,
            {
                vol.Optional("burst", default=5): vol.All(int, vol.Range(min=1, max=1000)),
                vol.Optional("every", default=6.0): _seconds(0, 3600),
            },
        ),
        # Users this number may start conversations with (templates outside a service window)
        # per rolling 24 h; unset: the provider's tier (account_state), null: no limit kept.
        vol.Optional("messaging_limit"): vol.Any(None, vol.All(int, vol.Range(min=1))),
        # A message still unsent this long after it was queued fails instead of retrying.
        vol.Optional("retry_for", default=86400): _seconds(1, 30 * 86400),
    }
)


class Quality(enum.StrEnum):
    """A business number's quality, in terms every provider shares."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    UNKNOWN = "unknown"


#: An account field ``/readyz`` may show to anyone: a code, not free text.
STATE_CODE = re.compile(r"^[A-Z0-9_]{1,40}$")


@dataclass(frozen=True)
class AccountState:
    """The account's standing as ``/readyz`` and ``/metrics`` show it.

    ``raw`` keeps the provider's own words (its rating's name, its latest
    account event...) under the provider's keys; only values that are codes
    (``STATE_CODE``) are shown on ``/readyz``.
    """

    #: None when the provider does not rate its numbers (or has not said yet).
    quality: Quality | None = None
    #: Users the business may message outside service windows per 24 h
    #: (``math.inf``: no limit); None when unknown.
    messaging_limit: float | None = None
    raw: Mapping[str, str] = field(default_factory=dict)


def sign_body(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``, the webhook signature Meta sends
    in ``X-Hub-Signature-256`` (and the sandbox in ``X-Wahub-Signature-256``)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(secret: str, given: str, body: bytes) -> bool:
    """Whether ``given`` is ``body``'s signature (``sign_body``), compared in constant time."""
    return secret_matches(given, sign_body(secret, body))


def secret_matches(given: str, expected: str) -> bool:
    """Whether a header or query value ``given`` equals ``expected``, compared in
    constant time. A value that is not text (aiohttp hands bytes that are not
    UTF-8 over as surrogates) matches nothing."""
    try:
        given_bytes = given.encode()
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(given_bytes, expected.encode())


class Provider(abc.ABC):
    """Base class of a WhatsApp provider (a BSP or the built-in sandbox)."""

    PLATFORM: ClassVar[str]
    CONFIG_SCHEMA: ClassVar[vol.Schema] = PROVIDER_SCHEMA_BASE
    #: Message types and limits; ``hub.send`` adapts or refuses messages against them.
    CAPABILITIES: ClassVar[Capabilities] = CLOUD_API

    def __init__(self, hub: ProviderHost, config: Mapping[str, Any]) -> None:
        self.hub = hub
        self.config = config
        self.name: str = config["name"]
        self.ready = False
        #: Why sending is paused (credentials refused), or None.
        self.paused: str | None = None
        #: The account's standing in the provider's own words (quality rating,
        #: messaging limit...), shown on ``/api/v1/status`` and, through
        #: ``account_state``, on ``/readyz``; empty when unknown.
        self.account: dict[str, Any] = {}

    async def start(self) -> None:
        """Open what the provider needs (called once at start-up)."""
        self.ready = True

    async def stop(self) -> None:
        """Release what ``start`` opened."""
        self.ready = False

    @abc.abstractmethod
    def verify_signature(self, headers: Mapping[str, str], body: bytes) -> bool:
        """Whether ``body`` really comes from the provider. Runs before parsing."""

    @abc.abstractmethod
    def parse_webhook(self, body: bytes) -> list[Event]:
        """Turn a verified webhook body into normalized events.

        Raises ``WebhookError`` for a body that is not the provider's format;
        shapes it does not understand become ``UnsupportedEvent``s instead.
        """

    async def handle_webhook_get(self, request: web.Request) -> web.StreamResponse:
        """Answer a GET on the webhook URL (Meta's verification handshake)."""
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])

    @abc.abstractmethod
    async def send(self, message: OutgoingMessage) -> SendResult:
        """Deliver ``message`` to the provider; raise ``ProviderError`` on refusal."""

    async def download_media(self, media_id: str, kind: str, into: IncomingFile) -> Download | None:
        """Fetch the file of an inbound ``kind`` message (``image``...) by the
        provider's media id, writing it chunk by chunk with ``await into.write(chunk)``
        (which refuses a file past the size limit); None when the provider does not host files."""
        return None

    async def sync_templates(self) -> dict[str, int] | None:
        """Make the stored templates (``storage.policy``) the account's own list;
        returns how many were added, updated and removed. None when the provider
        keeps no template list: the send policy then leaves templates it does not
        know to the provider. A send naming an unknown template calls this (see
        ``wahub.core.policy.templates``) before it is refused."""
        return None

    def classify_error(self, code: str | None, *, http_status: int | None = None) -> ErrorMeaning:
        """What the provider's error ``code`` means to the engine (retry, fail,
        pause, and what to learn). The engine asks for codes it did not get in
        a ``ProviderError``, such as the code of a ``failed`` status webhook.
        The default knows no codes and judges by the HTTP status alone."""
        return meaning_of_status(code, http_status)

    def account_state(self) -> AccountState:
        """The account's standing in shared terms, for ``/readyz`` and ``/metrics``.
        The default rates nothing and shows the codes in ``self.account`` as they are."""
        return AccountState(raw={key: value for key, value in self.account.items() if isinstance(value, str)})

    async def account_event(self, event: AccountEvent) -> None:
        """Apply news about the account (template status, quality...) the
        provider's webhook reported; runs once per event, on one replica."""
        return None
