"""Event-time periods: a pipeline delivers every record under the UTC day (daily) or hour (hourly) it belongs to.

A period is named by its label, `YYYY-MM-DD` or `YYYY-MM-DDTHH`, which is also its folder in the flat layout."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

DAILY, HOURLY = "daily", "hourly"
CADENCES = {DAILY: dt.timedelta(days=1), HOURLY: dt.timedelta(hours=1)}


@dataclass(frozen=True, order=True)
class Period:
    start: dt.datetime
    cadence: str

    @property
    def end(self) -> dt.datetime:
        return self.start + CADENCES[self.cadence]

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m-%d}" if self.cadence == DAILY else f"{self.start:%Y-%m-%dT%H}"

    @property
    def day(self) -> dt.date:
        return self.start.date()

    @property
    def hour(self) -> int | None:
        return self.start.hour if self.cadence == HOURLY else None

    def next(self) -> Period:
        return Period(self.end, self.cadence)

    def due(self, settle: dt.timedelta) -> dt.datetime:
        """When its first run may start: once it has ended and the settle delay has passed."""
        return self.end + settle


def period_of(moment: dt.datetime, cadence: str) -> Period:
    """The period holding ``moment``."""
    moment = moment.astimezone(dt.UTC)
    if cadence == DAILY:
        return Period(moment.replace(hour=0, minute=0, second=0, microsecond=0), cadence)
    return Period(moment.replace(minute=0, second=0, microsecond=0), cadence)


def parse_label(label: str, cadence: str) -> Period:
    form = "%Y-%m-%d" if cadence == DAILY else "%Y-%m-%dT%H"
    return Period(dt.datetime.strptime(label, form).replace(tzinfo=dt.UTC), cadence)
