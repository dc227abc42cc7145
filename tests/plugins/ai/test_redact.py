"""Redaction before a text leaves the machine: numbers and addresses go, dates, prices and order numbers stay."""

from __future__ import annotations

import pytest

from wahub.plugins.ai.redact import redact

BOTH = ("phone", "email")


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("call +1 (555) 123-4567 now", "call [phone] now"),
        ("my number is 15551234567.", "my number is [phone]."),
        ("+7 912 345-67-89", "[phone]"),
        ("write to a.b+shop@example.co.uk please", "write to [email] please"),
        ("order 1234 on 2026-12-01 at 10:00 for 30.50 €", "order 1234 on 2026-12-01 at 10:00 for 30.50 €"),
        ("delivered 01.12.2026", "delivered 01.12.2026"),
        ("card 4111 1111 1111 1111 1111", "card 4111 1111 1111 1111 1111"),
    ],
)
def test_phone_numbers_and_emails_are_replaced(text: str, redacted: str) -> None:
    assert redact(text, BOTH) == redacted


def test_only_the_kinds_asked_for_are_replaced() -> None:
    text = "ana@example.com, +1 555 123 4567"

    assert redact(text, ["email"]) == "[email], +1 555 123 4567"
    assert redact(text, ["phone"]) == "ana@example.com, [phone]"
    assert redact(text, []) == text
