"""The WhatsApp Cloud API family: ``CloudApiProvider``, the base of Meta's
own API (``meta_cloud``) and of BSPs hosting it (``dialog360``).

What the Cloud API family shares lives in ``CloudApiProvider``: webhook
parsing (``cloud_webhook``), the request bodies (``cloud_bodies``) and whom
a send addresses, error handling, media; templates, account news and the
business profile come from its base ``CloudAccount`` (``cloud_account``).
A subclass says where requests go and how they authenticate (``_url``,
``_headers``), and how webhooks prove their origin. The account operations a
running daemon offers over the REST API and the scheduler are the plugin
``cloud_operations``.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import voluptuous as vol

from wahub.core.errors import ErrorMeaning, ProviderError
from wahub.core.hub import Hub
from wahub.core.models import Event, OutgoingMessage, SendResult
from wahub.core.provider import PROVIDER_SCHEMA_BASE
from wahub.core.storage.media import LOCAL_PREFIX, MEDIA_KINDS, Download, IncomingFile, MediaFile
from wahub.plugins.providers.cloud.account import PROFILE_SCHEMA, CloudAccount
from wahub.plugins.providers.cloud.bodies import by_phone, render
from wahub.plugins.providers.cloud.errors import classify_cloud_error, cloud_provider_error
from wahub.plugins.providers.cloud.webhook import parse_cloud_webhook
from wahub.plugins.providers.rest import request_json, stream_media

_LOGGER = logging.getLogger(__name__)

#: Meta's code for a BSUID recipient this message cannot be sent to (use the phone number).
BSUID_REFUSED = "131062"
#: The longest ``wa_id`` kept from a send's answer (E.164 numbers have at most 15 digits).
MAX_WA_ID_DIGITS = 32
#: Uploaded media ids live 30 days at Meta; wahub stops using one a day earlier.
UPLOAD_LIFETIME = 29 * 86400
#: How often the number's quality rating and messaging limit are read again.
ACCOUNT_REFRESH_SECONDS = 600.0
DIGITS = vol.All(vol.Coerce(str), vol.Match(r"^\d{1,32}$", msg="digits only"))

#: Keys every Cloud API provider entry has.
CLOUD_SCHEMA_BASE = PROVIDER_SCHEMA_BASE.extend(
    {
        vol.Optional("phone_number_id"): DIGITS,
        vol.Optional("waba_id"): DIGITS,
        vol.Optional("timeout", default=30.0): vol.All(vol.Coerce(float), vol.Range(min=0.1, max=300)),
        vol.Optional("profile"): PROFILE_SCHEMA,
        # Hours between template syncs (on the replica running the scheduler); null: only by command.
        vol.Optional("template_sync_hours", default=6): vol.Any(
            None, vol.All(vol.Coerce(float), vol.Range(min=0.1, max=24 * 7))
        ),
    }
)


def _media_objects(value: Any) -> Iterable[dict[str, Any]]:
    """Every media object (``{"id"|"link": ...}`` under a media key) in a body."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in MEDIA_KINDS and isinstance(item, dict):
                yield item
            yield from _media_objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from _media_objects(item)


