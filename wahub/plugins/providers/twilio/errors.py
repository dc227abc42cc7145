"""What Twilio's error codes mean to the engine.

Twilio answers a refused request with ``{"code", "message", "more_info",
"status"}`` and reports a message that failed later in the ``ErrorCode`` of
its status callback; both codes are read here. 21610 (the user replied STOP)
teaches the send policy an opt-out; 63018 and 63017 (the sender's or the
account's rate) and 20429 ask the number to slow down.
"""

from __future__ import annotations

from typing import Any

from wahub.core.errors import ErrorKind, ErrorMeaning, Lesson, ProviderError, Throttle, meaning_of_status

_RETRYABLE = {
    20429: "too many concurrent requests to the Twilio API",
    20500: "an internal error at Twilio",
    20503: "the Twilio API is temporarily unavailable",
    30001: "Twilio's queue for the sender overflowed",
    63017: "the account sent more messages per second than WhatsApp allows it",
    63018: "the sender's WhatsApp rate limit was hit",
}
_AUTH = {
    20003: "Twilio refused the credentials: check account_sid and auth_token (or the API key)",
    20005: "the Twilio account is not active",
    63001: "WhatsApp could not authenticate the request for this sender",
}
_POLICY = {
    21610: "the user replied STOP and unsubscribed from this sender",
    63013: "the message breaks a WhatsApp channel policy",
    63016: "more than 24 hours have passed since the user last wrote: send an approved template instead",
    63032: "the user's number is part of a WhatsApp marketing experiment",
    63049: "WhatsApp did not deliver this marketing message to keep the ecosystem healthy",
}
_PERMANENT = {
    20404: "the Twilio resource does not exist",
    21211: "the 'To' number is not a valid phone number",
    21408: "the account may not send to this region",
    21606: "the 'From' number is not a sender of this account",
    21612: "Twilio cannot route a message to this number",
    21614: "the 'To' number is not a valid mobile number",
    21617: "the body is longer than 1600 characters",
    21620: "the media URL is invalid",
    21656: "ContentVariables is not a valid JSON object of variables",
    30002: "the Twilio account is suspended",
    30003: "the destination handset is unreachable",
    30004: "the message was blocked",
    30005: "the destination is unknown or no longer exists",
    30006: "the destination cannot receive this message",
    30007: "the message was filtered as spam",
    30008: "the message could not be delivered (unknown error)",
    63003: "WhatsApp could not find the recipient's address",
    63005: "WhatsApp did not accept the content",
    63007: "no WhatsApp sender matches the 'From' address",
    63015: "the user has not joined the Twilio Sandbox",
    63019: "WhatsApp could not fetch the media",
    63020: "the business has not accepted Twilio's invitation to send for it",
    63021: "WhatsApp refused the content as invalid",
    63024: "the recipient is not a valid WhatsApp user",
    63027: "the template does not exist in this language",
    63028: "the number of template parameters does not match the template",
    63030: "a parameter is not supported by WhatsApp for this message",
    63031: "the message's sender and recipient are the same",
}
_LESSONS = {21610: Lesson.OPTED_OUT}
_THROTTLES: dict[int, Throttle] = {20429: "throughput", 63017: "throughput", 63018: "throughput"}
_TABLES: tuple[tuple[ErrorKind, dict[int, str]], ...] = (
    (ErrorKind.RETRYABLE, _RETRYABLE),
    (ErrorKind.AUTH, _AUTH),
    (ErrorKind.POLICY, _POLICY),
    (ErrorKind.PERMANENT, _PERMANENT),
)


def classify_twilio_error(code: int | str | None, *, http_status: int | None = None) -> ErrorMeaning:
    """The meaning of a Twilio error code; one missing from the table is judged
    by the HTTP status alone (``wahub.core.errors.meaning_of_status``)."""
    number = int(code) if code is not None and str(code).isdigit() else None
    for kind, table in _TABLES:
        if number in table:
            return ErrorMeaning(kind, table[number], _LESSONS.get(number), _THROTTLES.get(number))
    return meaning_of_status(None if code is None else str(code), http_status)


def twilio_error(status: int, answer: Any) -> ProviderError:
    """The ``ProviderError`` of an error answer, keeping Twilio's code and message."""
    code = answer.get("code") if isinstance(answer, dict) else None
    if code is None:
        meaning = meaning_of_status(None, status)
        return ProviderError(f"{meaning.reason} (no Twilio error body)", code=f"http_{status}", meaning=meaning)
    meaning = classify_twilio_error(code, http_status=status)
    detail = str(answer.get("message") or "")
    text = f"{meaning.reason} (Twilio {code}: {detail})" if detail else f"{meaning.reason} (Twilio {code})"
    return ProviderError(text, code=str(code), meaning=meaning)
