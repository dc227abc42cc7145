"""The send policy: what may be sent, decided before anything is queued.

Every refusal is a ``SendRefused`` with a stable reason code:

- ``invalid_message``: the message breaks the provider's limits (after the
  documented fallbacks, see ``wahub.core.canonical``);
- ``window_closed``: free-form (non-template) message more than 24 hours
  after the contact last wrote to this business number, unless
  ``policy.service_window.fallback_template`` names a template to send instead;
- ``opted_out``: a business-initiated message to a contact who opted out;
- ``opt_in_required``: a marketing template to a contact without an opt-in;
- ``template_not_found`` / ``template_not_approved``: a template the stored
  template list does not have (also after refreshing it from the provider,
  see ``wahub.core.policy.templates``), or has in another status than APPROVED;
  a template sent without a language is refused ``template_not_approved``
  when no language it is approved in suits the contact
  (``wahub.core.policy.template_language``).

A stored template's components also check the message's parameters
(``wahub.core.policy.template_params``): a mismatch is ``invalid_message``.
Templates of a provider with nothing stored are left to the provider.

Replies to a contact's own message (``origin="reply"``) skip the consent and
quiet-hours checks: the contact just wrote. Business-initiated messages that
fall in the quiet hours of the contact's time zone are deferred, not refused;
the dispatcher holds them again when a retry or a deferral would send them
inside quiet hours (``Policy.quiet_end``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wahub.core.canonical.fit import Capabilities, adapt
from wahub.core.clock import Clock
from wahub.core.errors import InvalidMessage, SendRefused
from wahub.core.models import OutgoingMessage
from wahub.core.policy.template_language import choose_language
from wahub.core.policy.template_params import check_parameters
from wahub.core.policy.templates import Refresh, TemplateRefresher, TemplateSource
from wahub.core.storage.policy import ConsentState, ContactContext, StoredTemplate

if TYPE_CHECKING:
    from wahub.core.storage.store import Storage

Origin = Literal["reply", "business"]


class Sender(TemplateSource, Protocol):
    """What the send policy needs of a provider (``wahub.core.provider.Provider`` has it)."""

    @property
    def CAPABILITIES(self) -> Capabilities: ...


#: How long after a contact's last message free-form messages may be sent.
SERVICE_WINDOW_SECONDS = 24 * 3600.0
#: Types that need no open service window.
WINDOWLESS_TYPES = frozenset({"template", "mark_read"})


def quiet_until(now: float, quiet: Mapping[str, Any], timezone: str | None) -> float | None:
    """When the quiet hours around ``now`` end in ``timezone`` (epoch seconds), or
    None when ``now`` is outside them. ``start`` after ``end`` spans midnight."""
    try:
        zone = ZoneInfo(timezone or quiet["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo(quiet["timezone"])
    local = dt.datetime.fromtimestamp(now, zone)
    start, end, clock = quiet["start"], quiet["end"], local.time()
    inside = start <= clock < end if start <= end else (clock >= start or clock < end)
    if not inside:
        return None
    day = local.date() if clock < end else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, end, zone).timestamp()


def window_open(last_inbound_at: float | None, now: float) -> bool:
    return last_inbound_at is not None and now - last_inbound_at <= SERVICE_WINDOW_SECONDS


@dataclass(frozen=True)
class Decision:
    """A message accepted for sending: perhaps adapted or replaced, perhaps deferred."""

    message: OutgoingMessage
    contact: ContactContext
    not_before: float | None = None


class Policy:
    def __init__(
        self, config: Mapping[str, Any], storage: Storage, clock: Clock | None = None, *, language: str = "en"
    ) -> None:
        self.config = config
        self.storage = storage
        self.clock = clock or Clock()
        self.templates = TemplateRefresher()
        #: ``wahub.language``: the last resort when choosing a template's language.
        self.language = language

    def quiet_end(self, at: float, timezone: str | None, *, origin: str, kind: str) -> float | None:
        """When the quiet hours around ``at`` end for a message of ``origin`` and
        type ``kind`` to a contact in ``timezone`` (None: the configured one), or
        None when it need not wait: outside quiet hours, a reply or a read receipt."""
        quiet = self.config.get("quiet_hours")
        if not quiet or origin != "business" or kind == "mark_read":
            return None
        return quiet_until(at, quiet, timezone)

    async def check(
        self, provider: Sender, message: OutgoingMessage, *, origin: Origin, contact: ContactContext | None = None
    ) -> Decision:
        """The message as it will be queued, or ``SendRefused`` saying why not.
        ``contact`` is the recipient as ``PolicyStore.contact`` reads it, when the
        caller has just read it (a bot turn); else it is read here."""
        now = self.clock.time()
        try:
            message = adapt(message, provider.CAPABILITIES)
        except InvalidMessage as exc:
            raise SendRefused("invalid_message", str(exc)) from None
        if contact is None:
            contact = await self.storage.policy.contact(provider.name, message.to)
        if message.type == "mark_read":
            return Decision(message, contact)
        consent: ConsentState | None = None
        if origin == "business":
            consent = await self.storage.policy.consent(provider.name, message.to)
            if consent.opted_out:
                raise SendRefused("opted_out", f"{message.to} opted out of messages from this business")
        if message.type not in WINDOWLESS_TYPES and not window_open(contact.last_inbound_at, now):
            message = self._outside_window(message, origin, contact, now)
        if message.type == "template":
            message = await self._check_template(provider, message, contact, consent)
        not_before = self.quiet_end(now, contact.timezone, origin=origin, kind=message.type)
        return Decision(message, contact, not_before)

    def _outside_window(
        self, message: OutgoingMessage, origin: Origin, contact: ContactContext, now: float
    ) -> OutgoingMessage:
        fallback = self.config["service_window"].get("fallback_template")
        if fallback is None or origin != "business":
            when = (
                "has never written to this number"
                if contact.last_inbound_at is None
                else f"last wrote {(now - contact.last_inbound_at) / 3600:.1f} hours ago"
            )
            raise SendRefused(
                "window_closed",
                f"{message.to} {when}; outside the 24-hour service window only approved templates may be sent",
            )
        template = {"name": fallback["name"], "language": {"code": fallback["language"]}}
        return OutgoingMessage(
            to=message.to, type="template", content={"template": template}, keep_address=message.keep_address
        )

    async def _check_template(
        self, provider: Sender, message: OutgoingMessage, contact: ContactContext, consent: ConsentState | None
    ) -> OutgoingMessage:
        """The template message as it will be queued (its language chosen when
        it had none), or ``SendRefused``."""
        if "language" not in message.content["template"]:
            message = await self._with_language(provider, message, contact)
        body = message.content["template"]
        name, language = body["name"], body["language"]["code"]
        template = await self._stored_template(provider, name, language)
        if template is None:
            return message  # nothing synced for this provider: the provider itself judges
        if template.status != "APPROVED":
            raise SendRefused(
                "template_not_approved", f"template {name!r} ({language}) is {template.status}, not APPROVED"
            )
        if template.components:
            try:
                check_parameters(body, template.components)
            except InvalidMessage as exc:
                raise SendRefused("invalid_message", f"{exc} (template {name!r}, {language})") from None
        if template.category == "MARKETING" and self.config["consent"]["marketing_requires_opt_in"]:
            consent = consent or await self.storage.policy.consent(provider.name, message.to)
            if not consent.marketing_allowed:
                raise SendRefused(
                    "opt_in_required", f"{message.to} has not opted in to marketing messages (template {name!r})"
                )
        return message

    async def _stored_template(self, provider: Sender, name: str, language: str) -> StoredTemplate | None:
        """The stored template (refreshed from the provider when missing), None
        when the provider has none stored at all; ``template_not_found`` when
        it has others but not this one."""
        template, any_stored = await self.storage.policy.template(provider.name, name, language)
        refresh = None
        if template is None:  # perhaps created or approved since the last sync
            refresh = await self.templates.refresh(provider)
            if refresh is not None:
                template, any_stored = await self.storage.policy.template(provider.name, name, language)
        if template is None and any_stored:
            raise SendRefused(
                "template_not_found",
                f"provider {provider.name!r} has no template {name!r} in {language!r}"
                + (refresh.describe() if refresh else ""),
            )
        return template

    async def _with_language(
        self, provider: Sender, message: OutgoingMessage, contact: ContactContext
    ) -> OutgoingMessage:
        """The template message in the approved language that suits the contact best."""
        body = message.content["template"]
        name = body["name"]
        statuses = await self.storage.policy.template_languages(provider.name, name)
        refresh: Refresh | None = None
        if not statuses:  # perhaps created since the last sync
            refresh = await self.templates.refresh(provider)
            if refresh is not None:
                statuses = await self.storage.policy.template_languages(provider.name, name)
        approved = [code for code, status in statuses.items() if status == "APPROVED"]
        chosen, tried = choose_language(approved, contact.language, self.language)
        if chosen is None:
            found = f"it is approved in {', '.join(approved)}" if approved else "it is approved in no language"
            if not statuses:
                found = f"provider {provider.name!r} has no template {name!r} stored in any language"
            raise SendRefused(
                "template_not_approved",
                f"template {name!r} has no approved language for {message.to}: tried {', '.join(tried)}; {found}"
                + (refresh.describe() if refresh else "")
                + "; or name one in template.language.code",
            )
        template = {**body, "language": {"code": chosen}}
        return replace(message, content={**message.content, "template": template})
