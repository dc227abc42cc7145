"""Validators shared by wahub's configuration schemas, in the style of voluptuous.

Each validator returns the value to keep or raises ``vol.Invalid`` with a
message that says what was expected. Values written through ``!env_var`` are
strings, so the numeric validators also accept digit strings. A validator
whose message is already complete raises ``ExplainedInvalid``, so the
offending value is not appended to it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import voluptuous as vol

__all__ = ["ExplainedInvalid", "clock_time", "int_between", "number_between", "seconds_between", "timezone_name"]


class ExplainedInvalid(vol.Invalid):
    """A validation error whose message is complete: the offending value is not appended."""


def int_between(low: int, high: int) -> Callable[[Any], int]:
    """A validator for an int in ``[low, high]``; digit strings (from ``!env_var``) are converted."""

    def validate(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise vol.Invalid("expected int")
        if not low <= value <= high:
            raise vol.Invalid(f"expected an int between {low} and {high}")
        return value

    return validate


def number_between(low: float, high: float, unit: str = "") -> Callable[[Any], float]:
    """A validator for a number in ``[low, high]``, as a float; numeric strings are converted.

    ``unit`` (``"seconds"``) is named in the messages: "expected a number of seconds".
    """
    noun = f"a number of {unit}" if unit else "a number"
    expected = f"expected {noun} between {_number(low)} and {_number(high)}"

    def validate(value: Any) -> float:
        if isinstance(value, bool):
            raise vol.Invalid(f"expected {noun}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise vol.Invalid(f"expected {noun}") from None
        if not low <= number <= high:  # also refuses NaN
            raise vol.Invalid(expected)
        return number

    return validate


def seconds_between(low: float, high: float) -> Callable[[Any], float]:
    """A validator for a number of seconds in ``[low, high]``, as a float; numeric strings are converted."""
    return number_between(low, high, "seconds")


def timezone_name(value: Any) -> str:
    """An IANA time zone name that this machine knows, such as ``Europe/Berlin``."""
    if not isinstance(value, str):
        raise vol.Invalid("expected an IANA time zone name such as Europe/Berlin")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise vol.Invalid(f"unknown time zone {value!r}: use an IANA name such as Europe/Berlin") from None
    return value


def clock_time(value: Any) -> dt.time:
    """A time of day written ``HH:MM`` (or ``HH:MM:SS``)."""
    try:
        return dt.time.fromisoformat(str(value))
    except ValueError:
        raise vol.Invalid("expected a time of day as HH:MM, e.g. 21:00") from None


def _number(value: float) -> str:
    """``86400.0`` -> ``86400``, ``0.05`` -> ``0.05``: a bound as a person writes it."""
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return repr(float(value))
