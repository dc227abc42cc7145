"""Cron expressions read in a time zone's wall-clock time, right across
daylight-saving changes.

Five fields: minute, hour, day of month, month, day of week. Each takes
``*``, a number, a range ``a-b``, a list ``a,b``, and a step ``*/n`` or
``a-b/n``; months also take ``jan``..``dec`` and days of the week
``sun``..``sat`` (0 and 7 are both Sunday). As in every cron, when both the
day of month and the day of week are restricted, a day matching either fires.

A matching local time is fired exactly once:

- a local time that does not exist (the hour skipped when clocks go forward)
  fires at the first instant after the gap, the moment the clocks jump;
- a local time that happens twice (the hour repeated when clocks go back)
  fires at its first occurrence only.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

__all__ = ["Cron", "CronError", "count_between", "latest_at_or_before", "next_after", "parse"]

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
# (low, high, names whose index + low is their number)
_RANGES: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "minute": (0, 59, ()),
    "hour": (0, 23, ()),
    "day-of-month": (1, 31, ()),
    "month": (1, 12, _MONTHS),
    "day-of-week": (0, 7, _DAYS),
}
#: Longest wait between two days that match (29 February on a given weekday, past a skipped leap year).
_LONGEST_SEARCH_DAYS = 366 * 30
#: Digits a field's number may have; anything longer is out of every field's range.
_MAX_DIGITS = 4
# How far (hours) a zone's offset may move within a day, with margin: candidates
# earlier than this before ``after``'s wall time cannot come after it.
_OFFSET_MARGIN = dt.timedelta(hours=4)


class CronError(ValueError):
    """An expression that is not a valid five-field cron; the message names the field."""


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the values each field matches."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 is Sunday
    any_day: bool
    any_weekday: bool

    def matches_day(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_month, in_week = day.day in self.days, (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def matches(self, wall: dt.datetime) -> bool:
        """Whether a local wall time (its minute) matches."""
        return wall.minute in self.minutes and wall.hour in self.hours and self.matches_day(wall.date())


def _is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes "²", which ``int`` refuses."""
    return text.isascii() and text.isdigit()


def _number(text: str, name: str, expression: str) -> int:
    low, high, names = _RANGES[name]
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + (1 if name == "month" else 0)
    if not _is_number(text):
        hint = f" or a name ({', '.join(names)})" if names else ""
        raise CronError(f"cron {expression!r}: the {name} field has {text!r}: expected a number{hint}")
    value = int(text) if len(text) <= _MAX_DIGITS else high + 1
    if not low <= value <= high:
        raise CronError(f"cron {expression!r}: the {name} field has {text[:20]}: expected {low} to {high}")
    return value


def _field(text: str, name: str, expression: str) -> frozenset[int]:
    low, high, _ = _RANGES[name]
    values: set[int] = set()
    for part in text.split(","):
        span, slash, step_text = part.partition("/")
        step = 1
        if slash:
            span_size = high - low + 1
            if not _is_number(step_text) or len(step_text) > _MAX_DIGITS or not 1 <= int(step_text) <= span_size:
                raise CronError(
                    f"cron {expression!r}: the {name} field has step {step_text[:20]!r}: expected 1 to {span_size}"
                )
            step = int(step_text)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, end = span.partition("-")
            first, last = _number(start, name, expression), _number(end, name, expression)
            if first > last:
                raise CronError(f"cron {expression!r}: the {name} field has the range {span!r} backwards")
        elif span:
            first = _number(span, name, expression)
            last = high if slash else first
        else:
            raise CronError(f"cron {expression!r}: the {name} field has an empty part")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def parse(expression: str) -> Cron:
    """Parse ``expression``; raise ``CronError`` naming the field that is wrong."""
    parts = expression.split()
    if len(parts) != len(_FIELDS):
        raise CronError(
            f"cron {expression!r} has {len(parts)} fields: expected 5 (minute hour day-of-month month day-of-week)"
        )
    fields = {name: _field(text, name, expression) for name, text in zip(_FIELDS, parts, strict=True)}
    weekdays = frozenset(day % 7 for day in fields["day-of-week"])
    cron = Cron(
        expression=expression,
        minutes=fields["minute"],
        hours=fields["hour"],
        days=fields["day-of-month"],
        months=fields["month"],
        weekdays=weekdays,
        any_day=parts[2] == "*",
        any_weekday=parts[4] == "*",
    )
    if cron.any_weekday and not any(day <= _month_length(month) for month in cron.months for day in cron.days):
        raise CronError(f"cron {expression!r}: the day-of-month field names no day that its months have")
    return cron


