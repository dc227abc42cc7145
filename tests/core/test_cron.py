"""Cron expressions in local wall time: parsing, and firings across
daylight-saving changes compared with a minute-by-minute reading of the clock."""

from __future__ import annotations

import datetime as dt
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wahub.core.outbound.cron import Cron, CronError, count_between, latest_at_or_before, next_after, parse

ZONES = ("Europe/Lisbon", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC")
LISBON = ZoneInfo("Europe/Lisbon")
#: How far the minute-by-minute reading looks ahead of each firing.
HORIZON = 4 * 86400


def local(instant: float, zone: ZoneInfo = LISBON) -> str:
    return dt.datetime.fromtimestamp(instant, zone).isoformat()


def at(text: str, zone: ZoneInfo = LISBON) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def firings(expression: str, start: float, count: int, zone: ZoneInfo = LISBON) -> list[str]:
    found, instant = [], start
    for _ in range(count):
        instant = next_after(expression, instant, zone)
        found.append(local(instant, zone))
    return found


def test_weekly_monday_morning_keeps_its_local_time_across_both_changes() -> None:
    assert firings("0 9 * * mon", at("2026-03-20T00:00"), 3) == [
        "2026-03-23T09:00:00+00:00",
        "2026-03-30T09:00:00+01:00",
        "2026-04-06T09:00:00+01:00",
    ]
    assert firings("0 9 * * mon", at("2026-10-20T00:00"), 2) == [
        "2026-10-26T09:00:00+00:00",
        "2026-11-02T09:00:00+00:00",
    ]


def test_a_time_in_the_spring_gap_fires_once_when_the_clocks_jump() -> None:
    # On 29 March 2026 Lisbon goes from 00:59:59 WET to 02:00 WEST: 01:30 never happens.
    assert firings("30 1 * * *", at("2026-03-28T12:00"), 3) == [
        "2026-03-29T02:00:00+01:00",
        "2026-03-30T01:30:00+01:00",
        "2026-03-31T01:30:00+01:00",
    ]


def test_a_time_in_the_autumn_fold_fires_at_its_first_occurrence_only() -> None:
    # On 25 October 2026 Lisbon lives 01:00 to 01:59 twice.
    assert firings("30 1 * * *", at("2026-10-24T12:00"), 2) == [
        "2026-10-25T01:30:00+01:00",
        "2026-10-26T01:30:00+00:00",
    ]
    first = at("2026-10-25T01:30")
    # The repeated 01:00 and 01:30 (WET) are not fired again.
    assert local(next_after("*/30 1 * * *", first, LISBON)) == "2026-10-26T01:00:00+00:00"
    assert local(next_after("*/30 1-2 * * *", first, LISBON)) == "2026-10-25T02:00:00+00:00"


def test_lord_howe_moves_its_clocks_by_half_an_hour() -> None:
    zone = ZoneInfo("Australia/Lord_Howe")
    # 4 October 2026: 02:00 becomes 02:30.
    assert firings("15 2 * * *", at("2026-10-03T12:00", zone), 2, zone) == [
        "2026-10-04T02:30:00+11:00",
        "2026-10-05T02:15:00+11:00",
    ]


def test_names_steps_ranges_and_lists() -> None:
    cron = parse("*/20 8-10/2 * jan,Mar-apr MON-wed")
    assert cron.minutes == {0, 20, 40}
    assert cron.hours == {8, 10}
    assert cron.months == {1, 3, 4}
    assert cron.weekdays == {1, 2, 3}
    assert parse("0 0 * * 7").weekdays == {0} == parse("0 0 * * sun").weekdays
    assert parse("5/20 * * * *").minutes == {5, 25, 45}


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # The 13th, and every Friday.
    found = firings("0 12 13 * fri", at("2026-03-01T00:00"), 4)
    assert [day[:10] for day in found] == ["2026-03-06", "2026-03-13", "2026-03-20", "2026-03-27"]


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("0 9 * *", "has 4 fields: expected 5"),
        ("60 9 * * *", "minute field has 60"),
        ("0 24 * * *", "hour field has 24"),
        ("0 9 0 * *", "day-of-month field has 0"),
        ("0 9 * 13 *", "month field has 13"),
        ("0 9 * * 8", "day-of-week field has 8"),
        ("0 9 * * monday", "day-of-week field has 'monday'"),
        ("0 9 * foo *", "month field has 'foo'"),
        ("*/0 9 * * *", "minute field has step '0'"),
        ("0 9-5 * * *", "hour field has the range '9-5' backwards"),
        ("0 9 ,1 * *", "day-of-month field has an empty part"),
        ("0 9 30 feb *", "day-of-month field names no day"),
        ("² 9 * * *", "minute field has '²': expected a number"),
        ("0 9 ¹-3 * *", "day-of-month field has '¹'"),
        ("0 9 * * */²", "day-of-week field has step '²'"),
        (f"0 {'9' * 5000} * * *", "hour field has 99999999999999999999: expected 0 to 23"),
        (f"*/{'7' * 400} * * * *", "minute field has step '77777777777777777777': expected 1 to 60"),
        ("0 */25 * * *", "hour field has step '25': expected 1 to 24"),
    ],
)
def test_invalid_expressions_name_the_field(expression: str, named: str) -> None:
    with pytest.raises(CronError, match=named):
        parse(expression)


