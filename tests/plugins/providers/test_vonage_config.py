"""The ``platform: vonage`` entry as ``wahub check-config`` validates it: one pair of
credentials, a private key as PEM text or a file, the problems named by key and
never showing a secret; and the request credentials it makes."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wahub.core.errors import ConfigError
from wahub.plugins.providers.vonage.auth import request_headers, webhook_claims
from wahub.testing import build_config

SECRET = "config-signature-secret-0123456789"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode("ascii")
APPLICATION = {"application_id": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab", "private_key": PEM}


def _entry(**keys: Any) -> dict[str, Any]:
    entry = {"platform": "vonage", "name": "main", "signature_secret": SECRET, "from": "14157386102", **keys}
    return {key: value for key, value in entry.items() if value is not None}


def _problems(entry: dict[str, Any], sqlite_url: str) -> str:
    with pytest.raises(ConfigError) as caught:
        build_config({"providers": [entry]}, database=sqlite_url)
    return str(caught.value)


def _provider(entry: dict[str, Any], sqlite_url: str) -> dict[str, Any]:
    config: dict[str, Any] = build_config({"providers": [entry]}, database=sqlite_url)["providers"][0]
    return config


def test_an_application_entry_takes_its_defaults(sqlite_url: str) -> None:
    config = _provider(_entry(**APPLICATION), sqlite_url)
    assert config["api_base"] == "https://api.nexmo.com"
    assert config["signature_max_age"] == 86400 and config["timeout"] == 30.0


def test_the_private_key_may_be_a_file(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "private.key"
    path.write_text(PEM)
    config = _provider(_entry(application_id=APPLICATION["application_id"], private_key=str(path)), sqlite_url)
    assert config["private_key"] == PEM
    claims = jwt.decode(
        request_headers(config)["Authorization"].removeprefix("Bearer "), KEY.public_key(), algorithms=["RS256"]
    )
    assert claims["application_id"] == APPLICATION["application_id"]
    assert claims["exp"] - claims["iat"] == 900 and claims["jti"]


def test_basic_credentials_make_a_basic_header(sqlite_url: str) -> None:
    config = _provider(_entry(api_key="abcd1234", api_secret="api-secret-0123"), sqlite_url)
    header = request_headers(config)["Authorization"]
    assert header == "Basic " + base64.b64encode(b"abcd1234:api-secret-0123").decode()


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ({}, "give the credentials: application_id and private_key (JWT), or api_key and api_secret"),
        ({"application_id": APPLICATION["application_id"]}, "application_id is given without private_key"),
        ({"api_secret": "api-secret-0123"}, "api_secret is given without api_key"),
        ({"private_key": PEM}, "private_key is given without application_id"),
    ],
)
def test_credentials_come_in_pairs(sqlite_url: str, keys: dict[str, Any], says: str) -> None:
    assert says in _problems(_entry(**keys), sqlite_url)


def test_a_bad_private_key_is_named_without_showing_it(sqlite_url: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.key"
    problems = _problems(_entry(application_id=APPLICATION["application_id"], private_key=str(missing)), sqlite_url)
    assert "providers[0].private_key" in problems and "cannot read the private key file" in problems
    broken = PEM.replace(PEM.splitlines()[3], "A" * 64)
    problems = _problems(_entry(application_id=APPLICATION["application_id"], private_key=broken), sqlite_url)
    assert "is not an unencrypted PEM private key" in problems and "BEGIN" not in problems
    curve = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    problems = _problems(_entry(application_id=APPLICATION["application_id"], private_key=curve.decode()), sqlite_url)
    assert "is not an RSA private key" in problems


def test_the_signature_secret_is_required_and_never_shown(sqlite_url: str) -> None:
    assert "signature_secret" in _problems(_entry(signature_secret=None, **APPLICATION), sqlite_url)
    problems = _problems(_entry(signature_secret="short-secret", **APPLICATION), sqlite_url)
    assert "providers[0].signature_secret" in problems and "at least 16 characters" in problems
    assert "short-secret" not in problems


def test_the_business_number_is_digits(sqlite_url: str) -> None:
    problems = _problems(_entry(**{"from": "+1 415 738 6102"}, **APPLICATION), sqlite_url)
    assert "providers[0].from" in problems and "without '+'" in problems


def test_a_webhook_token_is_checked_against_the_clock() -> None:
    body = b'{"message_uuid": "x"}'
    now = 1_800_000_000
    token = jwt.encode({"iat": now, "payload_hash": _sha(body)}, SECRET, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    assert webhook_claims(headers, body, secret=SECRET, max_age=3600, now=now + 60) is not None
    assert webhook_claims(headers, body, secret=SECRET, max_age=3600, now=now + 7200) is None
    assert webhook_claims(headers, body, secret=SECRET, max_age=None, now=now + 7200) is not None
    assert webhook_claims(headers, body, secret=SECRET, now=now - 3600) is None  # issued in the future
    assert webhook_claims(headers, body + b" ", secret=SECRET, now=now) is None
    assert webhook_claims({"Authorization": f"bearer {token}"}, body, secret=SECRET, now=now) is not None


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
