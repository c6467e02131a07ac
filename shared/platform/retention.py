"""How long an app keeps its raw records: the one place that says which days an app still has.

An app keeps its raw records for its own ``rawRetentionDays`` (its settings, shared.platform.apps) or, when it set
none, for RAW_RETENTION_DAYS (the service's default). Counted in whole UTC days: on day D an app that keeps N days
keeps the days from D - N to D, so ``oldest_day_kept`` is D - N. Exports and backfills that ask for an older day
are refused (``refuse_before``); the ApplyRetention timer (shared.pipelines.retention) removes what is older.
"""

from __future__ import annotations

import datetime as dt

from shared.platform import apps
from shared.platform.config import get_settings
from shared.platform.errors import AppNotFound, InvalidInput


def days_kept(app_id: str) -> int:
    """The days the app keeps raw records: its rawRetentionDays, or the service's default. An app that is no longer
    registered (its data stays until retention removes it) keeps the default."""
    try:
        days = apps.app_settings(apps.AppRef(*app_id.split("~", 1))).raw_retention_days
    except AppNotFound:
        days = None
    return days or get_settings().raw_retention_days


def oldest_day_kept(app_id: str, today: dt.date) -> dt.date:
    """The oldest UTC day whose raw records the app still keeps on ``today``."""
    return _oldest(today, days_kept(app_id))


def _oldest(today: dt.date, days: int) -> dt.date:
    return today - dt.timedelta(days=days)


def refuse_before(app_id: str, field: str, day: dt.date, today: dt.date) -> None:
    """InvalidInput naming ``field`` and the oldest day kept when ``day`` is older than the app keeps on ``today``."""
    days = days_kept(app_id)
    oldest = _oldest(today, days)
    if day < oldest:
        raise InvalidInput(f"{field} ({day.isoformat()}) is older than this app keeps raw records ({days} days): the "
                           f"oldest day kept is {oldest.isoformat()} (UTC); ask from {oldest.isoformat()} on")
