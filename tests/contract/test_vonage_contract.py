"""Vonage's provider against the contract suite (tests/contract/vonage).

The webhooks of cases with ``sign: true`` are signed as Vonage signs them
(PyJWT, HS256 with the signature secret, ``payload_hash`` of the body), and
every request the provider makes must carry an application JWT that PyJWT
verifies with the application's public key, as Vonage does.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from wahub.core.provider import WebhookRequest
from wahub.plugins.providers.vonage.provider import VonageProvider
from wahub.testing.contract import Recorded, contract_tests

APPLICATION_ID = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
API_KEY = "abcd1234"
SIGNATURE_SECRET = "contract-signature-secret-0123456789"
JSON = {"Content-Type": "application/json"}
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode("ascii")


def vonage_signature(request: WebhookRequest) -> Mapping[str, str]:
    """``Authorization: Bearer <JWT>`` as Vonage sends it with a callback."""
    claims = {
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "api_key": API_KEY,
        "application_id": APPLICATION_ID,
        "payload_hash": hashlib.sha256(request.body).hexdigest(),
    }
    return {"Authorization": "Bearer " + jwt.encode(claims, SIGNATURE_SECRET, algorithm="HS256")}


def application_jwt_problems(request: Recorded) -> list[str]:
    """What Vonage would refuse in a request's credentials: an RS256 JWT of the application."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme != "Bearer":
        return [f"Authorization is {scheme or 'missing'}, not an application JWT"]
    try:
        claims = jwt.decode(
            token, KEY.public_key(), algorithms=["RS256"], options={"require": ["iat", "jti", "exp", "application_id"]}
        )
    except jwt.PyJWTError as exc:
        return [f"the JWT does not verify: {exc}"]
    if claims["application_id"] != APPLICATION_ID:
        return [f"the JWT names application {claims['application_id']!r}"]
    if not 0 < claims["exp"] - claims["iat"] <= 86400:
        return ["the JWT's lifetime is not within a day"]
    return []


test_vonage = contract_tests(
    VonageProvider,
    fixtures=Path(__file__).parent / "vonage",
    config={
        "platform": "vonage",
        "name": "main",
        "application_id": APPLICATION_ID,
        "private_key": PEM,
        "api_key": API_KEY,
        "signature_secret": SIGNATURE_SECRET,
        "from": "14157386102",
        # The fixed tokens of tests/contract/vonage/inbound_checks.yaml are from 2025.
        "signature_max_age": None,
    },
    base_url_key="api_base",
    check_request=application_jwt_problems,
    signer=vonage_signature,
    defaults={"outbound": {"request": {"method": "POST", "path": "/v1/messages", "headers": JSON}}},
)
