"""Business hours: weekdays, ranges past midnight, closed dates, daylight-saving changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import voluptuous as vol

from wahub.plugins.business_hours import BUSINESS_HOURS_SCHEMA, is_open

LISBON = ZoneInfo("Europe/Lisbon")
HOURS = BUSINESS_HOURS_SCHEMA(
    {
        "timezone": "Europe/Lisbon",
        "weekly": {"mon-fri": "09:00-18:00", "sat": ["10:00-12:00", "14:00-16:00"], "sun": "22:00-02:00"},
        "closed_dates": ["2026-12-25"],
        "closed_reply": "Closed.",
    }
)


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=LISBON).timestamp()


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        (at(2026, 12, 1, 9, 0), True),  # Tuesday, opening minute
        (at(2026, 12, 1, 17, 59), True),
        (at(2026, 12, 1, 18, 0), False),  # closing minute
        (at(2026, 12, 1, 8, 59), False),
        (at(2026, 12, 5, 11, 0), True),  # Saturday morning
        (at(2026, 12, 5, 13, 0), False),  # Saturday lunch
        (at(2026, 12, 5, 15, 0), True),
        (at(2026, 12, 6, 23, 0), True),  # Sunday night
        (at(2026, 12, 7, 1, 30), True),  # ... past midnight, into Monday
        (at(2026, 12, 7, 2, 0), False),
        (at(2026, 12, 6, 1, 0), False),  # Saturday has no range past midnight
        (at(2026, 12, 25, 10, 0), False),  # a closed date
        (at(2026, 12, 26, 1, 0), False),
    ],
)
def test_open_by_weekday_and_range(when: float, open_: bool) -> None:
    assert is_open(HOURS, when) is open_


def test_hours_are_wall_clock_time_across_daylight_saving() -> None:
    # Lisbon moves from UTC+0 to UTC+1 on 2026-03-29: 09:00 local is 09:00 UTC before, 08:00 UTC after.
    before = dt.datetime(2026, 3, 27, 9, 0, tzinfo=dt.UTC).timestamp()
    after = dt.datetime(2026, 3, 30, 8, 0, tzinfo=dt.UTC).timestamp()
    assert is_open(HOURS, before) and is_open(HOURS, after)
    assert not is_open(HOURS, dt.datetime(2026, 3, 30, 7, 59, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize(
    ("weekly", "error"),
    [
        ({"monday": "09:00-18:00"}, "is not a day"),
        ({"mon-fri": "9-18"}, "is not a range of hours"),
        ({"mon": "09:00-09:00"}, "opens and closes at the same time"),
        ({"mon": "25:00-26:00"}, "does not exist"),
        ({"mon-fri": "09:00-18:00", "fri": "10:00-11:00"}, "fri is given hours twice"),
        ({}, "expected days"),
    ],
)
def test_bad_hours_are_refused(weekly: dict[str, str], error: str) -> None:
    with pytest.raises(vol.Invalid) as caught:
        BUSINESS_HOURS_SCHEMA({"timezone": "UTC", "weekly": weekly, "closed_reply": "x"})
    assert error in str(caught.value)


def test_days_wrap_around_the_week() -> None:
    hours = BUSINESS_HOURS_SCHEMA({"timezone": "UTC", "weekly": {"sat-mon": "10:00-11:00"}, "closed_reply": "x"})
    assert sorted(hours["weekly"]) == [0, 5, 6]
