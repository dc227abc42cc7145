"""The ``providers:`` entry of a Vonage Messages API number (``platform: vonage``).

Requests authenticate either as a Vonage Application (``application_id`` and
its ``private_key``: every request carries a fresh RS256 JWT) or with the
account's ``api_key`` and ``api_secret`` (HTTP Basic); exactly one of the two
pairs is given. Webhooks are always verified, so ``signature_secret`` is
required. Secrets are never echoed in a validation error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import voluptuous as vol

from wahub.core.config.validators import ExplainedInvalid, number_between
from wahub.core.provider import PROVIDER_SCHEMA_BASE, PUBLIC_URL_OPTIONS

DEFAULT_API_BASE = "https://api.nexmo.com"
#: The shortest signature secret accepted; Vonage's own are 32 characters or more.
MIN_SIGNATURE_SECRET = 16
_APPLICATION_KEYS = ("application_id", "private_key")
_BASIC_KEYS = ("api_key", "api_secret")


def private_key(value: Any) -> str:
    """An RSA private key as PEM text: the PEM itself, or the path of a file holding it."""
    if not isinstance(value, str) or not value.strip():
        raise ExplainedInvalid("expected the application's private key: its PEM text or the path of its file")
    text = value.strip()
    if "-----BEGIN" not in text:
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a text file"
            raise ExplainedInvalid(f"cannot read the private key file {str(path)!r}: {reason}") from None
    # Imported here: only a Vonage entry with a private key loads cryptography.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise ExplainedInvalid(
            "is not an unencrypted PEM private key (download private.key again from the Vonage application)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ExplainedInvalid("is not an RSA private key; Vonage applications sign with RS256")
    return text if text.endswith("\n") else text + "\n"


def _secret(minimum: int, what: str) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or len(value) < minimum:
            raise ExplainedInvalid(f"expected the {what} (at least {minimum} characters)")
        return value

    return check


def _one_credential(entry: dict[str, Any]) -> dict[str, Any]:
    """Exactly one pair: the application's id and key, or the API key and secret."""
    application = [key for key in _APPLICATION_KEYS if key in entry]
    basic = [key for key in _BASIC_KEYS if key in entry]
    if len(application) == 1:
        missing = next(key for key in _APPLICATION_KEYS if key not in entry)
        raise vol.Invalid(f"{application[0]} is given without {missing}: give both", path=[missing])
    if len(basic) == 1 and not application:
        missing = next(key for key in _BASIC_KEYS if key not in entry)
        raise vol.Invalid(f"{basic[0]} is given without {missing}: give both", path=[missing])
    if not application and not basic:
        raise ExplainedInvalid(
            "give the credentials: application_id and private_key (JWT), or api_key and api_secret (Basic)"
        )
    return entry


DIGITS = vol.All(vol.Coerce(str), vol.Match(r"^[1-9]\d{5,14}$", msg="the number as digits, without '+' (E.164)"))

VONAGE_SCHEMA = vol.Schema(
    vol.All(
        PROVIDER_SCHEMA_BASE.extend(
            {
                # The Vonage Application's id (a UUID); with private_key, requests carry an RS256 JWT.
                vol.Optional("application_id"): vol.All(
                    str, vol.Match(r"^[0-9a-fA-F-]{8,64}$", msg="the application's id, a UUID")
                ),
                # The application's private key: its PEM text, or the path of the private.key file.
                vol.Optional("private_key"): private_key,
                # The account's API key; also names the account in signed webhooks (claim api_key).
                vol.Optional("api_key"): vol.All(str, vol.Match(r"^[0-9a-zA-Z]{4,32}$", msg="the account's API key")),
                # The account's API secret, for HTTP Basic requests (some features need JWT).
                vol.Optional("api_secret"): _secret(8, "account's API secret"),
                # The account's signature secret (Dashboard, API settings): verifies every webhook.
                vol.Required("signature_secret"): _secret(MIN_SIGNATURE_SECRET, "account's signature secret"),
                # The business's WhatsApp number at Vonage, as digits (E.164 without '+').
                vol.Required("from"): DIGITS,
                # The API host: https://api.nexmo.com, or a region's (https://api-eu.vonage.com).
                vol.Optional("api_base", default=DEFAULT_API_BASE): vol.All(vol.Url(), str),
                # Seconds an API request (or an inbound file's download) may take.
                vol.Optional("timeout", default=30.0): number_between(0.1, 300, "seconds"),
                # How old a webhook's signature (its JWT's iat) may be, in seconds; null: any age.
                vol.Optional("signature_max_age", default=86400): vol.Any(None, number_between(60, 30 * 86400)),
                **PUBLIC_URL_OPTIONS,
            }
        ),
        _one_credential,
    )
)
