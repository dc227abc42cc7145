"""Templates, account news and the business profile of a Cloud API number:
``CloudAccount``, the part of ``CloudApiProvider`` (``cloud_api``) that keeps
the ``templates`` table and the profile in step with the account.

A host says which path lists and creates templates (``_templates_path``), how
its templates are listed, edited and deleted, and where the profile lives
(``_profile_path``); every request goes through ``CloudApiProvider.call``.
"""

from __future__ import annotations

import abc
import copy
import logging
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import voluptuous as vol

from wahub.core.errors import ProviderError
from wahub.core.models import AccountEvent
from wahub.core.provider import AccountState, Provider, Quality
from wahub.core.storage.policy import Template

_LOGGER = logging.getLogger(__name__)

VERTICALS = (
    *("OTHER", "AUTO", "BEAUTY", "APPAREL", "EDU", "ENTERTAIN", "EVENT_PLAN", "FINANCE", "GROCERY", "GOVT"),
    *("HOTEL", "HEALTH", "NONPROFIT", "PROF_SERVICES", "RETAIL", "TRAVEL", "RESTAURANT", "ALCOHOL"),
    *("ONLINE_GAMBLING", "PHYSICAL_GAMBLING", "OTC_DRUGS"),
)
PROFILE_FIELDS = ("about", "address", "description", "email", "websites", "vertical", "profile_picture_url")
_TEMPLATE_FIELDS = {
    "message_template_status_update",
    "template_category_update",
    "message_template_quality_update",
}

#: Meta's quality ratings of a number, in shared terms.
QUALITY_RATINGS: dict[str, Quality] = {
    "GREEN": Quality.HIGH,
    "YELLOW": Quality.MEDIUM,
    "RED": Quality.LOW,
    "UNKNOWN": Quality.UNKNOWN,
}
#: Meta's messaging limit tiers, as users per 24 h.
MESSAGING_LIMITS: dict[str, float] = {
    "TIER_50": 50,
    "TIER_250": 250,
    "TIER_1K": 1000,
    "TIER_2K": 2000,
    "TIER_10K": 10_000,
    "TIER_100K": 100_000,
    "TIER_UNLIMITED": float("inf"),
}

PROFILE_SCHEMA = vol.Schema(
    {
        vol.Optional("about"): vol.All(str, vol.Length(min=1, max=139)),
        vol.Optional("address"): vol.All(str, vol.Length(max=256)),
        vol.Optional("description"): vol.All(str, vol.Length(max=256)),
        vol.Optional("email"): vol.All(vol.Email(), vol.Length(max=128)),
        vol.Optional("websites"): vol.All(
            [vol.All(vol.Url(), vol.Length(max=256))], vol.Length(max=2, msg="at most 2 websites")
        ),
        vol.Optional("vertical"): vol.In(VERTICALS, msg=f"use one of {', '.join(VERTICALS)}"),
        # A JPEG or PNG file (relative to the working directory), uploaded as the profile picture.
        vol.Optional("picture"): vol.All(str, vol.Length(min=1)),
    }
)


