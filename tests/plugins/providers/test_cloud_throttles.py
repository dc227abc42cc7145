"""Which sending limit a Cloud API refusal says was hit, so the dispatcher
slows down the number's bulk sends or holds back only one recipient."""

from __future__ import annotations

import pytest

from wahub.core.errors import ErrorKind, Throttle, meaning_of_status
from wahub.plugins.providers.cloud.errors import classify_cloud_error, cloud_provider_error


@pytest.mark.parametrize(
    ("code", "http_status", "throttle"),
    [
        ("130429", 400, "throughput"),
        (130429, 429, "throughput"),
        ("131056", 400, "pair_rate"),
        ("131016", 503, None),
        ("80007", 400, None),  # the Graph API's own call rate, not the number's sends
        ("131050", 400, None),
        (None, 429, "throughput"),
        (None, 503, None),
    ],
)
def test_throttling_codes_name_the_limit_hit(
    code: int | str | None, http_status: int, throttle: Throttle | None
) -> None:
    meaning = classify_cloud_error(code, http_status=http_status)
    assert meaning.throttle == throttle
    if throttle is not None:
        assert meaning.kind is ErrorKind.RETRYABLE


def test_a_provider_error_carries_its_throttle() -> None:
    assert cloud_provider_error(130429, "slow down", http_status=400).throttle == "throughput"
    assert cloud_provider_error(131056, "", http_status=400).throttle == "pair_rate"
    assert meaning_of_status("x", 429).throttle == "throughput"
    assert meaning_of_status("x", 500).throttle is None
