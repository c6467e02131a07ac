"""Scheduled exports: jobs the app creates by itself, from the EXPORT_SCHEDULES setting.

Each schedule exports one data type of one app, every day or every hour, into a container of the
destination storage (`DestinationStorage`). A period is exported once it has ended and a settle delay has
passed (mobile data arrives late). The job id derives from the schedule and the period, so a second timer
firing or a second instance creates nothing, and periods missed while the app was down are caught up,
at most EXPORT_SCHEDULE_MAX_CATCHUP of them per schedule.

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
from typing import Any

from shared.export import destination
from shared.export.export_request import EXPORT_FORMATS, ExportRequest
from shared.export.registry import DEFAULT_FORMAT, EXPORT_TYPES, HISTORICAL, ROUTES, SNAPSHOT
from shared.platform import apps
from shared.platform.config import DESTINATION_STORAGE, SCHEDULES, ConfigError, get_settings
from shared.platform.errors import ServiceError
from shared.tasks import jobs, service

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


def _container_url(container: str, hours: int) -> str:
    connection = get_settings().destination_connection
    if not connection:
        raise ConfigError(f"{DESTINATION_STORAGE} is not set: scheduled exports need the destination storage")
    try:
        return destination.container_sas_url(connection, container, permission="cw",
                                             valid_for=dt.timedelta(hours=hours + 1))
    except ValueError as error:
        raise ConfigError(f"{DESTINATION_STORAGE}: {error}") from None


# Schedules already reported as naming an unregistered app: each is reported once per process.
_reported_unregistered: set = set()


def create_due_jobs(now: dt.datetime) -> list[str]:
    """Creates the scheduled jobs that are due and do not exist yet; returns their ids."""
    settings = get_settings()
    created = []
    for schedule in load_schedules():
        if not apps.is_registered(schedule.app):
            if schedule.name not in _reported_unregistered:
                _reported_unregistered.add(schedule.name)
                log.error("Schedule %s names app %s/%s, which is not registered: it creates no exports until the "
                          "app is registered (make app COLLECTION=%s APP=%s)", schedule.name, schedule.app.collection,
                          schedule.app.name, schedule.app.collection, schedule.app.name)
            continue
        for period in schedule.due_periods(now, settings.schedule_max_catchup):
            job_id = schedule.job_id(period)
            if jobs.find_job(schedule.app.id, job_id) is not None:
                continue
            request = _request(schedule, period, _container_url(schedule.container, settings.job_deadline_hours))
            try:
                service.submit_export(schedule.app, request, schedule=f"{schedule.name}@{period.isoformat()}",
                                      job_id=job_id)
            except jobs.JobChanged:
                continue  # another instance created this period's job first
            log.info("Schedule %s: created export %s for the period starting %s", schedule.name, job_id, period)
            created.append(job_id)
    return created


def _request(schedule: Schedule, period: dt.datetime, container_url: str) -> ExportRequest:
    route = ROUTES[schedule.route]
    values: dict[str, Any] = {"route": route, "container_url": container_url, "export_format": schedule.export_format,
              "description": f"scheduled: {schedule.name}"}
    if route.kind == HISTORICAL:
        values.update(start_date=period.date(), end_date=period.date())
        if schedule.cadence == "hourly":
            values["hour"] = period.hour
    return ExportRequest.of(**values)
