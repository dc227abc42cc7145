"""What the Cloud API's error codes mean, for every provider that speaks
Meta's codes (Meta itself, 360dialog, the sandbox and the test kit's fakes).

Each code falls in one ``ErrorKind`` (``wahub.core.errors``); the ``policy``
codes that teach the send policy carry a ``Lesson``: 131050 (the user stopped
marketing) records an opt-out, 132015 and 132016 mark the template paused or
disabled. 130429 (the number's throughput) and 131056 (one user's pair rate)
also say which limit was hit, so the dispatcher slows down the right sends.
"""

from __future__ import annotations

from wahub.core.errors import ErrorKind, ErrorMeaning, Lesson, ProviderError, Throttle, meaning_of_status

_RETRYABLE = {
    2: "the API service is temporarily down",
    4: "the app hit the API call rate limit",
    80007: "the WhatsApp Business Account hit its rate limit",
    130429: "the number's throughput (messages per second) limit was hit",
    131000: "something went wrong at Meta",
    131016: "the service is temporarily unavailable",
    131056: "too many messages to this user in a short time (pair rate limit)",
    131057: "the account is in maintenance mode",
    133004: "the server is temporarily unavailable",
}
_AUTH = {
    0: "the access token is invalid: create a new one and update the provider's access_token",
    190: "the access token has expired: create a new (system-user) token and update the provider's access_token",
}
_PERMANENT = {
    3: "the app lacks a capability or permission for this call",
    10: "permission denied: the token lacks whatsapp_business_messaging",
    33: "the business phone number was deleted",
    100: "a parameter is invalid or misspelled",
    131005: "access denied",
    131008: "a required parameter is missing",
    131009: "a parameter value is invalid",
    131021: "the recipient cannot be the sender",
    131026: "the message is undeliverable (not on WhatsApp, old client, terms not accepted, or blocked)",
    131030: "the recipient is not in the test number's allowed list",
    131031: "the business account is locked",
    131042: "there is a payment or billing problem on the account",
    131044: "there is a payment or billing problem on the account",
    131048: "the number is spam-rate limited because of its quality rating",
    131051: "the message type is not supported",
    131052: "the user's media could not be downloaded",
    131053: "the media could not be uploaded or fetched",
    131062: "this request cannot be sent to a business-scoped user id; use the phone number",
    131064: "the messaging limit was reached after template classification violations",
    130497: "the account may not message users in that country",
    132000: "the template's parameter count does not match",
    132001: "the template does not exist in that language or is not approved",
    132005: "the template's text is too long once filled in",
    132007: "the template's content violates policy",
    132008: "a template parameter value is invalid",
    132012: "a template parameter has the wrong format",
    133010: "the phone number is not registered on the Cloud API",
    137000: "the recipient's identity key changed",
    368: "the account is temporarily blocked for policy violations",
}
_POLICY = {
    131047: "more than 24 hours have passed since the user last wrote: send an approved template instead",
    131049: "Meta did not deliver this marketing message to keep the ecosystem healthy",
    131050: "the user stopped marketing messages from this business",
    130472: "the user's number is part of a marketing experiment",
    132015: "the template is paused because of low quality",
    132016: "the template is permanently disabled",
}
#: What a policy refusal teaches the send policy.
_LESSONS = {
    131050: Lesson.OPTED_OUT,
    132015: Lesson.TEMPLATE_PAUSED,
    132016: Lesson.TEMPLATE_DISABLED,
}
#: Which sending limit a refusal says was hit.
_THROTTLES: dict[int, Throttle] = {
    130429: "throughput",
    131056: "pair_rate",
}

_TABLES: tuple[tuple[ErrorKind, dict[int, str]], ...] = (
    (ErrorKind.RETRYABLE, _RETRYABLE),
    (ErrorKind.AUTH, _AUTH),
    (ErrorKind.POLICY, _POLICY),
    (ErrorKind.PERMANENT, _PERMANENT),
)


def classify_cloud_error(code: int | str | None, *, http_status: int | None = None) -> ErrorMeaning:
    """The meaning of a Cloud API error code.

    Codes missing from the table are judged by their range (200-299 are
    permissions, 132xxx template errors) and then by the HTTP status alone
    (``wahub.core.errors.meaning_of_status``).
    """
    try:
        number = int(code) if code is not None else None
    except ValueError:
        number = None
    if number is not None:
        for kind, table in _TABLES:
            if number in table:
                return ErrorMeaning(kind, table[number], _LESSONS.get(number), _THROTTLES.get(number))
        if 200 <= number <= 299:
            return ErrorMeaning(ErrorKind.PERMANENT, "the token lacks an API permission")
        if 132000 <= number <= 132999:
            return ErrorMeaning(ErrorKind.PERMANENT, "the template or its parameters were refused")
    return meaning_of_status(None if code is None else str(code), http_status)


def cloud_provider_error(code: int | str | None, detail: str, *, http_status: int | None = None) -> ProviderError:
    """A ``ProviderError`` carrying a Cloud API code and its meaning."""
    meaning = classify_cloud_error(code, http_status=http_status)
    text = f"{meaning.reason} ({detail})" if detail else meaning.reason
    return ProviderError(text, code=None if code is None else str(code), meaning=meaning)
