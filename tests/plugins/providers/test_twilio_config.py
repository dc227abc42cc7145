"""A Twilio provider entry is checked at start-up: every mistake names its key,
and no secret is printed."""

from __future__ import annotations

from typing import Any

import pytest

from wahub.core.errors import ConfigError
from wahub.testing import build_config

ENTRY = {
    "platform": "twilio",
    "name": "main",
    "account_sid": "AC" + "a" * 32,
    "auth_token": "very-secret-auth-token",
    "from": "whatsapp:+15550783881",
}


def problems(sqlite_url: str, **changes: Any) -> str:
    entry = {key: value for key, value in {**ENTRY, **changes}.items() if value is not None}
    with pytest.raises(ConfigError) as caught:
        build_config({"providers": [entry]}, database=sqlite_url)
    return str(caught.value)


def test_a_complete_entry_is_valid(sqlite_url: str) -> None:
    config = build_config({"providers": [ENTRY]}, database=sqlite_url)
    [entry] = config["providers"]
    assert entry["verify_webhooks"] is True and entry["api_base"] == "https://api.twilio.com"


def test_webhooks_need_the_auth_token_even_with_an_api_key(sqlite_url: str) -> None:
    text = problems(sqlite_url, auth_token=None, api_key_sid="SK" + "b" * 32, api_key_secret="key-secret-value")
    assert "auth_token" in text and "signs webhooks" in text
    assert "key-secret-value" not in text
    # Without webhook checks, an API key alone will do.
    keyed = {key: value for key, value in ENTRY.items() if key != "auth_token"}
    keyed.update(api_key_sid="SK" + "b" * 32, api_key_secret="key-secret-value", verify_webhooks=False)
    assert build_config({"providers": [keyed]}, database=sqlite_url)["providers"][0]["verify_webhooks"] is False


@pytest.mark.parametrize(
    ("changes", "named", "says"),
    [
        ({"from": None}, "from", "messaging_service_sid"),
        ({"messaging_service_sid": "MG" + "c" * 32}, "from", "not both"),
        ({"account_sid": "AC123"}, "account_sid", "AC and 32 hex digits"),
        ({"from": "+15550783881"}, "from", "whatsapp:+<E.164 number>"),
        ({"api_key_sid": "SK" + "b" * 32}, "api_key_secret", "its SID and its secret"),
        ({"auth_token": None}, "auth_token", "API key"),
    ],
)
def test_a_mistake_names_its_key(sqlite_url: str, changes: dict[str, Any], named: str, says: str) -> None:
    text = problems(sqlite_url, **changes)
    assert named in text and says in text, text
    assert "very-secret-auth-token" not in text
