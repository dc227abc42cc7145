"""Twilio's webhooks for a WhatsApp sender, parsed into wahub's normalized events.

Pure functions, no I/O. Twilio posts a form (``application/x-www-form-urlencoded``)
to the sender's webhook for every message a user sends, and to the message's
``StatusCallback`` for every status it reaches; wahub points both at
``/webhooks/<name>``. A form with ``MessageStatus`` (other than ``received``) is
a status callback, the others are messages. A JSON object with the same fields
is read the same way.

Addresses are kept as WhatsApp's digits (``whatsapp:+15551234567`` becomes
``15551234567``, Twilio's ``WaId``), the wa_id the Cloud API providers store,
so a number moved between providers keeps its history and consent. An
``ExternalUserId`` is the user's business-scoped id (BSUID) and becomes the
sender, as on the Cloud API.

A message with several files (``NumMedia`` > 1) gives one event per file
(``<MessageSid>``, ``<MessageSid>:1``...), the text as the first file's caption,
or as a text event of its own (``<MessageSid>:text``) when that file takes no
caption. A form that is neither a message nor a status wahub knows becomes an
``UnsupportedEvent`` keeping every field.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from wahub.core.errors import WebhookError
from wahub.core.models import Event, InboundMessage, StatusEvent, UnsupportedEvent
from wahub.plugins.providers.twilio.signature import form_params

#: Twilio's message statuses, in the shared words; others are not statuses of a sent message.
STATUSES = {
    "accepted": "sent",
    "scheduled": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "partially_delivered": "delivered",
    "read": "read",
    "failed": "failed",
    "undelivered": "failed",
    "canceled": "failed",
}
_INBOUND_STATUSES = ("received", "receiving")
_CAPTIONED = ("image", "video", "document")


def read_fields(body: bytes) -> dict[str, str]:
    """The webhook's fields (the first value of a repeated name), from a form or a JSON object."""
    stripped = body.lstrip()
    if stripped.startswith((b"{", b"[")):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise WebhookError(f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise WebhookError("the JSON body is not an object")
        return {str(key): value if isinstance(value, str) else json.dumps(value) for key, value in data.items()}
    params = form_params(body)
    if params is None:
        raise WebhookError("the body is not a UTF-8 form")
    fields: dict[str, str] = {}
    for name, value in params:
        fields.setdefault(name, value)
    if not fields:
        raise WebhookError("the body holds no form fields")
    return fields


def parse_twilio_webhook(body: bytes, *, provider: str) -> list[Event]:
    """The events of one Twilio webhook received by ``provider``."""
    fields = read_fields(body)
    sid = fields.get("MessageSid") or fields.get("SmsMessageSid") or fields.get("SmsSid")
    if not sid:
        return [_unsupported(provider, fields)]
    status = (fields.get("MessageStatus") or fields.get("SmsStatus") or "").lower()
    if status and status not in _INBOUND_STATUSES:
        if status not in STATUSES:
            return [_unsupported(provider, fields)]
        return [_status(provider, sid, status, fields)]
    return _messages(provider, sid, fields)


def digits(address: str | None) -> str | None:
    """An address as WhatsApp's digits: ``whatsapp:+15551234567`` -> ``15551234567``;
    None for anything that is not a phone number (so no other id is ever kept as one)."""
    if not address:
        return None
    number = address.partition(":")[2] if ":" in address else address
    number = number.strip().lstrip("+")
    return number if number.isdigit() and 5 <= len(number) <= 20 else None


def _status(provider: str, sid: str, status: str, fields: Mapping[str, str]) -> StatusEvent:
    shared = STATUSES[status]
    code = fields.get("ErrorCode") or None
    return StatusEvent(
        provider=provider,
        # Twilio's own status: "queued" and "sent" both mean "sent", and each is stored once.
        external_id=f"{sid}:{status}",
        message_id=sid,
        status=shared,
        timestamp=_now(),
        recipient=digits(fields.get("To")),
        error_code=code,
        error_title=fields.get("ErrorMessage") or None,
        raw=dict(fields),
    )


def _now() -> float:
    # Twilio's webhooks carry no time of the event: the time it arrived stands for it.
    return round(time.time(), 3)


def _identities(fields: Mapping[str, str]) -> dict[str, str]:
    identities: dict[str, str] = {}
    wa_id = fields.get("WaId") or digits(fields.get("From"))
    if wa_id:
        identities["wa_id"] = wa_id
    if fields.get("ExternalUserId"):
        identities["bsuid"] = fields["ExternalUserId"]
    return identities


def _messages(provider: str, sid: str, fields: Mapping[str, str]) -> list[Event]:
    identities = _identities(fields)
    sender = identities.get("bsuid") or identities.get("wa_id")
    if not sender:
        return [_unsupported(provider, fields)]
    extras = _extras(fields)
    contents = _contents(sid, fields)
    if not contents:
        return [_unsupported(provider, fields)]
    timestamp = _now()
    return [
        InboundMessage(
            provider=provider,
            external_id=external_id,
            sender=sender,
            type=kind,
            content={kind: content, **extras},
            timestamp=timestamp,
            sender_name=fields.get("ProfileName") or None,
            context_id=fields.get("OriginalRepliedMessageSid") or None,
            raw=dict(fields),
            identities=identities,
        )
        for external_id, kind, content in contents
    ]


def _contents(sid: str, fields: Mapping[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
    """Each event's external id, type and object."""
    text = fields.get("Body", "")
    kind = fields.get("MessageType", "").lower()
    media = _media(fields)
    if media:
        found: list[tuple[str, str, dict[str, Any]]] = []
        for index, (media_kind, item) in enumerate(media):
            if index == 0 and text and media_kind in _CAPTIONED:
                item["caption"] = text
                text = ""
            found.append((sid if index == 0 else f"{sid}:{index}", media_kind, item))
        if text:
            found.append((f"{sid}:text", "text", {"body": text}))
        return found
    if fields.get("Latitude") and fields.get("Longitude"):
        return [(sid, "location", _location(fields))]
    reply = _reply(fields, kind)
    if reply is not None:
        return [(sid, *reply)]
    if text and kind not in ("reaction", "unsupported"):
        return [(sid, "text", {"body": text})]
    return []


def _media(fields: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    count = int(fields["NumMedia"]) if fields.get("NumMedia", "").isdigit() else 0
    found = []
    for index in range(count):
        url = fields.get(f"MediaUrl{index}")
        if not url:
            continue
        mime_type = fields.get(f"MediaContentType{index}") or "application/octet-stream"
        # The URL is the file's id: download_media fetches it with the account's credentials.
        found.append((_media_kind(mime_type), {"id": url, "mime_type": mime_type}))
    return found


def _media_kind(mime_type: str) -> str:
    main = mime_type.split(";")[0].strip().lower()
    if main == "image/webp":
        return "sticker"
    family = main.partition("/")[0]
    return family if family in ("image", "video", "audio") else "document"


def _location(fields: Mapping[str, str]) -> dict[str, Any]:
    location: dict[str, Any] = {"latitude": float(fields["Latitude"]), "longitude": float(fields["Longitude"])}
    if fields.get("Label"):
        location["name"] = fields["Label"]
    if fields.get("Address"):
        location["address"] = fields["Address"]
    return location


def _reply(fields: Mapping[str, str], kind: str) -> tuple[str, dict[str, Any]] | None:
    """A tapped list row, interactive reply button or template quick reply."""
    if fields.get("ListId"):
        row = {"id": fields["ListId"], "title": fields.get("ListTitle") or fields.get("Body", "")}
        if fields.get("ListDescription"):
            row["description"] = fields["ListDescription"]
        return "interactive", {"type": "list_reply", "list_reply": row}
    if not fields.get("ButtonPayload") and not fields.get("ButtonText"):
        return None
    payload = fields.get("ButtonPayload") or fields.get("ButtonText", "")
    title = fields.get("ButtonText") or fields.get("Body") or payload
    if kind == "interactive":
        return "interactive", {"type": "button_reply", "button_reply": {"id": payload, "title": title}}
    return "button", {"payload": payload, "text": title}


_REFERRAL_KEYS = {
    "ReferralSourceUrl": "source_url",
    "ReferralSourceId": "source_id",
    "ReferralSourceType": "source_type",
    "ReferralHeadline": "headline",
    "ReferralBody": "body",
    "ReferralMediaId": "media_id",
    "ReferralMediaContentType": "media_type",
    "ReferralMediaUrl": "media_url",
    "ReferralCtwaClid": "ctwa_clid",
}


def _extras(fields: Mapping[str, str]) -> dict[str, Any]:
    """The message-level keys beside the type's object: the ad a user came
    from (``referral``) and whom a reply quotes (``context``), in the Cloud API's names."""
    extras: dict[str, Any] = {}
    referral = {ours: fields[theirs] for theirs, ours in _REFERRAL_KEYS.items() if fields.get(theirs)}
    if referral:
        extras["referral"] = referral
    if fields.get("OriginalRepliedMessageSid"):
        context = {"id": fields["OriginalRepliedMessageSid"]}
        sender = digits(fields.get("OriginalRepliedMessageSender"))
        if sender:
            context["from"] = sender
        extras["context"] = context
    if fields.get("Forwarded") == "true" or fields.get("FrequentlyForwarded") == "true":
        extras["context"] = {
            **extras.get("context", {}),
            "forwarded": True,
            "frequently_forwarded": fields.get("FrequentlyForwarded") == "true",
        }
    return extras


def _unsupported(provider: str, fields: Mapping[str, str]) -> UnsupportedEvent:
    sid = fields.get("MessageSid") or fields.get("SmsMessageSid")
    digest = hashlib.sha256(json.dumps(dict(fields), sort_keys=True).encode()).hexdigest()
    return UnsupportedEvent(
        provider=provider,
        external_id=f"unsupported:{sid}" if sid else f"unsupported:{digest}",
        raw={"fields": dict(fields)},
        timestamp=_now(),
    )
