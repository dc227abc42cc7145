"""What ``/readyz`` shows of a provider's account: shared terms, and the provider's own codes."""

from __future__ import annotations

import math

from wahub.core.http.health import account_fields
from wahub.core.provider import AccountState, Quality


def test_readyz_shows_an_account_in_shared_terms_and_only_codes_of_the_providers_own() -> None:
    state = AccountState(
        quality=Quality.MEDIUM,
        messaging_limit=math.inf,
        raw={"quality_raw": "YELLOW", "error": "cannot reach graph.example.com", "quality": "GREEN"},
    )
    assert account_fields(state) == {"quality": "medium", "quality_raw": "YELLOW", "messaging_limit": "unlimited"}
    assert account_fields(AccountState(messaging_limit=250.0)) == {"messaging_limit": 250}
    assert account_fields(AccountState()) == {}
