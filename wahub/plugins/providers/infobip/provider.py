"""Infobip's WhatsApp API (``platform: infobip``).

Requests go to the account's own ``base_url`` (``https://<id>.api.infobip.com``)
with ``Authorization: App <api_key>``; each message type has its endpoint
(``wahub.plugins.providers.infobip.bodies``). Infobip signs no webhook: the
endpoint is protected by HTTP Basic credentials or a secret header that the
entry and the webhook's settings at Infobip both hold, and every POST without
them is refused. Delivery reports come to ``notifyUrl``, the entry's webhook
URL under ``public_base_url``; without it, to the URL set at Infobip.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import voluptuous as vol

from wahub import hookimpl
from wahub.core.canonical.fit import Capabilities
from wahub.core.config.validators import ExplainedInvalid
from wahub.core.errors import ErrorMeaning, ProviderError
from wahub.core.models import Event, OutgoingMessage, SendResult
from wahub.core.provider import PROVIDER_SCHEMA_BASE, PUBLIC_URL_OPTIONS, Provider, ProviderHost, secret_matches
from wahub.core.storage.media import Download, IncomingFile
from wahub.core.storage.policy import Template
from wahub.plugins.providers.infobip.bodies import MESSAGE_PATH, PATHS, content_of, kind_of, template_content
from wahub.plugins.providers.infobip.errors import classify_infobip_error, infobip_error
from wahub.plugins.providers.infobip.templates import components_of, structure_of
from wahub.plugins.providers.infobip.webhook import address, parse_infobip_webhook
from wahub.plugins.providers.rest import request_json, stream_media

_LOGGER = logging.getLogger(__name__)

_HEADER_NAME = vol.Match(r"^[A-Za-z0-9-]{1,64}$", msg="a header name: letters, digits and '-'")


def _secret(shortest: int) -> Any:
    """A secret of at least ``shortest`` characters; a refused one is never shown in the error."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ExplainedInvalid("expected text (the value is not shown)")
        if len(value) < shortest:
            raise ExplainedInvalid(f"use at least {shortest} characters (the value is not shown)")
        return value

    return check


_SECRET = _secret(16)
_HOW_TO_PROTECT = (
    "Infobip signs no webhook, so wahub needs a credential it sends with every call: set webhook_username "
    "and webhook_password (and enter them as the HTTP Basic authentication of the webhook at Infobip), or "
    "webhook_header and webhook_secret (and add that header to the webhook at Infobip)"
)

#: What Infobip's WhatsApp endpoints send (no reactions, read receipts, CTA URLs or flows).
CAPABILITIES = Capabilities(
    types=frozenset({*PATHS, "interactive"}),
    max_text=4096,
    max_caption=1024,  # WhatsApp's own limit (Infobip's API takes longer ones)
    max_buttons=3,
    max_button_title=20,
    max_button_id=256,
    max_list_rows=10,
    max_list_sections=10,
    max_header_text=60,
    max_interactive_body=1024,
    max_footer=60,
)


def _webhook_credentials(entry: dict[str, Any]) -> dict[str, Any]:
    """Both keys of a pair or neither, and at least one pair."""
    pairs = (("webhook_username", "webhook_password"), ("webhook_header", "webhook_secret"))
    for first, second in pairs:
        if (first in entry) != (second in entry):
            missing = second if first in entry else first
            given = first if first in entry else second
            raise ExplainedInvalid(f"{given} is set without {missing}: give both", path=[missing])
    if not any(first in entry for first, _ in pairs):
        raise ExplainedInvalid(_HOW_TO_PROTECT)
    return entry


