"""Scheduled exports: the operator's pipelines, declared in the EXPORT_SCHEDULES setting.

Each schedule exports one data type of one app, every day or every hour, into a container of the
destination storage (`DestinationStorage`). It is a pipeline (shared.pipelines) that the app cannot change: made
when the timer first sees the schedule, starting EXPORT_SCHEDULE_MAX_CATCHUP periods back, and run by the same
code as the pipelines the app makes through the API (late records included).

    [{"name": "daily-events", "app": "demo/game", "route": "events", "exportFormat": "CsvBlob",
      "cadence": "daily", "settleMinutes": 120, "container": "scheduled-exports"}]
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from dataclasses import dataclass

from shared.export.export_request import EXPORT_FORMATS
from shared.export.registry import DEFAULT_FORMAT, EXPORT_TYPES, HISTORICAL, ROUTES, SNAPSHOT
from shared.platform import apps
from shared.platform.config import SCHEDULES, ConfigError, get_settings
from shared.platform.errors import ServiceError
from shared.tasks import jobs

CADENCES = {"daily": dt.timedelta(days=1), "hourly": dt.timedelta(hours=1)}
# Feedback exports need a campaign or a window, so no schedule can give them.
SCHEDULED_ROUTES = tuple(route for route, spec in ROUTES.items() if spec.kind in (HISTORICAL, SNAPSHOT))
HOURLY_ROUTES = tuple(route for route in SCHEDULED_ROUTES if EXPORT_TYPES[ROUTES[route].export_type].hourly)
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}\Z")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    name: str
    app: apps.AppRef
    route: str
    export_format: str
    cadence: str
    settle: dt.timedelta
    container: str

    @property
    def step(self) -> dt.timedelta:
        return CADENCES[self.cadence]

    def due_periods(self, now: dt.datetime, limit: int) -> list[dt.datetime]:
        """Starts of the periods that have ended and settled, the newest ``limit`` of them, oldest first."""
        settled = now - self.settle
        if self.cadence == "daily":
            current = settled.replace(hour=0, minute=0, second=0, microsecond=0)
        else:
            current = settled.replace(minute=0, second=0, microsecond=0)
        return [current - self.step * n for n in range(limit, 0, -1)]

    def job_id(self, period: dt.datetime) -> str:
        """The period's job id: a UUIDv7 with the period's end as its time and a hash of schedule + period
        as the rest, so every instance derives the same id."""
        digest = hashlib.sha256(f"{self.name}|{period.isoformat()}".encode()).digest()
        return jobs.uuid7(period + self.step, digest)


def _schedule(doc: object, index: int, default_container: str) -> Schedule:
    where = f"{SCHEDULES}[{index}]"
    if not isinstance(doc, dict):
        raise ConfigError(f"{where} must be an object")
    unknown = sorted(set(doc) - {"name", "app", "route", "exportFormat", "cadence", "settleMinutes", "container"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]} is not a schedule field")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}.name must be 1-40 of a-z, 0-9 and -")
    app = doc.get("app")
    if not isinstance(app, str) or app.count("/") != 1:
        raise ConfigError(f"{where}.app must be \"<appCollection>/<appName>\"")
    try:
        ref = apps.app_ref(*app.split("/"))
    except ServiceError as error:
        raise ConfigError(f"{where}.app: {error.message}") from None
    route = doc.get("route")
    if route not in SCHEDULED_ROUTES:
        raise ConfigError(f"{where}.route must be one of {', '.join(SCHEDULED_ROUTES)}")
    export_format = doc.get("exportFormat", DEFAULT_FORMAT)
    if export_format not in EXPORT_FORMATS:
        raise ConfigError(f"{where}.exportFormat must be one of {', '.join(EXPORT_FORMATS)}")
    cadence = doc.get("cadence", "daily")
    if cadence not in CADENCES:
        raise ConfigError(f"{where}.cadence must be daily or hourly")
    if cadence == "hourly" and route not in HOURLY_ROUTES:
        raise ConfigError(f"{where}: hourly schedules are for {', '.join(HOURLY_ROUTES)}")
    settle = doc.get("settleMinutes", 60)
    if isinstance(settle, bool) or not isinstance(settle, int) or not 0 <= settle <= 7 * 24 * 60:
        raise ConfigError(f"{where}.settleMinutes must be a whole number of minutes from 0 to 10080")
    container = doc.get("container", default_container)
    if not isinstance(container, str) or not re.match(r"^[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]\Z", container):
        raise ConfigError(f"{where}.container must be a valid container name")
    return Schedule(name, ref, route, export_format, cadence, dt.timedelta(minutes=settle), container)


def load_schedules() -> list[Schedule]:
    settings = get_settings()
    if not settings.schedules_json:
        return []
    try:
        docs = json.loads(settings.schedules_json)
    except ValueError:
        raise ConfigError(f"{SCHEDULES} is not valid JSON") from None
    if not isinstance(docs, list):
        raise ConfigError(f"{SCHEDULES} must be a JSON array of schedules")
    schedules = [_schedule(doc, i, settings.schedule_container) for i, doc in enumerate(docs)]
    names = [s.name for s in schedules]
    if len(set(names)) != len(names):
        raise ConfigError(f"{SCHEDULES}: schedule names must be unique")
    return schedules
