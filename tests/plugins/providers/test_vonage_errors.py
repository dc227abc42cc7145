"""What the codes of Vonage's failed statuses mean: the engine asks
``classify_error`` for the code a ``rejected`` or ``undeliverable`` status carried."""

from __future__ import annotations

import pytest

from wahub.core.errors import ErrorKind, Lesson
from wahub.plugins.providers.vonage.errors import classify_vonage_error, error_code

ERRORS = "https://developer.vonage.com/api-errors"
MESSAGES = f"{ERRORS}/messages"


@pytest.mark.parametrize(
    ("code", "kind", "lesson", "throttle"),
    [
        ("1340", ErrorKind.POLICY, None, None),
        ("1260", ErrorKind.PERMANENT, None, None),
        ("1000", ErrorKind.RETRYABLE, None, "throughput"),
        ("1030", ErrorKind.RETRYABLE, None, None),
        ("131050", ErrorKind.POLICY, Lesson.OPTED_OUT, None),
        ("131047", ErrorKind.POLICY, None, None),
        ("131056", ErrorKind.RETRYABLE, None, "pair_rate"),
        ("unauthorized", ErrorKind.AUTH, None, None),
        ("1999", ErrorKind.PERMANENT, None, None),
    ],
)
def test_a_status_code_means_what_vonage_says(code: str, kind: ErrorKind, lesson: Lesson | None, throttle: str) -> None:
    meaning = classify_vonage_error(code)
    assert (meaning.kind, meaning.lesson, meaning.throttle) == (kind, lesson, throttle)
    assert meaning.reason


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ({"type": f"{MESSAGES}#1260", "title": 1260}, "1260"),
        ({"type": f"{MESSAGES}#1340", "title": "Outside the allowed window"}, "1340"),
        ({"type": f"{ERRORS}#unauthorized", "title": "Unauthorized"}, "unauthorized"),
        ({"type": f"{MESSAGES}#1370", "title": "131050"}, "131050"),
        ({"title": "Bad Request"}, None),
        ({"type": 42}, None),
    ],
)
def test_the_code_is_the_title_digits_or_the_type_fragment(error: dict[str, object], code: str | None) -> None:
    assert error_code(error) == code