def test_29_february_waits_for_a_leap_year() -> None:
    assert local(next_after("0 0 29 2 *", at("2026-03-01T00:00"), LISBON)) == "2028-02-29T00:00:00+00:00"


# -- against the clock, minute by minute --------------------------------------


@cache
def transitions(name: str) -> tuple[float, ...]:
    """The instants (to the hour) at which the zone's offset changes in 2026."""
    zone = ZoneInfo(name)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    found, previous = [], dt.datetime.fromtimestamp(start, zone).utcoffset()
    for hour in range(1, 365 * 24):
        offset = dt.datetime.fromtimestamp(start + hour * 3600, zone).utcoffset()
        if offset != previous:
            found.append(start + hour * 3600)
        previous = offset
    return tuple(found) or (start + 180 * 86400,)


def brute_next(cron: Cron, after: float, zone: ZoneInfo) -> float | None:
    """The first minute after ``after`` whose local time matches at its first
    occurrence, or the instant clocks jump over a matching local time; None
    within ``HORIZON``."""
    minute = (int(after) // 60) * 60
    previous = dt.datetime.fromtimestamp(minute - 60, zone).utcoffset()
    while minute <= after + HORIZON:
        now = dt.datetime.fromtimestamp(minute, zone)
        offset = now.utcoffset()
        assert offset is not None and previous is not None
        wall = now.replace(tzinfo=None)
        skipped = [wall - dt.timedelta(minutes=m + 1) for m in range((offset - previous) // dt.timedelta(minutes=1))]
        if minute > after and (any(cron.matches(w) for w in skipped) or (now.fold == 0 and cron.matches(wall))):
            return float(minute)
        previous = offset
        minute += 60
    return None


EXPRESSIONS = st.tuples(
    st.sampled_from(["*", "0", "30", "*/15", "0,30", "5-10", "45", "*/7"]),
    st.sampled_from(["*", "1", "2", "0-3", "2,3", "*/6", "9", "1-3/2", "23"]),
    st.sampled_from(["*", "*", "*", "1-15", "25-31", "5,6"]),
    st.sampled_from(["*", "*", "*", "mar,apr,oct,nov", "jan-jun"]),
    st.sampled_from(["*", "*", "sun", "mon-fri", "sat,sun"]),
).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(ZONES),
    which=st.integers(min_value=0, max_value=1),
    shift=st.floats(min_value=-3 * 86400, max_value=3 * 86400, allow_nan=False),
    expression=EXPRESSIONS,
)
def test_firings_agree_with_the_clock_around_offset_changes(
    name: str, which: int, shift: float, expression: str
) -> None:
    zone, cron = ZoneInfo(name), parse(expression)
    changes = transitions(name)
    instant = changes[which % len(changes)] + shift
    for _ in range(4):
        fired = next_after(cron, instant, zone)
        assert fired > instant
        expected = brute_next(cron, instant, zone)
        if expected is None:
            assert fired > instant + HORIZON
            return
        assert fired == expected, (expression, name, local(instant, zone), local(fired, zone))
        instant = fired


def walked(cron: Cron, after: float, until: float, zone: ZoneInfo) -> list[float]:
    """Every firing after ``after`` and at or before ``until``, one ``next_after`` at a time."""
    found, instant = [], next_after(cron, after, zone)
    while instant <= until:
        found.append(instant)
        instant = next_after(cron, instant, zone)
    return found


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(ZONES),
    which=st.integers(min_value=0, max_value=1),
    shift=st.floats(min_value=-3 * 86400, max_value=3 * 86400, allow_nan=False),
    span=st.floats(min_value=0, max_value=5 * 86400, allow_nan=False),
    expression=EXPRESSIONS,
)
def test_counting_and_the_latest_firing_agree_with_walking_every_one(
    name: str, which: int, shift: float, span: float, expression: str
) -> None:
    zone, cron = ZoneInfo(name), parse(expression)
    changes = transitions(name)
    after = changes[which % len(changes)] + shift
    until = after + span
    every = walked(cron, after, until, zone)
    assert count_between(cron, after, until, zone) == len(every), (expression, name, local(after, zone))
    expected = every[-1] if every else None
    assert latest_at_or_before(cron, until, zone, not_before=after + 1e-3) == expected


def test_a_year_of_minutes_is_counted_without_walking_them() -> None:
    start = at("2026-01-01T00:00")
    # 2026 in Lisbon: 365 days of 1440 minutes, less the hour skipped in March;
    # the hour lived twice in October fires once.
    assert count_between(parse("* * * * *"), start - 1, at("2027-01-01T00:00") - 1, LISBON) == 365 * 1440 - 60
    assert latest_at_or_before(parse("0 9 * * mon"), at("2026-12-31T12:00"), LISBON, not_before=start) == at(
        "2026-12-28T09:00"
    )
