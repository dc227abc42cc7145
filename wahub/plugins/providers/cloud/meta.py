"""Meta's WhatsApp Cloud API, called directly on the Graph API
(``platform: meta_cloud``).

Requests go to ``{api_base}/{api_version}/...`` with the access token as a
bearer token; webhooks carry ``X-Hub-Signature-256``, the HMAC-SHA256 of the
raw body keyed with the app secret, and Meta verifies the callback URL with a
GET handshake. The number is registered, and its two-step PIN set, through
``CloudNumber`` (``cloud_number``). Everything else is the Cloud API family's (``cloud_api``).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import voluptuous as vol
from aiohttp import web

from wahub import hookimpl
from wahub.core.errors import ProviderError
from wahub.core.provider import Provider, secret_matches, signature_matches
from wahub.plugins.providers.cloud.api import CLOUD_SCHEMA_BASE, DIGITS, CloudApiProvider
from wahub.plugins.providers.cloud.number import CloudNumber

_LOGGER = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
PHONE_FIELDS = (
    "display_phone_number,verified_name,quality_rating,name_status,"
    "whatsapp_business_manager_messaging_limit,messaging_limit_tier,throughput"
)


class MetaCloudProvider(CloudApiProvider, CloudNumber):
    """Meta's WhatsApp Cloud API, called directly on the Graph API; registers
    its number and sets the two-step PIN (``cloud_number``)."""

    PLATFORM = "meta_cloud"
    CONFIG_SCHEMA = CLOUD_SCHEMA_BASE.extend(
        {
            vol.Required("phone_number_id"): DIGITS,
            vol.Required("waba_id"): DIGITS,
            vol.Required("access_token"): vol.All(str, vol.Length(min=1)),
            vol.Required("app_secret"): vol.All(str, vol.Length(min=1)),
            vol.Required("verify_token"): vol.All(str, vol.Length(min=1)),
            # The Meta app's id: needed to upload template header media and the profile picture.
            vol.Optional("app_id"): DIGITS,
            vol.Optional("api_base", default="https://graph.facebook.com"): vol.Url(),
            vol.Optional("api_version", default="v23.0"): vol.Match(r"^v\d+\.\d+$", msg="like v23.0"),
        }
    )

    def _url(self, path: str) -> str:
        return f"{self.config['api_base'].rstrip('/')}/{self.config['api_version']}/{self._path(path)}"

    def _path(self, path: str) -> str:
        if path in ("messages", "media", "whatsapp_business_profile"):
            return f"{self.phone_number_id}/{path}"
        return path

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config['access_token']}"}

    def _media_params(self) -> dict[str, str] | None:
        return {"phone_number_id": str(self.phone_number_id)}

    def webhook_credential(self) -> tuple[str, ...]:
        return (self.PLATFORM, self.config["app_secret"])

    def verify_signature(self, headers: Mapping[str, str], body: bytes) -> bool:
        return signature_matches(self.config["app_secret"], headers.get(SIGNATURE_HEADER, ""), body)

    async def handle_webhook_get(self, request: web.Request) -> web.StreamResponse:
        """Meta's verification handshake: echo ``hub.challenge`` for the right token."""
        query = request.query
        token_ok = secret_matches(query.get("hub.verify_token", ""), self.config["verify_token"])
        if query.get("hub.mode") == "subscribe" and token_ok and "hub.challenge" in query:
            return web.Response(text=query["hub.challenge"], content_type="text/plain")
        _LOGGER.warning("webhook verification for %s refused: wrong mode or verify token", self.name)
        return web.Response(status=403, text="verification refused")

    async def upload_handle(self, path: Path) -> str:
        """Meta's Resumable Upload API: open an upload session on the app, send the bytes, get the handle."""
        if not self.config.get("app_id"):
            raise ProviderError(f"set app_id in provider {self.name!r} to upload {path.name}", code="config")
        try:
            stream = await asyncio.to_thread(path.open, "rb")
        except OSError as exc:
            raise ProviderError(f"cannot read {path}: {exc.strerror or exc}", code="file") from exc
        try:  # the file object is sent in chunks, never whole in memory
            mime_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            size = os.fstat(stream.fileno()).st_size
            params = {"file_name": path.name, "file_length": str(size), "file_type": mime_type}
            session = await self.call("POST", f"{self.config['app_id']}/uploads", params=params)
            answer = await self.call("POST", str(session["id"]), data=stream, headers={"file_offset": "0"})
        finally:
            stream.close()
        return str(answer["h"])

    def _templates_path(self) -> str:
        return f"{self.waba_id}/message_templates"

    async def list_templates(self) -> AsyncIterator[dict[str, Any]]:
        url: str | None = self._url(self._templates_path())
        params: dict[str, str] | None = {
            "limit": "100",
            "fields": "id,name,language,status,category,parameter_format,components,quality_score",
        }
        while url:
            answer = await self.call("GET", "", url=url, params=params)
            for item in answer.get("data", []):
                yield item
            url, params = (answer.get("paging") or {}).get("next"), None

    async def delete_template(self, name: str, template_id: str | None = None) -> None:
        params = {"name": name, **({"hsm_id": template_id} if template_id else {})}
        await self.call("DELETE", self._templates_path(), params=params)

    async def edit_template(self, template_id: str, changes: Mapping[str, Any]) -> None:
        await self.call("POST", template_id, json=dict(changes))

    async def refresh_account(self) -> dict[str, Any]:
        answer = await self.call("GET", str(self.phone_number_id), params={"fields": PHONE_FIELDS})
        limit = answer.get("whatsapp_business_manager_messaging_limit") or answer.get("messaging_limit_tier")
        state = {"quality_rating": answer.get("quality_rating"), "messaging_limit": limit}
        return {key: value for key, value in state.items() if value}


@hookimpl
def register_providers() -> Iterable[type[Provider]]:
    return [MetaCloudProvider]
