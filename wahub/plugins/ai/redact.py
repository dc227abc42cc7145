"""Redaction of phone numbers and e-mail addresses before a text leaves the machine.

An AI backend whose ``redact:`` names ``phone`` and/or ``email`` passes every
text of the conversation it sends (the turn, the history, tool results)
through ``redact``; the business's own texts (its prompt, its FAQ) are sent
as written.
"""

from __future__ import annotations

import re
from collections.abc import Collection

__all__ = ["KINDS", "redact"]

#: What may be redacted, and what replaces it.
KINDS = {"phone": "[phone]", "email": "[email]"}

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A run of digits, with the spaces, dots, dashes and brackets numbers are written
# with, and an optional leading +; it is a phone number when it has 7 to 15 digits.
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d\s().-]{5,}\d(?!\w)")
_MIN_DIGITS, _MAX_DIGITS = 7, 15
# 2026-12-01, 01.12.2026, 1/12/26: dates, written with the same characters.
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")


def redact(text: str, kinds: Collection[str]) -> str:
    """``text`` with each e-mail address (``email``) and phone number (``phone``)
    among ``kinds`` replaced by ``[email]`` or ``[phone]``."""
    if "email" in kinds:
        text = _EMAIL.sub(KINDS["email"], text)
    if "phone" in kinds:
        text = _PHONE.sub(_phone_or_not, text)
    return text


def _phone_or_not(found: re.Match[str]) -> str:
    digits = sum(char.isdigit() for char in found[0])
    # Prices and times have too few digits, card-like runs too many; dates have their shape.
    if not _MIN_DIGITS <= digits <= _MAX_DIGITS or _DATE.fullmatch(found[0].strip()):
        return found[0]
    return KINDS["phone"]
