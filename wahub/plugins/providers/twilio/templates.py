"""Templates of a Twilio sender: ``TwilioTemplates``, the part of
``TwilioProvider`` that keeps the ``templates`` table in step with the
account's Content API resources and submits new ones to WhatsApp.

``wahub templates sync|list`` reads ``GET /v1/ContentAndApprovals``;
``create`` posts the content (``POST /v1/Content``) and then its WhatsApp
approval request (``POST /v1/Content/{sid}/ApprovalRequests/whatsapp``);
``delete`` removes the content (``DELETE /v1/Content/{sid}``). The
translations are in ``wahub.plugins.providers.twilio.content``.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wahub.core.errors import ProviderError
from wahub.core.provider import Provider
from wahub.core.storage.policy import Template
from wahub.plugins.providers.twilio.content import content_definition, listed_template

_LOGGER = logging.getLogger(__name__)
_CATEGORIES = ("UTILITY", "MARKETING", "AUTHENTICATION")


def _label(template: Template) -> str:
    return f"{template.name} ({template.language})"


class TwilioTemplates(Provider):
    """The Content API calls behind ``wahub templates``."""

    @abc.abstractmethod
    async def call(
        self,
        method: str,
        url: str,
        *,
        form: Iterable[tuple[str, str]] | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One request to Twilio; its JSON answer, or ``ProviderError``."""

    @abc.abstractmethod
    def content_url(self, path: str) -> str:
        """The Content API's URL of ``path`` (``v1/Content``)."""

    async def list_templates(self) -> AsyncIterator[dict[str, Any]]:
        """Every content resource of the account with its WhatsApp approval, page after page."""
        url: str | None = self.content_url("v1/ContentAndApprovals")
        params: dict[str, str] | None = {"PageSize": "100"}
        while url:
            answer = await self.call("GET", url, params=params)
            for item in answer.get("contents") or []:
                if isinstance(item, dict) and item.get("sid"):
                    yield item
            meta = answer.get("meta") if isinstance(answer.get("meta"), dict) else {}
            url, params = _on_content_base(self, meta.get("next_page_url")), None

    async def sync_templates(self) -> dict[str, int]:
        """Make the ``templates`` table the account's content; counts added, updated, removed."""
        started = time.time()
        listed: dict[tuple[str, str], tuple[Template, dict[str, Any]]] = {}
        async for item in self.list_templates():
            template, details = listed_template(item)
            listed[(template.name, template.language)] = (template, details)
        counts = await self.hub.storage.policy.replace_templates(self.name, list(listed.values()), listed_since=started)
        self.account["templates_synced_at"] = round(time.time(), 3)
        return counts

    async def create_template(self, definition: Mapping[str, Any], *, files_from: Path | None = None) -> dict[str, Any]:
        """Create the content of ``definition`` (Meta's create shape) and ask
        WhatsApp to approve it; stored with the approval's status."""
        category = str(definition.get("category") or "UTILITY").upper()
        if category not in _CATEGORIES:
            raise ProviderError(f"Twilio template: category {category!r} is not one of {', '.join(_CATEGORIES)}")
        body = content_definition(definition)
        created = await self.call("POST", self.content_url("v1/Content"), json_body=body)
        sid = str(created["sid"])
        approval = await self.call(
            "POST",
            self.content_url(f"v1/Content/{sid}/ApprovalRequests/whatsapp"),
            json_body={"name": body["friendly_name"], "category": category},
        )
        status = str(approval.get("status") or "received").upper()
        template = Template(body["friendly_name"], body["language"], str(approval.get("category") or category), status)
        components = [c for c in definition.get("components") or [] if isinstance(c, dict)]
        await self.hub.storage.policy.upsert_template(self.name, template, components=components, external_id=sid)
        _LOGGER.info("template %s of %s submitted as %s: %s", _label(template), self.name, sid, status)
        return {"id": sid, "status": status, "category": template.category}

    async def delete_template(self, name: str, template_id: str | None = None) -> None:
        """Delete the content of template ``name`` (every language, or only the SID ``template_id``)."""
        stored = [row for row in await self.hub.storage.policy.templates(self.name) if row["name"] == name]
        chosen = [row for row in stored if template_id in (None, row["external_id"])]
        sids = [str(row["external_id"]) for row in chosen if row["external_id"]]
        if template_id and template_id not in sids:
            sids.append(template_id)
        if not sids:
            raise ProviderError(f"no template {name!r} of {self.name} is stored: run `wahub templates sync` first")
        for sid in sids:
            await self.call("DELETE", self.content_url(f"v1/Content/{sid}"))
        for row in chosen:
            await self.hub.storage.policy.delete_templates(self.name, name, row["language"])

    async def content_sid(self, name: str, language: str) -> str:
        """The ``HX`` SID of the stored template ``name`` in ``language`` (any
        language when none is given); ``ProviderError`` when it has none."""
        rows = await self.hub.storage.policy.templates(self.name)
        for row in rows:
            if row["name"] == name and language in ("", row["language"]) and row["external_id"]:
                return str(row["external_id"])
        raise ProviderError(
            f"template {name!r} ({language or 'any language'}) of {self.name} has no Twilio content SID: "
            "run `wahub templates sync`",
            code="63027",
        )


def _on_content_base(templates: TwilioTemplates, next_page: Any) -> str | None:
    """The next page's URL on the configured Content API host: the answer names
    the page, but the credentials only ever go to ``content_base``."""
    if not isinstance(next_page, str) or not next_page:
        return None
    parts = urlsplit(next_page)
    return templates.content_url(parts.path) + (f"?{parts.query}" if parts.query else "")
