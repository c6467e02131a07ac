"""Timer schedules as the Functions host reads them: 6-field NCRONTAB or a TimeSpan interval.

NCRONTAB fields: second minute hour day month day-of-week, each `*`, a value, a range `a-b`, a step `*/n`
or `a-b/n`, or a comma list; months and days may be named (jan, mon). When both day and day-of-week are
restricted, either matching is enough, as in cron. Times are UTC.
"""

from __future__ import annotations

import datetime as dt

from devhost.appmodel import parse_timespan

_MONTHS = {name: i + 1 for i, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_DAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}), ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day", 1, 31, {}),
    ("month", 1, 12, _MONTHS), ("day-of-week", 0, 6, _DAYS))


def _value(text: str, low: int, high: int, names: dict, field: str) -> int:
    number = names.get(text.lower()) if names else None
    if number is None:
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"{field} field: {text!r} is not a number") from None
    if field == "day-of-week" and number == 7:
        number = 0
    if not low <= number <= high:
        raise ValueError(f"{field} field: {number} is outside {low}-{high}")
    return number


def _parse_field(text: str, field: str, low: int, high: int, names: dict) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = _value(step_text, 1, high - low + 1 if high > low else 1, {}, field)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            start_text, end_text = part.split("-", 1)
            start, end = _value(start_text, low, high, names, field), _value(end_text, low, high, names, field)
            if start > end:
                raise ValueError(f"{field} field: range {part!r} runs backwards")
        else:
            start = _value(part, low, high, names, field)
            end = high if step > 1 else start
        values.update(range(start, end + 1, step))
    return values


class Schedule:
    """A parsed timer schedule; ``next_after(t)`` is the first occurrence strictly after t."""

    def __init__(self, expression: str) -> None:
        self.expression = expression.strip()
        self.interval: dt.timedelta | None = None
        fields = self.expression.split()
        if len(fields) == 1 and ":" in self.expression:
            seconds = parse_timespan(self.expression)
            if seconds <= 0:
                raise ValueError(f"schedule {expression!r}: an interval must be positive")
            self.interval = dt.timedelta(seconds=seconds)
            return
        if len(fields) == 5:
            fields = ["0"] + fields
        if len(fields) != 6:
            raise ValueError(f"schedule {expression!r} is neither a 6-field NCRONTAB expression nor hh:mm:ss")
        parsed: list[set[int]] = []
        for text, (field, low, high, names) in zip(fields, _FIELDS):
            parsed.append(_parse_field(text, field, low, high, names))
        self.seconds, self.minutes, self.hours, self.days, self.months, self.weekdays = parsed
        self._day_restricted = fields[3] != "*"
        self._weekday_restricted = fields[5] != "*"

    def _day_matches(self, moment: dt.datetime) -> bool:
        in_days = moment.day in self.days
        in_weekdays = (moment.isoweekday() % 7) in self.weekdays
        if self._day_restricted and self._weekday_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, after: dt.datetime) -> dt.datetime:
        if self.interval is not None:
            return after + self.interval
        moment = after.replace(microsecond=0) + dt.timedelta(seconds=1)
        limit = after + dt.timedelta(days=366 * 5)
        while moment <= limit:
            if moment.month not in self.months:
                year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
                moment = moment.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
            elif not self._day_matches(moment):
                moment = (moment + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0)
            elif moment.hour not in self.hours:
                moment = (moment + dt.timedelta(hours=1)).replace(minute=0, second=0)
            elif moment.minute not in self.minutes:
                moment = (moment + dt.timedelta(minutes=1)).replace(second=0)
            elif moment.second not in self.seconds:
                moment += dt.timedelta(seconds=1)
            else:
                return moment
        raise ValueError(f"schedule {self.expression!r} never fires")
