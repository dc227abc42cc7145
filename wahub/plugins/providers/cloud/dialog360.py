"""360dialog: the Cloud API hosted at ``https://waba-v2.360dialog.io``.

Request bodies are Meta's; requests carry ``D360-API-KEY`` instead of a bearer
token and have no version or phone number id in their paths. 360dialog
forwards Meta's webhooks without a signature wahub could check, so the
webhook is protected by a secret header that wahub registers with 360dialog
(``wahub webhook register``) and refuses every POST without.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any
from urllib.parse import quote

import voluptuous as vol
from yarl import URL

from wahub import hookimpl
from wahub.core.errors import ProviderError
from wahub.core.provider import Provider, secret_matches
from wahub.plugins.providers.cloud.api import CLOUD_SCHEMA_BASE, CloudApiProvider

#: The header carrying the webhook secret, unless the entry names another.
DEFAULT_SECRET_HEADER = "X-Wahub-Webhook-Secret"
_PAGE = 100


class Dialog360Provider(CloudApiProvider):
    PLATFORM = "dialog360"
    CONFIG_SCHEMA = CLOUD_SCHEMA_BASE.extend(
        {
            vol.Required("api_key"): vol.All(str, vol.Length(min=1)),
            vol.Required("webhook_secret"): vol.All(str, vol.Length(min=16, msg="use at least 16 characters")),
            vol.Optional("webhook_secret_header", default=DEFAULT_SECRET_HEADER): vol.Match(
                r"^[A-Za-z0-9-]{1,64}$", msg="a header name: letters, digits and '-'"
            ),
            vol.Optional("api_base", default="https://waba-v2.360dialog.io"): vol.Url(),
        }
    )

    def _url(self, path: str) -> str:
        return f"{self.config['api_base'].rstrip('/')}/{path}"

    def _headers(self) -> dict[str, str]:
        return {"D360-API-KEY": self.config["api_key"]}

    def _download_url(self, url: str) -> str:
        # Meta's lookaside URL, fetched through 360dialog: same path and query, 360dialog's host.
        given, base = URL(url), URL(self.config["api_base"])
        return str(given.with_scheme(base.scheme).with_host(base.host or "").with_port(base.explicit_port))

    def webhook_credential(self) -> tuple[str, ...]:
        return (self.PLATFORM, self.config["webhook_secret_header"], self.config["webhook_secret"])

    def verify_signature(self, headers: Mapping[str, str], body: bytes) -> bool:
        return secret_matches(headers.get(self.config["webhook_secret_header"], ""), self.config["webhook_secret"])

    def _templates_path(self) -> str:
        return "v1/configs/templates"

    async def list_templates(self) -> AsyncIterator[dict[str, Any]]:
        offset = 0
        while True:
            params = {"limit": str(_PAGE), "offset": str(offset)}
            answer = await self.call("GET", self._templates_path(), params=params)
            page = answer.get("waba_templates") or []
            for item in page:
                yield item
            offset += len(page)
            total = answer.get("total")
            if not page or len(page) < _PAGE or (isinstance(total, int) and offset >= total):
                return

    async def delete_template(self, name: str, template_id: str | None = None) -> None:
        if template_id:
            raise ProviderError(
                "360dialog's API deletes a template in every language; delete it without an id", code="unsupported"
            )
        await self.call("DELETE", f"{self._templates_path()}/{quote(name, safe='')}")

    async def edit_template(self, template_id: str, changes: Mapping[str, Any]) -> None:
        raise ProviderError(
            "360dialog's API has no template edit: delete the template and create it again", code="unsupported"
        )

    async def register_webhook(self, url: str) -> dict[str, Any]:
        """Point 360dialog's webhook at ``url``, sending the secret header with every call."""
        body = {"url": url, "headers": {self.config["webhook_secret_header"]: self.config["webhook_secret"]}}
        answer: dict[str, Any] = await self.call("POST", "v1/configs/webhook", json=body)
        return answer


@hookimpl
def register_providers() -> Iterable[type[Provider]]:
    return [Dialog360Provider]
