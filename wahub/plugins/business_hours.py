"""Business hours: when a person can answer, by weekday, in the business's time zone.

Configuration (under ``router:``)::

    business_hours:
      timezone: Europe/Lisbon
      weekly: {mon-fri: "09:00-18:00", sat: ["10:00-12:00", "14:00-16:00"]}
      closed_dates: [2026-12-25, 2027-01-01]
      closed_reply: "We are closed now; a person will answer at opening time."

Days not listed are closed; a range may pass midnight (``22:00-02:00`` opens
late on the day named and closes on the next). Times are wall-clock times of
the time zone, so the hours stay right across daylight-saving changes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import voluptuous as vol

from wahub.core.config.validators import ExplainedInvalid, localized_text, timezone_name

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _days(spec: Any) -> list[int]:
    """``mon``, ``mon-fri``, ``sat,sun`` or ``daily`` as weekday numbers (Monday is 0)."""
    if not isinstance(spec, str):
        raise vol.Invalid("expected days such as mon, mon-fri or sat,sun")
    if spec.strip().lower() == "daily":
        return list(range(7))
    found: list[int] = []
    for part in spec.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ExplainedInvalid(f"{spec!r} is not a day or range of days: use {', '.join(DAYS)}, mon-fri or daily")
        start, end = DAYS.index(first), DAYS.index(last or first)
        found += [day % 7 for day in range(start, end + 1 if end >= start else end + 8)]
    return found


def _minutes(hours: str, minutes: str, text: str) -> int:
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > 24 * 60:
        raise ExplainedInvalid(f"{text!r} has a time that does not exist")
    return value


def _ranges(value: Any) -> list[tuple[int, int]]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise vol.Invalid('expected opening hours such as "09:00-18:00" or a list of them')
    ranges = []
    for text in texts:
        found = _RANGE.match(text) if isinstance(text, str) else None
        if found is None:
            raise ExplainedInvalid(f'{text!r} is not a range of hours such as "09:00-18:00"')
        start, end = _minutes(found[1], found[2], text), _minutes(found[3], found[4], text)
        if start == end:
            raise ExplainedInvalid(f"{text!r} opens and closes at the same time")
        ranges.append((start, end))
    return ranges


def _weekly(value: Any) -> dict[int, list[tuple[int, int]]]:
    if not isinstance(value, dict) or not value:
        raise vol.Invalid('expected days with their hours, such as {mon-fri: "09:00-18:00"}')
    week: dict[int, list[tuple[int, int]]] = {}
    for spec, hours in value.items():
        try:
            days, ranges = _days(spec), _ranges(hours)
        except vol.Invalid as exc:
            raise type(exc)(exc.msg, path=[spec]) from exc
        for day in days:
            if day in week:
                raise ExplainedInvalid(f"{DAYS[day]} is given hours twice", path=[spec])
            week[day] = ranges
    return week


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise vol.Invalid("expected a date such as 2026-12-25") from None


BUSINESS_HOURS_SCHEMA = vol.Schema(
    {
        vol.Required("timezone"): timezone_name,
        vol.Required("weekly"): _weekly,
        vol.Optional("closed_dates", default=[]): [_date],
        vol.Required("closed_reply"): localized_text(4096),
    }
)


def is_open(hours: Mapping[str, Any], now: float) -> bool:
    """Whether ``now`` (unix seconds) falls within the business hours."""
    local = dt.datetime.fromtimestamp(now, ZoneInfo(hours["timezone"]))
    minute = local.hour * 60 + local.minute
    today, yesterday = local.date(), local.date() - dt.timedelta(days=1)
    for day, ranges, after_midnight in (
        (today, hours["weekly"].get(local.weekday(), []), False),
        (yesterday, hours["weekly"].get(yesterday.weekday(), []), True),
    ):
        if day in hours["closed_dates"]:
            continue
        for start, end in ranges:
            if start < end and not after_midnight and start <= minute < end:
                return True
            if start > end and (minute < end if after_midnight else minute >= start):
                return True
    return False
