"""How wahub proves itself to Vonage, and how Vonage proves its webhooks.

Requests: a Vonage Application signs a JWT with its private key (RS256,
claims ``application_id``, ``iat``, ``jti``, ``exp``) sent as
``Authorization: Bearer``; an account without one uses HTTP Basic with its
API key and secret.

Webhooks: Vonage sends ``Authorization: Bearer <JWT>`` signed HS256 with the
account's signature secret, whose ``payload_hash`` claim is the hex SHA-256
of the body. Vonage's own helper checks only the signature; wahub also
compares ``payload_hash`` with the body it received, so a signed token
cannot vouch for another body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
import uuid
import warnings
from collections.abc import Mapping
from typing import Any

_LOGGER = logging.getLogger(__name__)

#: Lifetime of a request JWT; Vonage allows up to a day, a short one limits a leaked token.
REQUEST_TOKEN_SECONDS = 900
#: Clock difference tolerated between Vonage and wahub.
LEEWAY_SECONDS = 300


def request_headers(config: Mapping[str, Any], *, now: float | None = None) -> dict[str, str]:
    """The ``Authorization`` header of one API request, by the entry's credentials."""
    if "private_key" in config:
        import jwt  # imported here, as below: only a Vonage entry loads PyJWT and cryptography (about 9 MB)

        issued = int(time.time() if now is None else now)
        claims = {
            "application_id": config["application_id"],
            "iat": issued,
            "jti": str(uuid.uuid4()),
            "exp": issued + REQUEST_TOKEN_SECONDS,
        }
        token = jwt.encode(claims, config["private_key"], algorithm="RS256", headers={"typ": "JWT"})
        return {"Authorization": f"Bearer {token}"}
    pair = f"{config['api_key']}:{config['api_secret']}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


def payload_hash(body: bytes) -> str:
    """The ``payload_hash`` claim Vonage puts in a webhook's JWT: hex SHA-256 of the body."""
    return hashlib.sha256(body).hexdigest()


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    scheme, _, token = headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def webhook_claims(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    api_key: str | None = None,
    max_age: float | None = None,
    now: float | None = None,
) -> dict[str, Any] | None:
    """The claims of a webhook Vonage really signed for this body, or None.

    The token must be HS256 with ``secret``, not expired, issued neither in
    the future nor longer than ``max_age`` seconds ago, carry a ``payload_hash``
    equal to the body's, and name ``api_key`` when it names an account at all.
    """
    token = bearer_token(headers)
    if token is None:
        return None
    moment = time.time() if now is None else now
    import jwt

    try:
        with warnings.catch_warnings():
            # The secret's length is Vonage's choice, not a mistake to warn about at every webhook.
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                options={"require": ["iat"], "verify_iat": False},
                leeway=LEEWAY_SECONDS,
            )
    except jwt.PyJWTError as exc:
        _LOGGER.info("a webhook JWT was refused: %s", type(exc).__name__)
        return None
    issued = claims.get("iat")
    if not isinstance(issued, (int, float)) or isinstance(issued, bool) or issued > moment + LEEWAY_SECONDS:
        return None
    if max_age is not None and moment - issued > max_age + LEEWAY_SECONDS:
        return None
    claimed = claims.get("payload_hash")
    if not isinstance(claimed, str) or not _same(claimed.lower(), payload_hash(body)):
        _LOGGER.info("a webhook JWT was refused: its payload_hash is not the body's")
        return None
    named = claims.get("api_key")
    if api_key is not None and named is not None and not _same(str(named), api_key):
        return None
    return claims


def _same(given: str, expected: str) -> bool:
    try:
        return hmac.compare_digest(given.encode(), expected.encode())
    except UnicodeEncodeError:
        return False
