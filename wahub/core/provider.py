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
from wahub.core.config.validators import proxy_network, public_base_url
from wahub.core.errors import ErrorMeaning, ProviderError, meaning_of_status
from wahub.core.models import AccountEvent, Event, OutgoingMessage, SendResult
from wahub.core.storage.media import LOCAL_PREFIX

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


@dataclass(frozen=True)
class WebhookRequest:
    """A webhook as it reached the daemon, for ``Provider.verify_webhook``."""

    #: The URL as the daemon saw it: the connection's scheme, the ``Host`` header,
    #: the path and query. Behind a proxy, ``wahub.core.http.proxies.called_url``
    #: gives the URL the provider called.
    url: str
    headers: Mapping[str, str]
    body: bytes
    #: The peer's address (the nearest proxy's when there is one), or None.
    peer: str | None = None


#: Options of a provider whose webhooks are signed over the URL they were sent to,
#: or that hands the provider URLs of its own (status callbacks, files to send).
PUBLIC_URL_OPTIONS: dict[Any, Any] = {
    # The URL the provider reaches wahub at (scheme, host and any path prefix of a
    # proxy), e.g. https://hooks.example.com/wahub; webhook paths are added to it.
    vol.Optional("public_base_url"): vol.All(str, public_base_url),
    # Proxies (addresses or CIDR networks) whose X-Forwarded-Proto/-Host/-Prefix
    # are believed when public_base_url is not set.
    vol.Optional("trusted_proxies", default=list): [proxy_network],
}


class Provider(abc.ABC):
    """Base class of a WhatsApp provider (a BSP or the built-in sandbox).

    A provider checks its webhooks' signatures with ``verify_signature`` (headers
    and body) or, when the provider signs more than that (the URL it called),
    with ``verify_webhook``; it overrides one of the two.
    """

    PLATFORM: ClassVar[str]
    CONFIG_SCHEMA: ClassVar[vol.Schema] = PROVIDER_SCHEMA_BASE
    #: Message types and limits; ``hub.send`` adapts or refuses messages against them.
    CAPABILITIES: ClassVar[Capabilities] = CLOUD_API

    def __init__(self, hub: ProviderHost, config: Mapping[str, Any]) -> None:
        cls = type(self)
        if (cls.verify_signature, cls.verify_webhook) == (Provider.verify_signature, Provider.verify_webhook):
            raise TypeError(f"{cls.__name__} must override verify_signature or verify_webhook")
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

    def verify_webhook(self, request: WebhookRequest) -> bool:
        """Whether the webhook really comes from the provider. Runs before parsing;
        the default checks the headers and body with ``verify_signature``."""
        return self.verify_signature(request.headers, request.body)

    def verify_signature(self, headers: Mapping[str, str], body: bytes) -> bool:
        """Whether ``body`` really comes from the provider (see ``verify_webhook``).
        Refuses everything unless overridden."""
        return False

    def webhook_response(self, answer: Mapping[str, Any]) -> web.Response:
        """The answer to a webhook whose events are stored (``answer`` says how
        many); a JSON body unless the provider expects something else."""
        return web.json_response(dict(answer))

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

    async def media_url(self, media: Mapping[str, Any], *, ttl: float = 6 * 3600.0) -> str:
        """The URL a provider that fetches files by URL is given for a message's
        ``media`` object: its ``link``, or for a file stored in wahub (``id`` of
        ``wahub:<id>``) a signed URL under the entry's ``public_base_url`` that
        expires after ``ttl`` seconds (the default outlasts the hours a provider
        may hold a message in its own queue, Twilio's four among them).
        ``ProviderError`` when there is neither, or the file is one a user sent."""
        if "link" in media:
            return str(media["link"])
        media_id = str(media.get("id", ""))
        if not media_id.startswith(LOCAL_PREFIX):
            raise ProviderError(
                f"{self.PLATFORM} sends files by URL: give a link or a file stored in wahub, not {media_id!r}"
            )
        base: str | None = self.config.get("public_base_url")
        if not base:
            raise ProviderError(
                f"{self.PLATFORM} fetches files from wahub: set public_base_url on provider {self.name!r}",
                code="config",
            )
        file = await self.hub.storage.media.get(media_id[len(LOCAL_PREFIX) :])
        if file is None:
            raise ProviderError(f"media {media_id} is not stored in wahub", code="media")
        if file.direction != "out":
            raise ProviderError(f"media {media_id} is a file a user sent: upload it to send it", code="media")
        return base + await self.hub.storage.media.public_path(file, ttl=ttl)

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
