"""Meta's error codes and account words, read by the Cloud API provider
into the meanings and terms the engine shares with every provider."""

from __future__ import annotations

import pytest

from wahub.core.errors import ErrorKind, Lesson, ProviderError
from wahub.plugins.providers.cloud.errors import classify_cloud_error, cloud_provider_error


@pytest.mark.parametrize(
    ("code", "http_status", "kind", "lesson"),
    [
        (131050, 400, ErrorKind.POLICY, Lesson.OPTED_OUT),
        ("132015", 400, ErrorKind.POLICY, Lesson.TEMPLATE_PAUSED),
        ("132016", None, ErrorKind.POLICY, Lesson.TEMPLATE_DISABLED),
        ("131047", 400, ErrorKind.POLICY, None),
        ("131016", 503, ErrorKind.RETRYABLE, None),
        ("130429", 429, ErrorKind.RETRYABLE, None),
        ("190", 401, ErrorKind.AUTH, None),
        ("131026", 400, ErrorKind.PERMANENT, None),
        ("132999", 400, ErrorKind.PERMANENT, None),
        ("250", 403, ErrorKind.PERMANENT, None),
        (None, 502, ErrorKind.RETRYABLE, None),
        (None, 401, ErrorKind.AUTH, None),
        ("not-a-number", 400, ErrorKind.PERMANENT, None),
        ("21610", 400, ErrorKind.PERMANENT, None),
    ],
)
def test_cloud_codes_have_their_meaning_and_lesson(
    code: int | str | None, http_status: int | None, kind: ErrorKind, lesson: Lesson | None
) -> None:
    meaning = classify_cloud_error(code, http_status=http_status)
    assert (meaning.kind, meaning.lesson) == (kind, lesson)
    assert meaning.reason


def test_a_cloud_provider_error_carries_its_meaning() -> None:
    error = cloud_provider_error(131050, "stopped", http_status=400)
    assert isinstance(error, ProviderError)
    assert error.code == "131050" and error.lesson is Lesson.OPTED_OUT
    assert not error.retryable and not error.auth
    assert str(error) == "the user stopped marketing messages from this business (stopped)"
    assert cloud_provider_error(190, "", http_status=401).auth
    assert cloud_provider_error(None, "", http_status=503).retryable


def test_a_provider_error_without_a_meaning_takes_its_kind_from_its_flags() -> None:
    assert ProviderError("slow", retryable=True).meaning.kind is ErrorKind.RETRYABLE
    assert ProviderError("key", auth=True).meaning.kind is ErrorKind.AUTH
    refused = ProviderError("no", code="131050")
    assert refused.meaning.kind is ErrorKind.PERMANENT and refused.lesson is None