class CloudAccount(Provider):
    """Templates, account news and the business profile, over ``call``."""

    @abc.abstractmethod
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

    # -- templates --------------------------------------------------------

    @abc.abstractmethod
    def list_templates(self) -> AsyncIterator[dict[str, Any]]:
        """Every template of the account, page after page."""

    async def create_template(self, definition: Mapping[str, Any], *, files_from: Path | None = None) -> dict[str, Any]:
        """Submit a template for review (Meta's create body); stored as the answer's status.

        A media header may name a local file as ``example.header_file`` (relative
        to ``files_from``): it is uploaded and replaced by its ``header_handle``.
        """
        definition = copy.deepcopy(dict(definition))
        for component in definition.get("components") or []:
            example = component.get("example") if isinstance(component, dict) else None
            if isinstance(example, dict) and "header_file" in example:
                path = (files_from or Path()) / str(example.pop("header_file"))
                example["header_handle"] = [await self.upload_handle(path)]
        answer: dict[str, Any] = await self.call("POST", self._templates_path(), json=definition)
        category = str(answer.get("category") or definition.get("category", "UTILITY"))
        template = Template(str(definition["name"]), str(definition["language"]), category, str(answer["status"]))
        await self.hub.storage.policy.upsert_template(
            self.name, template, components=definition.get("components"), external_id=str(answer.get("id") or "")
        )
        return answer

    async def upload_handle(self, path: Path) -> str:
        """Upload a file for a template header or profile picture; returns its handle."""
        raise ProviderError(
            f"{self.PLATFORM} cannot upload {path.name} for a handle: give the handle itself", code="unsupported"
        )

    @abc.abstractmethod
    def _templates_path(self) -> str:
        """The API path that lists and creates templates."""

    @abc.abstractmethod
    async def delete_template(self, name: str, template_id: str | None = None) -> None:
        """Delete a template (every language, or only the version ``template_id``)."""

    @abc.abstractmethod
    async def edit_template(self, template_id: str, changes: Mapping[str, Any]) -> None:
        """Change a template's ``components`` or ``category`` (it goes back to review)."""

    async def sync_templates(self) -> dict[str, int]:
        """Make the ``templates`` table this account's templates; counts added, updated, removed."""
        listed: dict[tuple[str, str], tuple[Template, dict[str, Any]]] = {}
        started = time.time()
        async for item in self.list_templates():
            template = Template(
                str(item["name"]), str(item["language"]), str(item.get("category", "")), str(item["status"])
            )
            quality = item.get("quality_score")
            details = {
                "components": item.get("components"),
                "external_id": str(item["id"]) if item.get("id") is not None else None,
                "quality": quality.get("score") if isinstance(quality, dict) else None,
            }
            listed[(template.name, template.language)] = (template, details)
        counts = await self.hub.storage.policy.replace_templates(self.name, list(listed.values()), listed_since=started)
        self.account["templates_synced_at"] = round(time.time(), 3)  # shown on /api/v1/status
        return counts

    # -- account news -----------------------------------------------------

    def account_state(self) -> AccountState:
        """The number's quality rating and messaging limit tier in shared terms;
        Meta's own words stay beside them (``quality_raw``, ``messaging_limit_raw``,
        the latest ``quality_event`` and ``account_event``)."""
        account = self.account
        rating, tier = account.get("quality_rating"), account.get("messaging_limit")
        raw = {key: account[key] for key in ("quality_event", "account_event") if isinstance(account.get(key), str)}
        if isinstance(rating, str):
            raw["quality_raw"] = rating
        if isinstance(tier, str):
            raw["messaging_limit_raw"] = tier
        return AccountState(
            quality=QUALITY_RATINGS.get(rating, Quality.UNKNOWN) if isinstance(rating, str) else None,
            messaging_limit=MESSAGING_LIMITS.get(tier) if isinstance(tier, str) else None,
            raw=raw,
        )

    async def account_event(self, event: AccountEvent) -> None:
        data = event.data
        if event.field in _TEMPLATE_FIELDS:
            await self._template_news(event)
        elif event.field == "phone_number_quality_update":
            self.account.update(quality_event=event.event)
            if data.get("current_limit"):
                self.account["messaging_limit"] = data["current_limit"]
            _LOGGER.warning("number of %s: quality event %s", self.name, event.event)
        elif event.field == "account_update":
            self.account["account_event"] = event.event
            _LOGGER.warning("account of %s: %s", self.name, event.event)

    async def _template_news(self, event: AccountEvent) -> None:
        data, policy = event.data, self.hub.storage.policy
        name, language = data.get("message_template_name"), data.get("message_template_language")
        if not name or not language:
            return
        if event.field == "template_category_update":
            await policy.update_template(self.name, name, language, category=event.event or None)
        elif event.field == "message_template_quality_update":
            await policy.update_template(self.name, name, language, quality=event.event or None)
        else:
            category = data.get("message_template_category") or None
            found = await policy.update_template(self.name, name, language, status=event.event, category=category)
            if not found:
                external = str(data.get("message_template_id") or "") or None
                template = Template(name, language, category or "UNKNOWN", event.event)
                await policy.upsert_template(self.name, template, external_id=external)
        _LOGGER.info("template %s (%s) of %s: %s %s", name, language, self.name, event.field, event.event)

    # -- business profile -------------------------------------------------

    async def business_profile(self) -> dict[str, Any]:
        """The business profile as WhatsApp users see it."""
        answer = await self.call("GET", self._profile_path(), params={"fields": ",".join(PROFILE_FIELDS)})
        data = answer.get("data") or [{}]
        first: dict[str, Any] = data[0] if isinstance(data, list) and data else {}
        # Meta's reference shows the fields directly; its OpenAPI document wraps them.
        profile = first.get("business_profile", first)
        return {key: profile[key] for key in PROFILE_FIELDS if key in profile}

    async def apply_profile(self) -> dict[str, Any]:
        """Send the ``profile:`` block of the configuration; returns the fields that changed."""
        wanted: dict[str, Any] = dict(self.config.get("profile") or {})
        picture = wanted.pop("picture", None)
        if not wanted and not picture:
            return {}
        current = await self.business_profile()
        changed = {key: value for key, value in wanted.items() if current.get(key) != value}
        body = dict(changed)
        if picture:  # WhatsApp gives back another URL: there is no telling whether it is the same picture
            body["profile_picture_handle"] = await self.upload_handle(Path(picture))
            changed["picture"] = picture
        if body:
            await self.call("POST", self._profile_path(), json={"messaging_product": "whatsapp", **body})
        return changed

    def _profile_path(self) -> str:
        return "whatsapp_business_profile"
