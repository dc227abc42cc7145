"""The contract every WhatsApp provider plugin implements.

A provider is one class per platform, registered through the
``register_providers`` hook, with ``PLATFORM`` (the ``platform:`` value in the
config) and ``CONFIG_SCHEMA`` (a voluptuous schema extending
``PROVIDER_SCHEMA_BASE``). The daemon makes one instance per ``providers:``
entry; the entry's ``name`` is its webhook path, ``/webhooks/{name}``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import voluptuous as vol
from aiohttp import web

from wahub.core.models import Event, OutgoingMessage, SendResult

if TYPE_CHECKING:
    from wahub.core.hub import Hub

#: Keys every provider entry has; a provider's CONFIG_SCHEMA extends this.
PROVIDER_SCHEMA_BASE = vol.Schema(
    {
        vol.Required("platform"): str,
        vol.Required("name"): vol.All(
            str, vol.Match(r"^[a-z0-9][a-z0-9_-]*$", msg="use lowercase letters, digits, '-' and '_'")
        ),
    }
)


class WebhookError(Exception):
    """A webhook body that cannot be parsed; the daemon answers 400 and quarantines it."""


class ProviderError(Exception):
    """A send the provider refused or could not take.

    ``retryable`` tells the dispatcher whether to try again later; ``code``
    keeps the provider's own error code.
    """

    def __init__(self, message: str, *, code: str | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class Provider(abc.ABC):
    """Base class of a WhatsApp provider (a BSP or the built-in sandbox)."""

    PLATFORM: ClassVar[str]
    CONFIG_SCHEMA: ClassVar[vol.Schema] = PROVIDER_SCHEMA_BASE

    def __init__(self, hub: Hub, config: Mapping[str, Any]) -> None:
        self.hub = hub
        self.config = config
        self.name: str = config["name"]
        self.ready = False

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
