"""What Bird's errors mean to the engine.

A refused API request answers an HTTP error status with Bird's JSON error
body ``{"code": "<token>", "message": "...", "details": {...}}``; the token
and the status say what happened: 401 and 403 are refused credentials
(the provider pauses), 429 asks for slower sending, 5xx is retried, anything
else is final. A message that fails later arrives as a ``failed`` status
whose code is WhatsApp's own (Bird passes it on), classified with the Cloud
API's table: 131047 (the service window closed), 131050 (the user stopped
marketing: an opt-out is recorded), 131026 (undeliverable) and the rest.
"""

from __future__ import annotations

from typing import Any

from wahub.core.errors import ErrorKind, ErrorMeaning, ProviderError, meaning_of_status
from wahub.plugins.providers.cloud.errors import classify_cloud_error

#: Bird's error tokens wahub recognises, with what they mean.
_TOKENS: dict[str, ErrorMeaning] = {
    "Unauthorized": ErrorMeaning(
        ErrorKind.AUTH, "Bird refused the access key: create a new one and update the provider's access_key"
    ),
    "Forbidden": ErrorMeaning(
        ErrorKind.AUTH, "the access key may not send on this workspace or channel: check its access policy"
    ),
    "TooManyRequests": ErrorMeaning(
        ErrorKind.RETRYABLE, "Bird's rate limit was hit; sending slows down", throttle="throughput"
    ),
    "InvalidPayload": ErrorMeaning(ErrorKind.PERMANENT, "Bird refused the message as malformed"),
    "NotFound": ErrorMeaning(ErrorKind.PERMANENT, "the workspace, channel or template does not exist at Bird"),
    "ChannelNotActive": ErrorMeaning(ErrorKind.PERMANENT, "the WhatsApp channel is not active at Bird"),
    "InternalServerError": ErrorMeaning(ErrorKind.RETRYABLE, "something went wrong at Bird"),
    "ServiceUnavailable": ErrorMeaning(ErrorKind.RETRYABLE, "Bird is temporarily unavailable"),
}


def classify_bird_error(code: str | None, *, http_status: int | None = None) -> ErrorMeaning:
    """The meaning of a Bird error token, a WhatsApp code of a failed status, or an HTTP status alone."""
    if code is not None and code.isdigit():
        return classify_cloud_error(code, http_status=http_status)
    if code in _TOKENS:
        return _TOKENS[code]
    if http_status in (401, 403):
        return ErrorMeaning(ErrorKind.AUTH, f"Bird refused the access key (HTTP {http_status})")
    return meaning_of_status(code, http_status)


def bird_error(status: int, answer: Any) -> ProviderError:
    """The ``ProviderError`` of an error answer, keeping Bird's token (or ``http_<status>``) and message."""
    token = answer.get("code") if isinstance(answer, dict) else None
    code = token if isinstance(token, str) and token else f"http_{status}"
    meaning = classify_bird_error(code if token else None, http_status=status)
    parts = [meaning.reason]
    if isinstance(answer, dict):
        message, details = answer.get("message"), answer.get("details")
        parts += [str(message)] if message else []
        parts += [str(details)] if details else []
    return ProviderError("; ".join(dict.fromkeys(parts)), code=code, meaning=meaning)
