"""Bird (api.bird.com), the current MessageBird platform: WhatsApp through
the Channels API (``platform: bird``).

Sends go to ``{api_base}/workspaces/{workspace_id}/channels/{channel_id}/messages``
with ``Authorization: AccessKey <access_key>`` (bodies: ``bird.bodies``).
Webhooks come from a Notifications API subscription, signed over the URL
Bird called (``bird.signature``): that URL is rebuilt from
``public_base_url``, or behind trusted proxies from their forwarding headers.
Bird's API has no template listing wahub could read, so templates are
declared in the entry (``templates:``, each with its Bird project id and
version) and ``sync_templates`` stores that list.
"""

from __future__ import annotations

import logging
import mimetypes
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import voluptuous as vol

from wahub import hookimpl
from wahub.core.canonical.fit import Capabilities
from wahub.core.errors import ErrorMeaning, ProviderError
from wahub.core.http.proxies import called_url, trusted_networks
from wahub.core.models import Event, OutgoingMessage, SendResult
from wahub.core.provider import PROVIDER_SCHEMA_BASE, PUBLIC_URL_OPTIONS, Provider, ProviderHost, WebhookRequest
from wahub.core.storage.media import LOCAL_PREFIX, Download, IncomingFile
from wahub.core.storage.policy import Template
from wahub.plugins.providers.bird.bodies import FILE_TYPES, Media, TemplateRef, render, unsupported
from wahub.plugins.providers.bird.errors import bird_error, classify_bird_error
from wahub.plugins.providers.bird.signature import signature_valid
from wahub.plugins.providers.bird.webhook import digits_of, parse_bird_webhook
from wahub.plugins.providers.rest import request_json, stream_media

_LOGGER = logging.getLogger(__name__)

_ID = vol.All(str, vol.Match(r"^[A-Za-z0-9-]{1,64}$", msg="a Bird id: letters, digits and '-'"))
#: Hosts (and their subdomains) Bird serves inbound files from: the access key goes only there.
MEDIA_DOMAINS = ("bird.com", "messagebird.com")

