"""A Bird entry is checked at start-up: each mistake names its key, and no secret is printed."""

from __future__ import annotations

from typing import Any

import pytest

from wahub.core.errors import ConfigError
from wahub.testing import build_config

ENTRY = {
    "platform": "bird",
    "name": "bird",
    "workspace_id": "2d7f1d2c-5b7e-4c51-9c35-1f4b5e6a7b8c",
    "channel_id": "8a3c9f10-4e21-4b9a-a0c2-7d5e6f708192",
    "access_key": "bird-access-key-secret-value",
    "signing_key": "bird-signing-key-secret-value",
}


def _problems(entry: dict[str, Any], sqlite_url: str) -> str:
    with pytest.raises(ConfigError) as caught:
        build_config({"providers": [entry]}, database=sqlite_url)
    return str(caught.value)


def test_a_valid_entry_has_birds_defaults(sqlite_url: str) -> None:
    [entry] = build_config({"providers": [ENTRY]}, database=sqlite_url)["providers"]
    assert (entry["api_base"], entry["timeout"], entry["templates"], entry["trusted_proxies"]) == (
        "https://api.bird.com",
        30.0,
        [],
        [],
    )


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"signing_key": None}, "signing_key"),
        ({"signing_key": "short"}, "signing_key"),
        ({"workspace_id": "not a/workspace"}, "workspace_id"),
        ({"channel_id": None}, "channel_id"),
        ({"public_base_url": "ftp://hooks.example.com"}, "public_base_url"),
        ({"trusted_proxies": ["not-an-address"]}, "trusted_proxies"),
        ({"templates": [{"name": "order_ready", "version": "v1"}]}, "project_id"),
        ({"templates": [{"name": "x", "project_id": "p", "version": "v", "category": "PROMO"}]}, "category"),
    ],
)
def test_a_mistake_names_its_key(sqlite_url: str, change: dict[str, Any], key: str) -> None:
    entry = {**ENTRY, **change}
    entry = {name: value for name, value in entry.items() if value is not None}
    problems = _problems(entry, sqlite_url)
    assert key in problems, problems
    assert "secret-value" not in problems