def graph_error(status: int, data: Any) -> ProviderError:
    """The ``ProviderError`` for an error answer, keeping Meta's code, title and details."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        details = error.get("error_data")
        details = details.get("details") if isinstance(details, dict) else details
        parts = [error.get("message"), error.get("error_user_title"), error.get("error_user_msg"), details]
        detail = "; ".join(dict.fromkeys(str(part) for part in parts if part))
        return cloud_provider_error(error.get("code"), detail, http_status=status)
    envelope = data.get("meta") if isinstance(data, dict) else None
    detail = "no error body"
    if isinstance(envelope, dict):  # a BSP's own envelope (360dialog)
        status = int(envelope["httpCode"]) if str(envelope.get("httpCode")).isdigit() else status
        detail = str(envelope.get("developerMessage") or envelope.get("message") or detail)
    # No Cloud API code: classified by the HTTP status alone (5xx and 429 retry, 401 pauses).
    error = cloud_provider_error(None, detail, http_status=status)
    error.code = f"http_{status}"
    return error


class CloudApiProvider(CloudAccount):
    """What every host of the WhatsApp Cloud API shares."""

    CONFIG_SCHEMA = CLOUD_SCHEMA_BASE

    def __init__(self, hub: Hub, config: Mapping[str, Any]) -> None:
        super().__init__(hub, config)
        self.phone_number_id: str | None = config.get("phone_number_id")
        self.waba_id: str | None = config.get("waba_id")
        self.timeout = aiohttp.ClientTimeout(total=config["timeout"])
        self._refresher: asyncio.Task[None] | None = None

    # -- where requests go ------------------------------------------------

    @abc.abstractmethod
    def _url(self, path: str) -> str:
        """The full URL of an API path such as ``messages`` or ``{media_id}``."""

    @abc.abstractmethod
    def _headers(self) -> dict[str, str]:
        """The credentials every request carries."""

    def _download_url(self, url: str) -> str:
        """Where to fetch a media URL the API returned."""
        return url

    # -- errors -----------------------------------------------------------

    def classify_error(self, code: str | None, *, http_status: int | None = None) -> ErrorMeaning:
        """Meta's error codes (``wahub.plugins.providers.cloud.errors``)."""
        return classify_cloud_error(code, http_status=http_status)

    # -- webhooks ---------------------------------------------------------

    @abc.abstractmethod
    def webhook_credential(self) -> tuple[str, ...]:
        """What proves a webhook's origin. A webhook's events may belong to another
        provider entry (another number behind the same URL) only if it shares this."""

    @functools.cached_property
    def _routes(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        """Numbers and accounts this provider's webhooks may speak for (the
        configured providers never change, so this is worked out once)."""
        numbers: dict[str, str] = {}
        accounts: dict[str, list[str]] = {}
        for provider in self.hub.providers.values():
            if isinstance(provider, CloudApiProvider) and provider.webhook_credential() == self.webhook_credential():
                if provider.phone_number_id:
                    numbers.setdefault(provider.phone_number_id, provider.name)
                if provider.waba_id:
                    accounts.setdefault(provider.waba_id, []).append(provider.name)
        return numbers, accounts

    def parse_webhook(self, body: bytes) -> list[Event]:
        numbers, accounts = self._routes
        return parse_cloud_webhook(body, default=self.name, numbers=numbers, accounts=accounts)

    # -- calls ------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One API request; its JSON answer, or ``ProviderError``."""
        answer = await request_json(
            self.hub.http,
            method,
            url or self._url(path),
            error_of=graph_error,
            provider="the API",
            client_timeout=self.timeout,
            headers={**self._headers(), **(headers or {})},
            json=json,
            params=params,
            data=data,
        )
        return answer if answer is not None else {}

    # -- sending ----------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> SendResult:
        """Send by phone number when the contact has one (Meta's ``to``), by BSUID
        (``recipient``) only when not, or when ``keep_address`` says so."""
        body = render(message)
        if "recipient" in body and not message.keep_address:
            phone = await self.hub.storage.contacts.phone(self.name, message.to)
            body = by_phone(body, phone) if phone else body
        for media in _media_objects({message.type: body.get(message.type)}):
            if str(media.get("id", "")).startswith(LOCAL_PREFIX):
                media["id"] = await self._upload_local(media["id"][len(LOCAL_PREFIX) :])
        answer = await self._post_message(message, body)
        if message.type == "mark_read":
            # Nothing new is created: the receipt gets an id of its own for the outbox.
            return SendResult(f"read.{uuid.uuid4().hex}")
        try:
            provider_message_id = str(answer["messages"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise ProviderError(f"the API accepted the message but gave no id: {answer!r}") from None
        wa_id = _reported_wa_id(body, answer)
        return SendResult(provider_message_id, {"wa_id": wa_id} if wa_id is not None else {})

    async def _post_message(self, message: OutgoingMessage, body: dict[str, Any]) -> Any:
        """POST the body; a BSUID refused for this message (131062) is tried once
        more by the contact's phone number, if one is known by now."""
        try:
            return await self.call("POST", "messages", json=body)
        except ProviderError as exc:
            if exc.code != BSUID_REFUSED or "recipient" not in body:
                raise
            phone = await self.hub.storage.contacts.phone(self.name, message.to)
            if phone is None:
                raise ProviderError(f"{exc}; no phone number is known for this user", code=exc.code) from None
            _LOGGER.info("%s refused a BSUID recipient (131062); sending again to ...%s", self.name, phone[-4:])
            return await self.call("POST", "messages", json=by_phone(body, phone))

    # -- media ------------------------------------------------------------

    async def _upload_local(self, local_id: str) -> str:
        store = self.hub.storage.media
        file = await store.get(local_id)
        if file is None:
            raise ProviderError(f"media {LOCAL_PREFIX}{local_id} is not stored in wahub", code="131053")
        known = await store.uploaded(self.name, file)
        if known is not None:
            return known
        media_id = await self.upload_media(file)
        await store.remember_upload(self.name, file, media_id, time.time() + UPLOAD_LIFETIME)
        return media_id

    async def upload_media(self, file: MediaFile) -> str:
        """Upload a stored file, streamed from disk; returns the provider's media id."""
        path = self.hub.storage.media.path(file)
        try:
            stream = await asyncio.to_thread(path.open, "rb")
        except OSError as exc:
            raise ProviderError(f"media {file.id} cannot be read: {exc.strerror or exc}", code="131053") from exc
        try:
            form = aiohttp.FormData()
            form.add_field("messaging_product", "whatsapp")
            form.add_field("type", file.mime_type)
            # A file object: aiohttp sends it in chunks read off the event loop.
            form.add_field("file", stream, filename=file.filename or path.name, content_type=file.mime_type)
            answer = await self.call("POST", "media", data=form)
        finally:
            stream.close()
        return str(answer["id"])

    async def download_media(self, media_id: str, kind: str, into: IncomingFile) -> Download:
        """Look up the file's URL and stream it at once (the URL lasts minutes) into ``into``, with the credentials."""
        info = await self.call("GET", media_id, params=self._media_params())
        mime_type = str(info.get("mime_type") or "application/octet-stream")
        size = info.get("file_size")
        self.hub.storage.media.check(kind, mime_type, int(size) if str(size or "").isdigit() else None)
        # The MIME type kept is the lookup's, not the one the file's host answers with.
        await stream_media(
            self.hub.http,
            self._download_url(str(info["url"])),
            kind=kind,
            into=into,
            error_of=graph_error,
            client_timeout=self.timeout,
            headers=self._headers(),
        )
        return Download(mime_type, info.get("sha256"))

    def _media_params(self) -> dict[str, str] | None:
        return None

    # -- account ----------------------------------------------------------

    async def refresh_account(self) -> dict[str, Any] | None:
        """Read the number's quality rating and messaging limit; None when the host does not tell."""
        return None

    async def start(self) -> None:
        await super().start()
        self._refresher = self.hub.spawn(self._keep_account_fresh())

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await super().stop()

    async def _keep_account_fresh(self) -> None:
        while True:
            try:
                state = await self.refresh_account()
            except ProviderError as exc:
                _LOGGER.warning("cannot read the account state of %s: %s", self.name, exc)
                self.account["error"] = str(exc)
            else:
                if state is None:
                    return
                self.account.pop("error", None)
                self.account.update(state)
            await asyncio.sleep(ACCOUNT_REFRESH_SECONDS)


def _reported_wa_id(body: dict[str, Any], answer: Any) -> str | None:
    """The answer's ``contacts[].wa_id`` (WhatsApp's own form of the number), if it is one."""
    found = answer.get("contacts") if isinstance(answer, dict) else None
    wa_id = found[0].get("wa_id") if isinstance(found, list) and found and isinstance(found[0], dict) else None
    if body.get("recipient_type") == "group" or not isinstance(wa_id, str) or not wa_id.isdigit():
        return None
    return wa_id if len(wa_id) <= MAX_WA_ID_DIGITS else None
