"""What Infobip's error answers and failed delivery reports mean to the engine.

Infobip refuses a request with ``{"requestError": {"serviceException":
{"messageId": "<TOKEN>", "text": ...}}}`` (``messageId`` there is the error's
token, not a message id); its newer endpoints answer ``{"errorCode": ...,
"description": ...}``, which is read the same way. A failed delivery report
names its error (``error.name``, e.g. ``EC_UNKNOWN_SUBSCRIBER``) or, without
one, its status group (``UNDELIVERABLE``, ``EXPIRED``, ``REJECTED``).

WhatsApp's own numeric codes (131047 outside the service window, 131050 the
user stopped marketing...) that reach wahub through Infobip are read with the
Cloud API's table, so they teach the same lessons as on Meta's API.
"""

from __future__ import annotations

from typing import Any

from wahub.core.errors import ErrorKind, ErrorMeaning, ProviderError, Throttle, meaning_of_status
from wahub.plugins.providers.cloud.errors import classify_cloud_error

_TOKENS: dict[str, tuple[ErrorKind, str, Throttle | None]] = {
    "UNAUTHORIZED": (
        ErrorKind.AUTH,
        "Infobip refused the API key: create a key with WhatsApp scopes and update the provider's api_key",
        None,
    ),
    "FORBIDDEN": (
        ErrorKind.AUTH,
        "the API key may not use this endpoint: give it the WhatsApp scopes at Infobip",
        None,
    ),
    "TOO_MANY_REQUESTS": (ErrorKind.RETRYABLE, "Infobip asked to slow down (too many requests)", "throughput"),
    "GENERAL_ERROR": (ErrorKind.RETRYABLE, "something went wrong at Infobip", None),
    "SERVICE_UNAVAILABLE": (ErrorKind.RETRYABLE, "Infobip's service is temporarily unavailable", None),
    "BAD_REQUEST": (ErrorKind.PERMANENT, "Infobip refused the request as malformed", None),
    "NOT_FOUND": (ErrorKind.PERMANENT, "Infobip does not know the sender, template or resource named", None),
    # Status groups of a failed delivery report without an error of its own.
    "UNDELIVERABLE": (ErrorKind.PERMANENT, "the message could not be delivered to the user", None),
    "REJECTED": (ErrorKind.PERMANENT, "Infobip rejected the message", None),
    "EXPIRED": (ErrorKind.PERMANENT, "the message was not delivered before its validity period ended", None),
}
#: Delivery error names (Infobip's "error codes") wahub reads.
_DELIVERY: dict[str, str] = {
    "EC_UNKNOWN_SUBSCRIBER": "the number is not on WhatsApp",
    "EC_ABSENT_SUBSCRIBER": "the user's phone could not be reached",
}


def classify_infobip_error(code: str | None, *, http_status: int | None = None) -> ErrorMeaning:
    """The meaning of an Infobip error token, delivery error name or WhatsApp code."""
    if code is not None and code.isdigit():
        return classify_cloud_error(code, http_status=http_status)
    known = _TOKENS.get(code or "")
    if known is not None:
        kind, reason, throttle = known
        return ErrorMeaning(kind, reason, throttle=throttle)
    if code in _DELIVERY:
        return ErrorMeaning(ErrorKind.PERMANENT, _DELIVERY[code])
    if code is not None and code.startswith("EC_"):
        return ErrorMeaning(ErrorKind.PERMANENT, f"Infobip could not deliver the message ({code})")
    return meaning_of_status(code, http_status)


def error_token(data: Any) -> tuple[str | None, str]:
    """The error token and text of an Infobip error body (either format); ``(None, "")`` when there is none."""
    if not isinstance(data, dict):
        return None, ""
    request_error = data.get("requestError")
    exception = request_error.get("serviceException") if isinstance(request_error, dict) else None
    if isinstance(exception, dict):
        token, text = exception.get("messageId"), exception.get("text")
    else:
        token, text = data.get("errorCode"), data.get("description")
    violations = data.get("violations")
    details = [str(text)] if text else []
    if isinstance(violations, list):
        details += [f"{v.get('property')}: {v.get('violation')}" for v in violations if isinstance(v, dict)]
    return (str(token) if isinstance(token, (str, int)) and token != "" else None), "; ".join(details)


def infobip_error(status: int, data: Any) -> ProviderError:
    """The ``ProviderError`` for an error answer, keeping Infobip's token and text."""
    token, text = error_token(data)
    code = token if token is not None else f"http_{status}"
    meaning = classify_infobip_error(token, http_status=status)
    detail = text or "no error body"
    return ProviderError(f"{meaning.reason} ({detail})", code=code, meaning=meaning)
