"""Twilio's Programmable Messaging for WhatsApp senders (``platform: twilio``).

Sends are form posts to the Messages API with HTTP Basic credentials (the
account SID and auth token, or an API key); templates are Content API
resources (``wahub.plugins.providers.twilio.templates``). Webhooks are forms
signed with ``X-Twilio-Signature`` over the URL Twilio called
(``wahub.plugins.providers.twilio.signature``), read by ``twilio_webhook``
and answered with an empty TwiML ``<Response/>``.

Interactive messages (reply buttons, lists, links) go out as the text
fallback ``wahub.core.canonical.fit.adapt`` writes: the body and numbered
choices, the person answers by typing. Twilio's own rich messages are
Content resources that need creating (and for lists cannot be approved);
templates with quick replies are the way to tappable buttons.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from wahub import hookimpl
from wahub.core.canonical.fit import Capabilities
from wahub.core.errors import ErrorMeaning, MediaRefused, ProviderError
from wahub.core.http.proxies import called_url, trusted_networks
from wahub.core.models import Event, OutgoingMessage, SendResult
from wahub.core.provider import Provider, ProviderHost, WebhookRequest
from wahub.core.storage.media import Download, IncomingFile
from wahub.plugins.providers.rest import request_json, stream_media
from wahub.plugins.providers.twilio.config import CONFIG_SCHEMA
from wahub.plugins.providers.twilio.content import content_variables
from wahub.plugins.providers.twilio.errors import classify_twilio_error, twilio_error
from wahub.plugins.providers.twilio.session import content_key, session_content
from wahub.plugins.providers.twilio.signature import SIGNATURE_HEADER, signature_valid
from wahub.plugins.providers.twilio.templates import TwilioTemplates
from wahub.plugins.providers.twilio.webhook import digits, parse_twilio_webhook

_LOGGER = logging.getLogger(__name__)

#: An empty TwiML answer: the webhook is taken, nothing is replied from it.
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_CAPTIONED = ("image", "video", "document")
_MEDIA = ("image", "video", "audio", "document", "sticker")


_SESSION_KINDS = ("interactive", "interactive.button", "interactive.list")


class TwilioProvider(TwilioTemplates, Provider):
    """A WhatsApp sender on Twilio."""

    PLATFORM = "twilio"
    CONFIG_SCHEMA = CONFIG_SCHEMA
    # Twilio takes a body of 1600 characters; captions are that body.
    # Reply buttons and lists go as session content resources (session.py).
    CAPABILITIES = Capabilities(
        types=frozenset(
            {"text", *_MEDIA, "location", "template", "interactive", "interactive.button", "interactive.list"}
        ),
        max_text=1600,
        max_caption=1600,
    )

    def __init__(self, hub: ProviderHost, config: Mapping[str, Any]) -> None:
        super().__init__(hub, config)
        self.account_sid: str = config["account_sid"]
        login = (config["api_key_sid"], config["api_key_secret"]) if config.get("api_key_sid") else None
        self._auth = {"Authorization": aiohttp.encode_basic_auth(*(login or (self.account_sid, config["auth_token"])))}
        self._trusted = trusted_networks(config["trusted_proxies"])
        self.timeout = aiohttp.ClientTimeout(total=config["timeout"])

    async def start(self) -> None:
        if not self.config["verify_webhooks"]:
            _LOGGER.warning("webhooks of %s are taken unchecked (verify_webhooks: false)", self.name)
        await super().start()

    # -- webhooks ---------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest) -> bool:
        """``X-Twilio-Signature`` over the URL Twilio called: ``public_base_url``
        and the path, else what a trusted proxy says, else the request's URL."""
        if not self.config["verify_webhooks"]:
            return True
        url = called_url(
            request.url,
            request.headers,
            request.peer,
            public_base_url=self.config.get("public_base_url"),
            trusted=self._trusted,
        )
        content_type = request.headers.get("Content-Type", "").lower()
        return signature_valid(
            self.config["auth_token"],
            url,
            request.body,
            request.headers.get(SIGNATURE_HEADER, ""),
            json_body="json" in content_type,
        )

    def parse_webhook(self, body: bytes) -> list[Event]:
        return parse_twilio_webhook(body, provider=self.name)

    def webhook_response(self, answer: Mapping[str, Any]) -> web.Response:
        """Twilio expects TwiML: an empty ``<Response/>`` replies nothing."""
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

    # -- calls ------------------------------------------------------------

    async def call(
        self,
        method: str,
        url: str,
        *,
        form: Iterable[tuple[str, str]] | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One request to Twilio; its JSON answer (``{}`` for none), or ``ProviderError``."""
        answer = await request_json(
            self.hub.http,
            method,
            url,
            error_of=twilio_error,
            provider="Twilio",
            client_timeout=self.timeout,
            headers=self._auth,
            data=list(form) if form is not None else None,
            json=json_body,
            params=params,
        )
        return answer if answer is not None else {}

    def classify_error(self, code: str | None, *, http_status: int | None = None) -> ErrorMeaning:
        """Twilio's error codes (``wahub.plugins.providers.twilio.errors``)."""
        return classify_twilio_error(code, http_status=http_status)

    def content_url(self, path: str) -> str:
        return f"{self.config['content_base'].rstrip('/')}/{path.lstrip('/')}"

    # -- sending ----------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> SendResult:
        """One Messages API form post; Twilio's ``SM``/``MM`` SID is the message's id."""
        url = f"{self.config['api_base'].rstrip('/')}/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        answer = await self.call("POST", url, form=await self.message_form(message))
        sid = answer.get("sid") if isinstance(answer, dict) else None
        if not isinstance(sid, str) or not sid:
            raise ProviderError(f"Twilio accepted the message but gave no sid: {answer!r}")
        return SendResult(sid)

    async def message_form(self, message: OutgoingMessage) -> list[tuple[str, str]]:
        """The Messages API form fields of ``message``."""
        form = [("To", f"whatsapp:+{await self._phone(message)}")]
        if self.config.get("messaging_service_sid"):
            form.append(("MessagingServiceSid", self.config["messaging_service_sid"]))
        else:
            form.append(("From", self.config["from"]))
        body = message.content[message.type]
        if message.type == "text":
            form.append(("Body", str(body["body"])))
        elif message.type in _MEDIA:
            if message.type in _CAPTIONED and body.get("caption"):
                form.append(("Body", str(body["caption"])))
            form.append(("MediaUrl", await self.media_url(body)))
        elif message.type == "location":
            form += _location(body)
        elif message.type == "template":
            form += await self._template(body)
        elif message.type == "interactive":
            form.append(("ContentSid", await self._session_sid(body)))
        else:
            raise ProviderError(f"Twilio cannot send a {message.type} message", code="unsupported")
        if self.config.get("public_base_url"):
            form.append(("StatusCallback", f"{self.config['public_base_url'].rstrip('/')}/webhooks/{self.name}"))
        return form

    async def _phone(self, message: OutgoingMessage) -> str:
        """The recipient's phone number: Twilio sends to numbers, not to BSUIDs."""
        to = digits(message.to)
        if to is not None:
            return to
        if message.keep_address:
            raise ProviderError(
                f"Twilio sends to phone numbers, not to {message.to!r}: give the user's number",
                code="63024",
                meaning=classify_twilio_error("63024"),
            )
        phone = await self.hub.storage.contacts.phone(self.name, message.to)
        if phone is None:
            raise ProviderError(
                "Twilio sends to phone numbers, and none is known for this user (only a business-scoped id)",
                code="63024",
                meaning=classify_twilio_error("63024"),
            )
        return phone

    async def _template(self, template: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``ContentSid`` (the stored template's id) and its ``ContentVariables``."""
        name = str(template["name"])
        language = str((template.get("language") or {}).get("code", ""))
        sid = await self.content_sid(name, language)
        form = [("ContentSid", sid)]
        variables = content_variables(template)
        if variables:
            form.append(("ContentVariables", json.dumps(variables, ensure_ascii=False)))
        return form

    async def _session_sid(self, interactive: Mapping[str, Any]) -> str:
        """The ``ContentSid`` of a session button or list message, created at
        the Content API the first time this exact message is sent."""
        content = session_content(interactive)
        key, friendly_name = content_key(self.account_sid, content)
        settings = self.hub.storage.settings
        known = await settings.get(key)
        if known is not None:
            return known
        created = await self.call(
            "POST", self.content_url("v1/Content"), json_body={"friendly_name": friendly_name, **content}
        )
        sid = created.get("sid") if isinstance(created, dict) else None
        if not isinstance(sid, str) or not sid:
            raise ProviderError(f"Twilio created the content but gave no sid: {created!r}")
        return await settings.setdefault(key, sid)

    # -- media ------------------------------------------------------------

    async def download_media(self, media_id: str, kind: str, into: IncomingFile) -> Download:
        """Fetch an inbound file by its ``MediaUrl`` with the account's credentials
        (Twilio answers with a redirect to the file, fetched without them). A URL
        off Twilio's API is not fetched: the credentials go nowhere else."""
        if _origin(media_id) != _origin(self.config["api_base"]):
            raise MediaRefused(f"the {kind}'s URL is not on Twilio's API ({self.config['api_base']}); not fetched")
        mime_type = await stream_media(
            self.hub.http,
            media_id,
            kind=kind,
            into=into,
            error_of=twilio_error,
            client_timeout=self.timeout,
            headers=self._auth,
        )
        return Download(mime_type)


def _location(location: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A location as Twilio sends one to WhatsApp: a ``geo:`` persistent action
    beside a body naming the place (its coordinates when it has no name)."""
    latitude, longitude = location["latitude"], location["longitude"]
    label = location.get("name") or location.get("address") or ""
    text = "\n".join(part for part in (location.get("name"), location.get("address")) if part)
    return [("Body", text or f"{latitude},{longitude}"), ("PersistentAction", f"geo:{latitude},{longitude}|{label}")]


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


@hookimpl
def register_providers() -> Iterable[type[Provider]]:
    return [TwilioProvider]
