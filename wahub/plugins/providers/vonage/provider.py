"""Vonage's Messages API v1 for WhatsApp (``platform: vonage``).

Sends go to ``POST {api_base}/v1/messages`` (answered 202 with a
``message_uuid``), read receipts to ``PATCH {api_base}/v1/messages/{uuid}``;
each request carries a fresh application JWT, or HTTP Basic with the API key
(``wahub.plugins.providers.vonage.auth``). Inbound and status callbacks are
checked as Vonage signs them, the JWT and the body's ``payload_hash``.
Vonage's template management API is not public in a form wahub can rely on,
so ``sync_templates`` keeps no list (returns None) and Vonage itself checks
the templates a send names.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from wahub import hookimpl
from wahub.core.canonical.fit import Capabilities
from wahub.core.canonical.validate import ALL_KINDS
from wahub.core.errors import ErrorMeaning, ProviderError
from wahub.core.models import Event, OutgoingMessage, SendResult
from wahub.core.provider import Provider, ProviderHost, WebhookRequest, secret_matches
from wahub.core.storage.media import Download, IncomingFile
from wahub.plugins.providers.rest import request_json, stream_media
from wahub.plugins.providers.vonage.auth import request_headers, webhook_claims
from wahub.plugins.providers.vonage.bodies import message_body, read_receipt_body
from wahub.plugins.providers.vonage.config import VONAGE_SCHEMA
from wahub.plugins.providers.vonage.errors import classify_vonage_error, problem_error
from wahub.plugins.providers.vonage.webhook import parse_vonage_webhook

_LOGGER = logging.getLogger(__name__)

#: Every canonical kind goes out: the Vonage types, ``custom`` for the rest.
VONAGE = Capabilities(types=ALL_KINDS)
#: Hosts of Vonage's own that serve inbound files; the credentials go to no other.
_MEDIA_HOSTS = (".nexmo.com", ".vonage.com")
_NUMBER = re.compile(r"\d{5,20}", re.ASCII)


class VonageProvider(Provider):
    """A WhatsApp number at Vonage, through the Messages API v1."""

    PLATFORM = "vonage"
    CONFIG_SCHEMA = VONAGE_SCHEMA
    CAPABILITIES = VONAGE

    def __init__(self, hub: ProviderHost, config: Mapping[str, Any]) -> None:
        super().__init__(hub, config)
        self.api_base: str = config["api_base"].rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=config["timeout"])

    # -- webhooks ---------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest) -> bool:
        """A bearer JWT signed with the signature secret whose ``payload_hash`` is the body's."""
        claims = webhook_claims(
            request.headers,
            request.body,
            secret=self.config["signature_secret"],
            api_key=self.config.get("api_key"),
            max_age=self.config.get("signature_max_age"),
        )
        return claims is not None

    def parse_webhook(self, body: bytes) -> list[Event]:
        return parse_vonage_webhook(body, provider=self.name, numbers=self._numbers)

    @functools.cached_property
    def _numbers(self) -> dict[str, str]:
        """The entries whose webhooks may reach this one's URL (the same
        signature secret: one Vonage account), by business number. The
        configured providers never change, so this is worked out once."""
        numbers: dict[str, str] = {}
        for provider in self.hub.providers.values():
            if isinstance(provider, VonageProvider) and secret_matches(
                provider.config["signature_secret"], self.config["signature_secret"]
            ):
                numbers.setdefault(provider.config["from"], provider.name)
        numbers[self.config["from"]] = self.name
        return numbers

    # -- errors -----------------------------------------------------------

    def classify_error(self, code: str | None, *, http_status: int | None = None) -> ErrorMeaning:
        """Vonage's codes (``wahub.plugins.providers.vonage.errors``)."""
        return classify_vonage_error(code, http_status=http_status)

    # -- sending ----------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> SendResult:
        if message.type == "mark_read":
            message_uuid = str(message.content["mark_read"]["message_id"])
            await self.call("PATCH", f"/v1/messages/{quote(message_uuid, safe='')}", json=read_receipt_body())
            # Nothing new is created: the receipt gets an id of its own for the outbox.
            return SendResult(f"read.{uuid.uuid4().hex}")
        to = await self._number_of(message)
        body = await message_body(message, to=to, sender=self.config["from"], media_url=self.media_url)
        answer = await self.call("POST", "/v1/messages", json=body)
        found = answer.get("message_uuid") if isinstance(answer, dict) else None
        if not isinstance(found, str) or not found:
            raise ProviderError(f"Vonage accepted the message but gave no message_uuid: {answer!r}")
        return SendResult(found)

    async def _number_of(self, message: OutgoingMessage) -> str:
        """The recipient's number as digits: Vonage sends to phone numbers. A
        contact known by BSUID is sent to at its number, when one is known."""
        digits = _as_digits(message.to)
        if digits is not None:
            return digits
        if not message.keep_address:
            phone = await self.hub.storage.contacts.phone(self.name, message.to)
            if phone:
                return phone
        raise ProviderError(
            "Vonage sends WhatsApp messages to phone numbers, and none is known for this recipient",
            code="recipient",
        )

    async def call(self, method: str, path: str, *, json: Any = None) -> Any:
        """One API request; its JSON answer (or None for an empty one), or ``ProviderError``."""
        return await request_json(
            self.hub.http,
            method,
            self.api_base + path,
            error_of=problem_error,
            provider="Vonage",
            client_timeout=self.timeout,
            headers=request_headers(self.config),
            json=json,
        )

    # -- media ------------------------------------------------------------

    async def download_media(self, media_id: str, kind: str, into: IncomingFile) -> Download:
        """Fetch an inbound file (its id is Vonage's URL of it) with the credentials."""
        headers = request_headers(self.config) if self._ours(media_id) else {}
        if not headers:
            _LOGGER.info("an inbound %s of %s is fetched without credentials: not Vonage's host", kind, self.name)
        mime_type = await stream_media(
            self.hub.http,
            media_id,
            kind=kind,
            into=into,
            error_of=problem_error,
            client_timeout=self.timeout,
            headers=headers,
            check=self.hub.storage.media.check,
        )
        return Download(mime_type, None)

    def _ours(self, url: str) -> bool:
        """Whether ``url`` is Vonage's (the API's host, or one of Vonage's
        domains over HTTPS): only then does the request carry the credentials."""
        try:
            given, api = urlsplit(url), urlsplit(self.api_base)
        except ValueError:
            return False
        if (given.scheme, given.netloc) == (api.scheme, api.netloc):
            return True
        host = (given.hostname or "").lower()
        return given.scheme == "https" and host.endswith(_MEDIA_HOSTS)

    # -- templates --------------------------------------------------------

    async def sync_templates(self) -> None:
        """None: Vonage publishes no template listing wahub relies on, so the
        policy leaves the templates a send names to Vonage to check."""
        return None


def _as_digits(address: str) -> str | None:
    """``whatsapp:+1555...``, ``+1555...`` or ``1555...`` as ``1555...``; None for a BSUID or username."""
    text = address.strip().removeprefix("whatsapp:").strip().removeprefix("+")
    return text if _NUMBER.fullmatch(text) else None


@hookimpl
def register_providers() -> Iterable[type[Provider]]:
    return [VonageProvider]
