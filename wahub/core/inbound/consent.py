"""Inbound consent steps: an opt-out or opt-in keyword, or a provider's
marketing-preference event, recorded in the consent ledger."""

from __future__ import annotations

import logging
import time

from wahub.core.conversations.language import fallback_chain
from wahub.core.errors import InvalidTime
from wahub.core.hub import Hub
from wahub.core.models import InboundMessage, OutgoingMessage, PreferenceEvent
from wahub.core.policy.consent import DEFAULT_LANGUAGES, Keyword, consent_time, normalize

_LOGGER = logging.getLogger(__name__)


def _event_time(provider: str, timestamp: float) -> float:
    """A provider event's time for the ledger; an implausible one becomes now, so the change is kept."""
    try:
        return consent_time(timestamp)
    except InvalidTime:
        _LOGGER.warning(
            "consent event from %s has an implausible time %r; recorded at the time it arrived", provider, timestamp
        )
        return time.time()


def is_keyword(hub: Hub, message: InboundMessage) -> bool:
    """Whether the message is an opt-out or opt-in keyword (answered at once, never routed)."""
    config = hub.config["policy"]["consent"]
    return bool(config["keywords"]) and message.type == "text" and normalize(message.text()) in hub.consent_keywords


def confirmation(hub: Hub, keyword: Keyword, language: str | None) -> str:
    """The keyword's confirmation in the contact's language (or its base
    language) when the consent languages have it, else in the keyword's own:
    "STOP" from a Portuguese speaker is confirmed in Portuguese."""
    languages = {**DEFAULT_LANGUAGES, **hub.config["policy"]["consent"]["languages"]}
    reply = "opted_out" if keyword.action == "opt_out" else "opted_in"
    for code in fallback_chain(language, language) if language else ():
        if code in languages:
            return str(languages[code][reply])
    return keyword.confirmation


async def handle_keyword(hub: Hub, message: InboundMessage, contact_id: int) -> list[OutgoingMessage] | None:
    """Record an opt-out/opt-in keyword and return its confirmation, or None
    when the message is not a keyword (it then goes on to routing)."""
    if not is_keyword(hub, message):
        return None
    keyword = hub.consent_keywords[normalize(message.text())]
    new = await hub.storage.policy.record_consent(
        message.provider,
        message.sender,
        action=keyword.action,
        scope="all",
        source="keyword",
        evidence={"message_id": message.external_id, "text": message.text(), "language": keyword.language},
        occurred_at=_event_time(message.provider, message.timestamp),
        event_key=f"keyword:{message.provider}:{message.external_id}",
    )
    if new:
        hub.metrics.consent_changes.labels(message.provider, keyword.action, "keyword").inc()
    language, _source = await hub.storage.contacts.language_of(contact_id)
    return [OutgoingMessage.text(message.sender, confirmation(hub, keyword, language))]


async def record_preference(hub: Hub, event: PreferenceEvent) -> None:
    """A provider's marketing-preference change (stop, resume, signup) into the ledger."""
    action = "opt_out" if event.value == "stop" else "opt_in"
    new = await hub.storage.policy.record_consent(
        event.provider,
        event.user,
        action=action,
        scope="marketing",
        source="provider_preference",
        evidence={"category": event.category, "value": event.value, "detail": event.detail},
        occurred_at=_event_time(event.provider, event.timestamp),
        event_key=f"preference:{event.provider}:{event.external_id}",
    )
    if new:
        hub.metrics.consent_changes.labels(event.provider, action, "provider_preference").inc()
