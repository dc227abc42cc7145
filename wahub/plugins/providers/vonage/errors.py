"""What Vonage's error answers and status errors mean to the engine.

Vonage answers an error as an RFC 7807 problem (``type``, ``title``,
``detail``, ``instance``): ``type`` is a URL whose fragment is the error's
code (``https://developer.vonage.com/api-errors/messages#1120``) or word
(``...#unauthorized``). A status webhook's ``error`` has the same fields with
the code also in ``title``. A WhatsApp refusal Vonage passes on keeps Meta's
code (six digits, ``131047``), which means what it means on the Cloud API.

Classes: HTTP 401 refused credentials (the provider pauses), 429 and 1000
throttling (retried, bulk sends slow down), 5xx and 1030 Vonage's own trouble
(retried), 1340 outside the customer service window (policy); the rest fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from wahub.core.errors import ErrorKind, ErrorMeaning, ProviderError, Throttle, meaning_of_status
from wahub.plugins.providers.cloud.errors import classify_cloud_error

#: The code of a message that reached no phone (what a failed status carries).
UNDELIVERABLE = "1260"
#: The code Vonage gives a free-form WhatsApp message outside the service window.
OUTSIDE_WINDOW = "1340"

_RETRYABLE = {
    "1000": "Vonage throttled the account: too many messages per second",
    "1030": "Vonage had an internal error",
    "throttled": "Vonage throttled the account: too many requests",
}
_THROTTLES = {"1000", "throttled"}
_AUTH = {
    "unauthorized": "Vonage refused the credentials: check application_id and private_key (or api_key and api_secret)",
    "unathorized": "Vonage refused the credentials: check application_id and private_key (or api_key and api_secret)",
}
_POLICY = {
    OUTSIDE_WINDOW: "outside the 24-hour customer service window: send an approved template instead",
}
_PERMANENT = {
    "1020": "a parameter is invalid",
    "1120": "the sender (from) is not a WhatsApp number of this account",
    "1150": "the request is invalid",
    "1170": "the recipient's number is invalid or missing",
    UNDELIVERABLE: "the message could not be delivered to the number",
    "1380": "the media could not be fetched from its URL",
}
_TABLES: tuple[tuple[ErrorKind, Mapping[str, str]], ...] = (
    (ErrorKind.RETRYABLE, _RETRYABLE),
    (ErrorKind.AUTH, _AUTH),
    (ErrorKind.POLICY, _POLICY),
    (ErrorKind.PERMANENT, _PERMANENT),
)


def error_code(error: Mapping[str, Any]) -> str | None:
    """The code of a Vonage problem object: the digits of its ``title`` (status
    errors) or the fragment of its ``type`` URL, else None."""
    title = error.get("title")
    if isinstance(title, int) and not isinstance(title, bool):
        return str(title)
    if isinstance(title, str) and title.strip().isdigit():
        return title.strip()
    kind = error.get("type")
    if isinstance(kind, str):
        try:
            fragment = urlsplit(kind).fragment.strip()
        except ValueError:
            fragment = ""
        if fragment and len(fragment) <= 64:
            return fragment.lower()
    return None


def classify_vonage_error(code: str | None, *, http_status: int | None = None) -> ErrorMeaning:
    """The meaning of a Vonage error code (or a WhatsApp code Vonage passed on)."""
    if code is not None and code.isdigit() and len(code) == 6:
        return classify_cloud_error(code, http_status=http_status)
    if code is not None:
        for kind, table in _TABLES:
            if code in table:
                throttle: Throttle | None = "throughput" if code in _THROTTLES else None
                return ErrorMeaning(kind, table[code], throttle=throttle)
    if http_status == 401:
        return ErrorMeaning(ErrorKind.AUTH, _AUTH["unauthorized"])
    if http_status == 403:
        return ErrorMeaning(ErrorKind.PERMANENT, "Vonage forbids this request for the account or application")
    return meaning_of_status(code, http_status)


def problem_error(status: int, problem: Any) -> ProviderError:
    """The ``ProviderError`` of an error answer, keeping Vonage's code, title and detail."""
    body: Mapping[str, Any] = problem if isinstance(problem, Mapping) else {}
    code = error_code(body)
    meaning = classify_vonage_error(code, http_status=status)
    parts = [body.get("title"), body.get("detail")]
    invalid = body.get("invalid_parameters")
    if isinstance(invalid, list):
        parts += [f"{item.get('name')}: {item.get('reason')}" for item in invalid if isinstance(item, Mapping)]
    detail = "; ".join(dict.fromkeys(str(part) for part in parts if part)) or "no error body"
    return ProviderError(f"{meaning.reason} ({detail})", code=code or f"http_{status}", meaning=meaning)