_TEMPLATE = vol.Schema(
    {
        # The template's name as messages name it (template.name).
        vol.Required("name"): vol.All(str, vol.Length(min=1, max=512)),
        # Its language as messages name it (template.language.code); sent to Bird as its locale.
        vol.Optional("language", default="en"): vol.All(str, vol.Match(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")),
        # The Bird template's project id and the approved version to send.
        vol.Required("project_id"): _ID,
        vol.Required("version"): _ID,
        vol.Optional("category", default="UTILITY"): vol.In(["MARKETING", "UTILITY", "AUTHENTICATION"]),
    }
)

#: What Bird carries: text, images, files (documents, audio, video), reply
#: buttons, lists, locations and templates; the rest falls back through ``adapt``.
BIRD_CAPABILITIES = Capabilities(
    types=frozenset(
        {"text", "image", "document", "audio", "video", "location", "template"}
        | {"interactive", "interactive.button", "interactive.list"}
    ),
)


class BirdProvider(Provider):
    """WhatsApp through Bird's Channels API."""

    PLATFORM = "bird"
    CAPABILITIES = BIRD_CAPABILITIES
    CONFIG_SCHEMA = PROVIDER_SCHEMA_BASE.extend(
        {
            # The Bird workspace and its WhatsApp channel (Bird's dashboard shows both ids).
            vol.Required("workspace_id"): _ID,
            vol.Required("channel_id"): _ID,
            # An access key allowed to send on the channel; sent as `Authorization: AccessKey <key>`.
            vol.Required("access_key"): vol.All(str, vol.Length(min=1)),
            # The webhook subscription's signing key (messagebird-signature).
            vol.Required("signing_key"): vol.All(str, vol.Length(min=8, msg="use the subscription's signing key")),
            # Bird's API; only tests point it elsewhere.
            vol.Optional("api_base", default="https://api.bird.com"): vol.Url(),
            # Seconds one API request may take.
            vol.Optional("timeout", default=30.0): vol.All(vol.Coerce(float), vol.Range(min=0.1, max=300)),
            # The templates messages may name, each with its Bird project id and version.
            vol.Optional("templates", default=list): [_TEMPLATE],
            **PUBLIC_URL_OPTIONS,
        }
    )

    def __init__(self, hub: ProviderHost, config: Mapping[str, Any]) -> None:
        super().__init__(hub, config)
        self._trusted = trusted_networks(config["trusted_proxies"])
        self._timeout = aiohttp.ClientTimeout(total=config["timeout"])
        base = config["api_base"].rstrip("/")
        self._api_host = urlsplit(base).hostname or ""
        self._messages_url = f"{base}/workspaces/{config['workspace_id']}/channels/{config['channel_id']}/messages"

    # -- webhooks ---------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest) -> bool:
        """Bird's signature over the URL it called, the timestamp and the body's digest."""
        url = called_url(
            request.url,
            request.headers,
            request.peer,
            public_base_url=self.config.get("public_base_url"),
            trusted=self._trusted,
        )
        valid = signature_valid(self.config["signing_key"], request.headers, url, request.body, now=time.time())
        if not valid:
            _LOGGER.warning("webhook for %s refused: signature missing, wrong, stale or for another URL", self.name)
        return valid

    def parse_webhook(self, body: bytes) -> list[Event]:
        channels: dict[str, str] = {}
        for provider in self.hub.providers.values():
            same_key = (
                isinstance(provider, BirdProvider) and provider.config["signing_key"] == self.config["signing_key"]
            )
            if same_key:
                channels.setdefault(provider.config["channel_id"], provider.name)
        return parse_bird_webhook(body, default=self.name, channels=channels)

    # -- errors -----------------------------------------------------------

    def classify_error(self, code: str | None, *, http_status: int | None = None) -> ErrorMeaning:
        return classify_bird_error(code, http_status=http_status)

    # -- sending ----------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> SendResult:
        phone = await self._phone(message)
        media = await self._media(message) if message.type in ("image", *FILE_TYPES) else None
        template = await self._template(message.content["template"]) if message.type == "template" else None
        body = render(message, phone, media=media, template=template)
        answer = await self._call("POST", self._messages_url, body)
        message_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(message_id, str) or not message_id:
            raise ProviderError(f"Bird accepted the message but gave no id: {answer!r}")
        return SendResult(message_id)

    async def _phone(self, message: OutgoingMessage) -> str:
        """The recipient's number as digits: Bird sends to phone numbers only. A
        business-scoped id goes to the contact's known number, unless the sender
        asked for exactly that address (``keep_address``)."""
        address = message.to
        phone = digits_of(address)
        if phone is None and message.keep_address:
            raise unsupported(f"Bird sends to phone numbers, not to {address!r}: give the user's number")
        phone = phone or await self.hub.storage.contacts.phone(self.name, address)
        if not phone:
            raise unsupported("Bird sends to phone numbers; no phone number is known for this user")
        return phone

    async def _media(self, message: OutgoingMessage) -> Media:
        """The file's URL for Bird to fetch (a link, or a signed URL of a file stored in wahub) and its type."""
        media = message.content[message.type]
        url = await self.media_url(media)
        media_id = str(media.get("id", ""))
        if media_id.startswith(LOCAL_PREFIX):
            file = await self.hub.storage.media.get(media_id[len(LOCAL_PREFIX) :])
            if file is not None:
                return Media(url, file.mime_type, file.filename)
        name = media.get("filename") or urlsplit(url).path.rpartition("/")[2]
        guessed = mimetypes.guess_type(name)[0] if name else None
        defaults = {"image": "image/jpeg", "audio": "audio/mpeg", "video": "video/mp4"}
        return Media(url, guessed or defaults.get(message.type, "application/octet-stream"))

    async def _template(self, template: Mapping[str, Any]) -> TemplateRef:
        """The Bird project and version of a canonical template, from the entry's
        ``templates`` or the stored templates (external id ``project:version``)."""
        name = str(template["name"])
        language = str((template.get("language") or {}).get("code") or "en")
        for declared in self.config["templates"]:
            if declared["name"] == name and declared["language"] == language:
                return TemplateRef(declared["project_id"], declared["version"], language.replace("_", "-"))
        for row in await self.hub.storage.policy.templates(self.name):
            project, _, version = str(row.get("external_id") or "").partition(":")
            if row["name"] == name and row["language"] == language and project and version:
                return TemplateRef(project, version, language.replace("_", "-"))
        raise unsupported(
            f"template {name!r} ({language}) has no Bird project: declare it under templates: "
            f"in provider {self.name!r} with its project_id and version"
        )

    async def _call(self, method: str, url: str, body: Any = None) -> Any:
        return await request_json(
            self.hub.http,
            method,
            url,
            error_of=bird_error,
            provider="Bird",
            client_timeout=self._timeout,
            headers=self._headers(),
            json=body,
        )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"AccessKey {self.config['access_key']}"}

    # -- media ------------------------------------------------------------

    async def download_media(self, media_id: str, kind: str, into: IncomingFile) -> Download:
        """Stream an inbound file from its ``mediaUrl`` into ``into``, with the
        access key when the URL is Bird's (never to another host)."""
        parts = urlsplit(media_id)
        host = parts.hostname or ""
        bird = parts.scheme == "https" and any(host == d or host.endswith("." + d) for d in MEDIA_DOMAINS)
        ours = host == self._api_host or bird
        mime_type = await stream_media(
            self.hub.http,
            media_id,
            kind=kind,
            into=into,
            error_of=bird_error,
            client_timeout=self._timeout,
            headers=self._headers() if ours else {},
            check=self.hub.storage.media.check,
        )
        return Download(mime_type)

    # -- templates --------------------------------------------------------

    async def sync_templates(self) -> dict[str, int] | None:
        """Store the entry's declared templates as the provider's list (Bird's
        API offers none to read); None when the entry declares none."""
        declared = self.config["templates"]
        if not declared:
            return None
        listed = [
            (
                Template(item["name"], item["language"], item["category"], "APPROVED"),
                {"external_id": f"{item['project_id']}:{item['version']}"},
            )
            for item in declared
        ]
        return await self.hub.storage.policy.replace_templates(self.name, listed, listed_since=time.time())


@hookimpl
def register_providers() -> Iterable[type[Provider]]:
    return [BirdProvider]
