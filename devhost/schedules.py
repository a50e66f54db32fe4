"""Timer-trigger schedules: six-field NCRONTAB and TimeSpan (DEVELOPMENT TOOL).

No cron library is installed (and the project's requirements are not devhost's to change), so
this is a small parser for the forms the Functions docs list for ``schedule``
(learn.microsoft.com "Timer trigger for Azure Functions", NCRONTAB expressions):
``{second} {minute} {hour} {day} {month} {day-of-week}`` where each field is ``*``, a value,
a range ``a-b``, a list ``a,b,c``, or a step ``*/n`` / ``a-b/n`` / ``a/n``; months and weekdays
also take three-letter English names (``Jan``, ``Mon``; Sunday is 0, 7 is Sunday too). A day must
match BOTH the day-of-month and the day-of-week field: NCrontab (which the host uses) looks for
the next day of the month and then checks its weekday, unlike Vixie cron's "either". Times are
UTC, the host's default without WEBSITE_TIME_ZONE.

A TimeSpan ``hh:mm:ss`` (or ``d.hh:mm:ss``) means "every interval", the first occurrence one
interval after the listener starts (the host's ConstantSchedule).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import FrozenSet, List, Optional, Union

_MONTHS = {name: i + 1 for i, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_DAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (low, high, names) per field: second, minute, hour, day, month, day-of-week.
_FIELDS = [(0, 59, {}), (0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, _MONTHS), (0, 7, _DAYS)]
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")


class ScheduleError(ValueError):
    """The schedule is neither a six-field NCRONTAB expression nor a TimeSpan."""


def _value(token: str, names: dict, low: int, high: int, expr: str) -> int:
    text = token.lower()
    value = names[text] if text in names else None
    if value is None:
        if not text.isdigit():
            raise ScheduleError(f"{expr!r}: {token!r} is not a number")
        value = int(text)
    if not low <= value <= high:
        raise ScheduleError(f"{expr!r}: {value} is outside {low}-{high}")
    return value


def _parse_field(text: str, low: int, high: int, names: dict, expr: str) -> FrozenSet[int]:
    values = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{expr!r}: bad step {part!r}")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(a, names, low, high, expr), _value(b, names, low, high, expr)
            if start > end:
                raise ScheduleError(f"{expr!r}: empty range {base!r}")
        else:
            start = _value(base, names, low, high, expr)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    seconds: FrozenSet[int]
    minutes: FrozenSet[int]
    hours: FrozenSet[int]
    days: FrozenSet[int]
    months: FrozenSet[int]
    weekdays: FrozenSet[int]

    def _day_matches(self, day: datetime) -> bool:
        return day.day in self.days and (day.isoweekday() % 7) in self.weekdays

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (UTC, whole seconds)."""
        t = moment.astimezone(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
        for _ in range(366 * 5):  # at most five years of days
            if t.month in self.months and self._day_matches(t):
                for hour in sorted(h for h in self.hours if h >= t.hour):
                    start_minute = t.minute if hour == t.hour else 0
                    for minute in sorted(m for m in self.minutes if m >= start_minute):
                        start_second = t.second if (hour, minute) == (t.hour, t.minute) else 0
                        for second in sorted(s for s in self.seconds if s >= start_second):
                            return t.replace(hour=hour, minute=minute, second=second)
            t = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0)
        raise ScheduleError(f"{self.expression!r} never occurs")


@dataclass(frozen=True)
class IntervalSchedule:
    expression: str
    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment.astimezone(timezone.utc) + self.interval


Schedule = Union[CronSchedule, IntervalSchedule]


def parse_schedule(expression: str) -> Schedule:
    """Parse a timer trigger's ``schedule``; raises ScheduleError like the host would refuse it."""
    text = (expression or "").strip()
    m = _TIMESPAN.match(text)
    if m:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if interval <= timedelta(0):
            raise ScheduleError(f"{expression!r}: the interval must be positive")
        return IntervalSchedule(text, interval)
    fields: List[str] = text.split()
    if len(fields) != 6:
        raise ScheduleError(f"{expression!r} is not a six-field NCRONTAB expression "
                            f"(second minute hour day month day-of-week) nor a TimeSpan")
    parsed = [_parse_field(f, lo, hi, names, text) for f, (lo, hi, names) in zip(fields, _FIELDS)]
    weekdays = frozenset(d % 7 for d in parsed[5])
    return CronSchedule(text, parsed[0], parsed[1], parsed[2], parsed[3], parsed[4], weekdays)


def next_occurrence(expression: str, after: datetime) -> Optional[datetime]:
    return parse_schedule(expression).next_after(after)