class InfobipProvider(Provider):
    """WhatsApp through Infobip's API."""

    PLATFORM = "infobip"
    CAPABILITIES = CAPABILITIES
    CONFIG_SCHEMA = vol.Schema(
        vol.All(
            PROVIDER_SCHEMA_BASE.extend(
                {
                    # The account's API base URL from the Infobip portal, e.g. https://abc123.api.infobip.com.
                    vol.Required("base_url"): vol.All(vol.Url(), vol.Match(r"^https?://", msg="an http(s) URL")),
                    # An API key with the WhatsApp scopes; sent as "Authorization: App <key>".
                    vol.Required("api_key"): _secret(1),
                    # The business number registered at Infobip, in digits (447860099299).
                    vol.Required("sender"): vol.All(vol.Coerce(str), vol.Match(r"^\d{6,20}$", msg="digits only")),
                    # HTTP Basic credentials the webhook at Infobip sends (set both, or use a header).
                    vol.Optional("webhook_username"): vol.All(str, vol.Length(min=1)),
                    vol.Optional("webhook_password"): _SECRET,
                    # A header the webhook at Infobip sends, and its secret value (set both, or use Basic).
                    vol.Optional("webhook_header"): _HEADER_NAME,
                    vol.Optional("webhook_secret"): _SECRET,
                    # Seconds an API request may take.
                    vol.Optional("timeout", default=30.0): vol.All(vol.Coerce(float), vol.Range(min=0.1, max=300)),
                    **PUBLIC_URL_OPTIONS,
                }
            ),
            _webhook_credentials,
        )
    )

    def __init__(self, hub: ProviderHost, config: Mapping[str, Any]) -> None:
        super().__init__(hub, config)
        self.base_url: str = config["base_url"].rstrip("/")
        self.sender: str = config["sender"]
        self.timeout = aiohttp.ClientTimeout(total=config["timeout"])

    # -- webhooks -------------------------------------------------------------

    def verify_signature(self, headers: Mapping[str, str], body: bytes) -> bool:
        """The configured credentials, all of them, compared in constant time."""
        checks = []
        if "webhook_username" in self.config:
            checks.append(self._basic_matches(headers.get("Authorization", "")))
        if "webhook_header" in self.config:
            checks.append(secret_matches(headers.get(self.config["webhook_header"], ""), self.config["webhook_secret"]))
        return bool(checks) and all(checks)

    def _basic_matches(self, given: str) -> bool:
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        user_ok = hmac.compare_digest(user, self.config["webhook_username"].encode())
        password_ok = hmac.compare_digest(password, self.config["webhook_password"].encode())
        return bool(sep) and user_ok and password_ok

    def parse_webhook(self, body: bytes) -> list[Event]:
        return parse_infobip_webhook(body, provider=self.name)

    def notify_url(self) -> str | None:
        """Where delivery reports of this entry's sends go, when wahub knows its public URL."""
        base = self.config.get("public_base_url")
        return f"{base}/webhooks/{self.name}" if base else None

    # -- calls ----------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"App {self.config['api_key']}", "Accept": "application/json"}

    async def call(self, method: str, path: str, *, json: Any = None) -> Any:
        """One API request; its JSON answer (``{}`` for none), or ``ProviderError``."""
        answer = await request_json(
            self.hub.http,
            method,
            self.base_url + path,
            error_of=infobip_error,
            provider="Infobip",
            client_timeout=self.timeout,
            headers=self._headers(),
            json=json,
        )
        return answer if answer is not None else {}

    def classify_error(self, code: str | None, *, http_status: int | None = None) -> ErrorMeaning:
        return classify_infobip_error(code, http_status=http_status)

    # -- sending --------------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> SendResult:
        kind = kind_of(message)
        if kind not in PATHS:
            raise ProviderError(f"infobip cannot send {kind} messages", code="unsupported")
        envelope: dict[str, Any] = {"from": self.sender, "to": await self._recipient(message)}
        callback = message.content.get("biz_opaque_callback_data")
        if callback:
            envelope["callbackData"] = str(callback)
        notify = self.notify_url()
        if notify:
            envelope["notifyUrl"] = notify
        if kind == "template":
            envelope["content"] = await template_content(message.content["template"], self.media_url)
            answer = await self.call("POST", MESSAGE_PATH + "template", json={"messages": [envelope]})
            listed = answer.get("messages") if isinstance(answer, dict) else None
            answer = listed[0] if isinstance(listed, list) and listed else answer
        else:
            envelope["content"] = await content_of(message, self.media_url)
            answer = await self.call("POST", MESSAGE_PATH + PATHS[kind], json=envelope)
        return self._result(answer)

    async def _recipient(self, message: OutgoingMessage) -> str:
        """The user's number in digits: Infobip sends to phone numbers only."""
        digits = address(message.to)
        if digits is not None:
            return digits
        if message.keep_address:
            raise ProviderError(
                f"infobip sends to phone numbers, not to {message.to!r}: give the user's number", code="BAD_REQUEST"
            )
        phone = await self.hub.storage.contacts.phone(self.name, message.to)
        if phone is None:
            raise ProviderError("infobip sends to phone numbers, and none is known for this user", code="BAD_REQUEST")
        return phone

    @staticmethod
    def _result(answer: Any) -> SendResult:
        status = answer.get("status") if isinstance(answer, dict) else None
        if isinstance(status, dict) and status.get("groupName") == "REJECTED":
            code = str(status.get("name") or "REJECTED")
            meaning = classify_infobip_error("REJECTED")
            raise ProviderError(f"{meaning.reason} ({status.get('description') or code})", code=code, meaning=meaning)
        message_id = answer.get("messageId") if isinstance(answer, dict) else None
        if not isinstance(message_id, str) or not message_id:
            raise ProviderError(f"infobip accepted the message but gave no messageId: {answer!r}")
        return SendResult(message_id)

    # -- media ----------------------------------------------------------------

    def _media_location(self, media_id: str) -> str:
        """The URL of an inbound file; only on the account's own host, which gets the API key."""
        if "://" not in media_id:
            return f"{self.base_url}/whatsapp/1/senders/{self.sender}/media/{quote(media_id, safe='')}"
        ours, given = urlsplit(self.base_url), urlsplit(media_id)
        if (given.scheme, given.netloc) == (ours.scheme, ours.netloc):
            return media_id
        if _MEDIA_PATH.fullmatch(given.path):
            # Infobip's media path on another of its hosts: asked of the account's own host,
            # which is the only one the API key goes to.
            return self.base_url + given.path
        raise ProviderError(f"inbound media at {given.netloc!r} is not on base_url: the API key is not sent there")

    async def download_media(self, media_id: str, kind: str, into: IncomingFile) -> Download:
        """Stream an inbound file (kept 7 days at Infobip) into ``into``, with App auth."""
        mime_type = await stream_media(
            self.hub.http,
            self._media_location(media_id),
            kind=kind,
            into=into,
            error_of=infobip_error,
            client_timeout=self.timeout,
            headers=self._headers(),
            check=self.hub.storage.media.check,
        )
        return Download(mime_type)

    # -- templates ------------------------------------------------------------

    def _templates_path(self) -> str:
        return f"/whatsapp/2/senders/{self.sender}/templates"

    async def list_templates(self) -> list[dict[str, Any]]:
        answer = await self.call("GET", self._templates_path())
        listed = answer.get("templates") if isinstance(answer, dict) else None
        return [item for item in listed if isinstance(item, dict)] if isinstance(listed, list) else []

    async def sync_templates(self) -> dict[str, int]:
        """Make the stored templates this sender's; counts added, updated and removed."""
        started = time.time()
        listed: dict[tuple[str, str], tuple[Template, dict[str, Any]]] = {}
        for item in await self.list_templates():
            try:
                name, language, status = str(item["name"]), str(item["language"]), str(item["status"])
            except KeyError:
                _LOGGER.warning("a template of %s without name, language or status is skipped", self.name)
                continue
            template = Template(name, language, str(item.get("category", "")), status)
            details = {
                "components": components_of(item.get("structure")),
                "external_id": str(item["id"]) if item.get("id") is not None else None,
                "quality": str(item["quality"]) if isinstance(item.get("quality"), str) else None,
            }
            listed[(template.name, template.language)] = (template, details)
        counts = await self.hub.storage.policy.replace_templates(self.name, list(listed.values()), listed_since=started)
        self.account["templates_synced_at"] = round(time.time(), 3)
        return counts

    async def create_template(self, definition: Mapping[str, Any], *, files_from: Path | None = None) -> dict[str, Any]:
        """Submit a Cloud API template definition for review through Infobip; stored with the answer's status."""
        body = structure_of(definition)
        answer: dict[str, Any] = await self.call("POST", self._templates_path(), json=body)
        status = str(answer.get("status") or "PENDING")
        template = Template(body["name"], body["language"], str(answer.get("category") or body["category"]), status)
        await self.hub.storage.policy.upsert_template(
            self.name,
            template,
            components=components_of(answer.get("structure") or body["structure"]),
            external_id=str(answer.get("id") or "") or None,
        )
        return answer

    async def delete_template(self, name: str, template_id: str | None = None) -> None:
        """Delete a template in every language (Infobip deletes by name)."""
        if template_id:
            raise ProviderError(
                "infobip deletes a template in every language by its name: delete it without an id", code="unsupported"
            )
        await self.call("DELETE", f"{self._templates_path()}/{quote(name, safe='')}")
        await self.hub.storage.policy.delete_templates(self.name, name)


#: The path of an inbound file at Infobip: /whatsapp/1/senders/{sender}/media/{id}.
_MEDIA_PATH = re.compile(r"/whatsapp/1/senders/[^/]+/media/[^/]+")


@hookimpl
def register_providers() -> Iterable[type[Provider]]:
    return [InfobipProvider]