def _month_length(month: int) -> int:
    return calendar.monthrange(2024, month)[1]  # a leap year: 29 February exists


def instant_of(wall: dt.datetime, zone: ZoneInfo) -> float:
    """The unix time at which the naive local ``wall`` time happens in ``zone``: its
    first occurrence when it happens twice, the end of the gap when it does not exist."""
    first = wall.replace(tzinfo=zone, fold=0).timestamp()
    second = wall.replace(tzinfo=zone, fold=1).timestamp()
    if first <= second:
        return first  # exists once (equal), or twice (the earlier is fold 0)
    # In a gap, fold 1 reads the wall time with the offset after the change and
    # lands before it; fold 0 with the offset before and lands after it. The
    # change is the first whole second in between whose offset is the later one.
    before = _offset(second, zone)
    low, high = int(second), int(first)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(middle, zone) == before:
            low = middle
        else:
            high = middle
    return float(high)


def _offset(instant: float, zone: ZoneInfo) -> dt.timedelta | None:
    return dt.datetime.fromtimestamp(instant, zone).utcoffset()


def next_after(expression: str | Cron, after: float, zone: ZoneInfo) -> float:
    """The first firing strictly after the unix time ``after``, the expression
    read in ``zone``'s wall-clock time (see the module's rules for times that
    do not exist or happen twice)."""
    cron = parse(expression) if isinstance(expression, str) else expression
    start = dt.datetime.fromtimestamp(after, zone).replace(tzinfo=None)
    earliest = start - _OFFSET_MARGIN
    day = earliest.date()
    for _ in range(_LONGEST_SEARCH_DAYS):
        if cron.matches_day(day):
            found = _first_in_day(cron, day, after, earliest, zone)
            if found is not None:
                return found
        day += dt.timedelta(days=1)
    raise CronError(f"cron {cron.expression!r} does not fire within {_LONGEST_SEARCH_DAYS // 366} years")


def _first_in_day(cron: Cron, day: dt.date, after: float, earliest: dt.datetime, zone: ZoneInfo) -> float | None:
    for hour in sorted(cron.hours):
        for minute in sorted(cron.minutes):
            wall = dt.datetime(day.year, day.month, day.day, hour, minute)
            if wall < earliest:
                continue
            instant = instant_of(wall, zone)
            if instant > after:
                return instant
    return None


def _day_instants(cron: Cron, day: dt.date, zone: ZoneInfo) -> list[float]:
    """The firings of the local ``day`` (a matching one), earliest first, each once."""
    walls = (dt.datetime(day.year, day.month, day.day, hour, minute) for hour in cron.hours for minute in cron.minutes)
    return sorted({instant_of(wall, zone) for wall in walls})


def latest_at_or_before(cron: Cron, at: float, zone: ZoneInfo, *, not_before: float) -> float | None:
    """The last firing at or before the unix time ``at`` and not before
    ``not_before``; None when there is none. Walks back a day at a time, so a
    long outage costs one step per local day, not one per occurrence."""
    day = dt.datetime.fromtimestamp(at, zone).date() + dt.timedelta(days=1)
    first_day = dt.datetime.fromtimestamp(not_before, zone).date() - dt.timedelta(days=1)
    while day >= first_day:
        if cron.matches_day(day):
            found = [instant for instant in _day_instants(cron, day, zone) if not_before <= instant <= at]
            if found:
                return found[-1]
        day -= dt.timedelta(days=1)
    return None


def count_between(cron: Cron, after: float, until: float, zone: ZoneInfo) -> int:
    """How many firings happen after the unix time ``after`` and at or before
    ``until``. A day without an offset change that lies wholly inside is counted
    by multiplication; only the days at the ends and those whose clocks change
    are read minute by minute."""
    day = dt.datetime.fromtimestamp(after, zone).date() - dt.timedelta(days=1)
    last_day = dt.datetime.fromtimestamp(until, zone).date() + dt.timedelta(days=1)
    whole_day = len(cron.hours) * len(cron.minutes)
    counted, seen = 0, set[float]()
    while day <= last_day:
        if cron.matches_day(day):
            start = instant_of(dt.datetime(day.year, day.month, day.day), zone)
            following = day + dt.timedelta(days=1)
            end = instant_of(dt.datetime(following.year, following.month, following.day), zone)
            plain = _offset(start - 1, zone) == _offset(end - 1, zone)
            if plain and after < start and end - 1 <= until:
                counted += whole_day
            else:
                seen.update(instant for instant in _day_instants(cron, day, zone) if after < instant <= until)
        day += dt.timedelta(days=1)
    return counted + len(seen)
