"""Standard Webhooks signatures: secrets, and the headers that sign a body.

A secret is ``whsec_`` followed by the base64 of 24 to 64 random bytes; the
key is those bytes. A request carries ``webhook-id``, ``webhook-timestamp``
(integer unix seconds) and ``webhook-signature``: ``v1,<base64 HMAC-SHA256
of "{id}.{timestamp}.{body}">``, one such entry per secret, separated by
spaces, so that during a rotation a receiver knowing either secret verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import voluptuous as vol

from wahub.core.config.validators import ExplainedInvalid

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
#: How to make a secret, for the error messages.
_MAKE_ONE = (
    'make one with: python3 -c "import base64, secrets; '
    "print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\""
)


def signing_key(secret: str) -> bytes:
    """The key of a ``whsec_`` secret; ``ValueError`` says what is wrong with
    it (never quoting it)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(
            f"a secret starts with {SECRET_PREFIX} followed by the base64 of {MIN_KEY_BYTES} to "
            f"{MAX_KEY_BYTES} random bytes (the Standard Webhooks format); {_MAKE_ONE}"
        )
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"the part after {SECRET_PREFIX} is not base64 (letters, digits, '+' and '/', "
            f"'=' only at the end); {_MAKE_ONE}"
        ) from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"the key is {len(key)} bytes once decoded; a Standard Webhooks key is "
            f"{MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes; {_MAKE_ONE}"
        )
    return key


def webhook_secrets(value: Any) -> list[str]:
    """A validator for ``secret``: one ``whsec_`` secret or a list of them
    (all of them sign: a rotation lists the new one beside the old)."""
    if isinstance(value, str):
        problem = _secret_problem(value)
        if problem is not None:
            raise ExplainedInvalid(problem)
        return [value]
    if not isinstance(value, list) or not value:
        raise ExplainedInvalid("expected a whsec_ secret, or a list of them while rotating secrets")
    errors: list[vol.Invalid] = []
    for index, secret in enumerate(value):
        problem = "expected a whsec_ secret (a string)" if not isinstance(secret, str) else _secret_problem(secret)
        if problem is not None:
            errors.append(ExplainedInvalid(problem, path=[index]))
    if errors:
        raise vol.MultipleInvalid(errors)
    return list(value)


def _secret_problem(secret: str) -> str | None:
    try:
        signing_key(secret)
    except ValueError as exc:
        return str(exc)
    return None


def signature(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64>`` per key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys)


def signed_headers(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of ``body``."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(keys, msg_id, timestamp, body),
    }
