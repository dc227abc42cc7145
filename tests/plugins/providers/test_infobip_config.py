"""The ``platform: infobip`` entry as ``wahub check-config`` validates it: a
webhook credential is required, pairs are given whole, secrets never shown."""

from __future__ import annotations

from typing import Any

import pytest

from wahub.core.errors import ConfigError
from wahub.testing import build_config

ENTRY = {
    "platform": "infobip",
    "name": "main",
    "base_url": "https://abc123.api.infobip.com",
    "api_key": "secret-api-key-never-shown",
    "sender": 447860099299,
}


def _problems(sqlite_url: str, **entry: Any) -> str:
    with pytest.raises(ConfigError) as raised:
        build_config({"providers": [{**ENTRY, **entry}]}, database=sqlite_url)
    return str(raised.value)


def test_an_entry_without_a_webhook_credential_says_how_to_set_one(sqlite_url: str) -> None:
    problems = _problems(sqlite_url)
    assert "providers[0]: Infobip signs no webhook" in problems
    assert "webhook_username and webhook_password" in problems and "webhook_header and webhook_secret" in problems
    assert "secret-api-key-never-shown" not in problems


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"webhook_username": "wahub"}, "webhook_password"),
        ({"webhook_password": "p" * 16}, "webhook_username"),
        ({"webhook_header": "X-Secret"}, "webhook_secret"),
        ({"webhook_secret": "s" * 16}, "webhook_header"),
    ],
)
def test_half_a_credential_names_the_missing_key(sqlite_url: str, given: dict[str, str], missing: str) -> None:
    problems = _problems(sqlite_url, **given)
    assert f"providers[0].{missing}:" in problems and "give both" in problems


def test_short_secrets_and_bad_values_are_refused_without_showing_them(sqlite_url: str) -> None:
    problems = _problems(
        sqlite_url, webhook_username="wahub", webhook_password="short-pw", sender="+44 786", base_url="abc"
    )
    assert "providers[0].webhook_password: use at least 16 characters (the value is not shown)" in problems
    assert "providers[0].sender: digits only" in problems
    assert "providers[0].base_url:" in problems
    assert "short-pw" not in problems


def test_a_valid_entry_keeps_the_sender_as_digits(sqlite_url: str) -> None:
    config = build_config(
        {"providers": [{**ENTRY, "webhook_header": "X-Wahub-Webhook-Secret", "webhook_secret": "s" * 16}]},
        database=sqlite_url,
    )
    [entry] = config["providers"]
    assert (entry["sender"], entry["timeout"], entry["trusted_proxies"]) == ("447860099299", 30.0, [])
