"""Export jobs: the model, its states, and its store in Azure Table storage.

Table `exportjobs` holds one row per job, partition = app id, row key = job id. Job ids are time-ordered
(a UUIDv7 shape), so the partition reads oldest first. Table `exportjobsbydate` holds, per job, a key-only
row whose row key sorts newest first, so both listing orders page on the server with continuation keys
and never load an app's jobs into memory. Table `exportjobsqueued` lists the jobs not started yet, across
apps, for the StartExport safety net. Every change to a job row is conditional on its ETag.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.export.destination import SealedDestination
from shared.export.spec import SCOPE_FIELDS, ExportScope, ExportSpec, RunTag, frozen
from shared.platform import storage, tablefilter
from shared.platform.errors import TaskNotFound
from shared.platform.times import iso, iso_text, parse_iso, utcnow

JOBS_TABLE = "exportjobs"
NEWEST_FIRST_TABLE = "exportjobsbydate"
QUEUED_TABLE = "exportjobsqueued"
QUEUED_PARTITION = "queued"

class JobState(StrEnum):
    """A job's state, as the contract's taskStatus names it; it only moves forward (_NEXT_STATES)."""

    QUEUED = "Queued"
    STARTED = "Started"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


QUEUED, STARTED, SUCCEEDED, FAILED = JobState.QUEUED, JobState.STARTED, JobState.SUCCEEDED, JobState.FAILED
STATES = tuple(JobState)
_NEXT_STATES = {QUEUED: {STARTED, FAILED}, STARTED: {SUCCEEDED, FAILED}, SUCCEEDED: set(), FAILED: set()}
_MS_MAX = (1 << 48) - 1


class JobChanged(Exception):
    """Another instance changed the job since it was read; re-read and decide again."""


class InvalidTransition(Exception):
    """A state change that would move a job backwards."""


def uuid7(moment: dt.datetime, rest: bytes) -> str:
    """A UUIDv7: 48 bits of milliseconds, then the bits of ``rest`` (10 bytes); sorts by ``moment``."""
    millis = int(moment.timestamp() * 1000) & _MS_MAX
    value = (millis << 80) | int.from_bytes(rest[:10], "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def new_job_id(now: dt.datetime) -> str:
    """A random job id that sorts by creation time."""
    return uuid7(now, os.urandom(10))


def _newest_first_key(job_id: str) -> str:
    millis = int(job_id.replace("-", "")[:12], 16)
    return f"{_MS_MAX - millis:012x}{job_id}"


@dataclass
class ExportJob:
    """An export task: its identity, what it exports (``scope``, as its request gave it), where, and its life."""

    app_id: str
    id: str
    route: str
    scope: ExportScope
    container_url: str
    sealed_sas: str
    sas_expires: dt.datetime
    date_created: dt.datetime
    description: str = ""
    state: JobState = QUEUED
    date_started: dt.datetime | None = None
    date_completed: dt.datetime | None = None
    error_details: str | None = None
    parts_total: int | None = None
    parts_done: int = 0
    record_count: int | None = None
    bytes: int | None = None
    files: list[dict] = field(default_factory=list)
    schedule: str | None = None
    run: RunTag | None = None  # the pipeline run this job is (shared.pipelines), if it is one
    committing: bool = False  # set by the monitor before it commits: from then on the job can only succeed or fail
    trace_parent: str | None = None  # W3C traceparent of the job's trace: every message of the job carries it
    etag: str | None = field(default=None, compare=False)

    def move_to(self, state: JobState, *, now: dt.datetime | None = None, error: str | None = None) -> None:
        if state not in _NEXT_STATES[self.state]:
            raise InvalidTransition(f"job {self.id} cannot go from {self.state} to {state}")
        now = now or utcnow()
        self.state = state
        if state == STARTED:
            self.date_started = now
        if state in (SUCCEEDED, FAILED):
            self.date_completed = now
        if state == FAILED:
            self.error_details = error or "the export failed"

    @property
    def finished(self) -> bool:
        return self.state in (SUCCEEDED, FAILED)

    @property
    def destination(self) -> SealedDestination:
        return SealedDestination(url=self.container_url, sealed_sas=self.sealed_sas, expires=self.sas_expires)

    @property
    def spec(self) -> ExportSpec:
        """The export as the pipeline takes it (shared.export.spec)."""
        return ExportSpec.of(self.scope, app_id=self.app_id, job_id=self.id, destination=self.destination,
                             date_created=self.date_created, read_at=self.date_started, schedule=self.schedule,
                             run=self.run)

    @property
    def export_type(self) -> str:
        return self.scope.export_type

    @property
    def export_format(self) -> str:
        return self.scope.export_format

    def to_result(self) -> dict:
        """The exportTaskResult of the API, with the extra fields clients may ignore."""
        scope = self.scope
        result: dict[str, Any] = {
            "id": self.id,
            "description": self.description,
            "state": self.state,
            "dateCreated": iso(self.date_created),
            "dateCompleted": iso(self.date_completed),
            "exportType": self.export_type,
            "errorDetails": self.error_details,
            "exportFormat": self.export_format,
            "containerUrl": self.container_url,
        }
        if scope.start_date is not None and scope.end_date is not None:
            result["startDate"] = scope.start_date.isoformat()
            result["endDate"] = scope.end_date.isoformat()
        if scope.hour is not None:
            result["hour"] = scope.hour
        if scope.campaign_type is not None:
            result["campaignType"] = scope.campaign_type
        if scope.campaign_ids is not None:
            result["campaignIds"] = list(scope.campaign_ids)
        if scope.campaign_window_start is not None:
            result["campaignWindowStart"] = iso(scope.campaign_window_start)
            result["campaignWindowEnd"] = iso(scope.campaign_window_end)
        if self.route == "tokens":
            result["exportOptions"] = {"exportUserId": scope.export_user_id}
        if scope.layout != "flat":
            result["layout"] = scope.layout
        if scope.projection is not None:
            result["fields"] = list(scope.projection)
        if scope.name_filter is not None:
            result["names"] = {key: list(names) for key, names in scope.name_filter.items()}
        if self.run is not None:
            result["pipeline"] = {"name": self.run.pipeline, "run": self.run.run, "periods": list(self.run.periods),
                                  "late": self.run.late}
        result["progress"] = {"partsDone": self.parts_done}
        if self.parts_total is not None:
            result["progress"]["partsTotal"] = self.parts_total
        if self.record_count is not None:
            result["recordCount"] = self.record_count
            result["bytes"] = self.bytes
            result["files"] = list(self.files)
        # The contract types dateCompleted and errorDetails as strings: a key is left out until it has a value.
        return {key: value for key, value in result.items() if value is not None}


_DATETIMES = {"sas_expires", "date_created", "date_started", "date_completed", "campaign_window_start",
              "campaign_window_end"}
_DATES = {"start_date", "end_date"}
_JSON = {"campaign_ids", "files", "projection", "name_filter"}


def _to_entity(job: ExportJob) -> dict:
    """The job's table row: the scope's fields are columns of the row, as the job's own are."""
    entity = {"PartitionKey": job.app_id, "RowKey": job.id}
    columns = {name: getattr(job, name) for name in _JOB_COLUMNS}
    columns.update({name: getattr(job.scope, name) for name in SCOPE_FIELDS})
    for name, value in columns.items():
        if value is None:
            continue
        if name == "state":
            value = value.value  # the table keeps the contract's text
        elif name in _DATETIMES:
            value = iso(value)
        elif name in _DATES:
            value = value.isoformat()
        elif name in _JSON:
            value = json.dumps(value, separators=(",", ":"))
        elif name == "run":
            value = json.dumps(value.to_json(), separators=(",", ":"))
        entity[name] = value
    return entity


# The job's own columns (its scope's are SCOPE_FIELDS).
_JOB_COLUMNS = tuple(item.name for item in fields(ExportJob) if item.name not in ("app_id", "id", "etag", "scope"))


def from_entity(entity) -> ExportJob:
    values: dict[str, Any] = {"app_id": entity["PartitionKey"], "id": entity["RowKey"]}
    scope: dict[str, Any] = {}
    for name in _JOB_COLUMNS + SCOPE_FIELDS:
        if name not in entity:
            continue
        value = entity[name]
        if name == "state":
            value = JobState(value)
        elif name in _DATETIMES:
            value = parse_iso(value)
        elif name in _DATES:
            value = dt.date.fromisoformat(value)
        elif name in _JSON:
            value = json.loads(value)
            if name in SCOPE_FIELDS:
                value = frozen(value)
        elif name == "run":
            value = RunTag.from_json(json.loads(value))
        (scope if name in SCOPE_FIELDS else values)[name] = value
    job = ExportJob(scope=ExportScope(**scope), **values)
    job.etag = entity.metadata.get("etag")
    return job


def create_job(job: ExportJob) -> ExportJob:
    """Stores a new job. Index rows go first: a crash between writes leaves an index row that points at no
    job (skipped by listings, removed by the safety net), never a job that listings cannot find."""
    storage.table(QUEUED_TABLE).upsert_entity(
        {"PartitionKey": QUEUED_PARTITION, "RowKey": f"{job.app_id}|{job.id}", "app_id": job.app_id,
         "job_id": job.id, "created": iso(job.date_created)})
    storage.table(NEWEST_FIRST_TABLE).upsert_entity(
        {"PartitionKey": job.app_id, "RowKey": _newest_first_key(job.id), "job_id": job.id})
    try:
        metadata = storage.table(JOBS_TABLE).create_entity(_to_entity(job))
    except ResourceExistsError:
        raise JobChanged(f"job {job.id} already exists") from None
    job.etag = metadata.get("etag")
    return job


def get_job(app_id: str, job_id: str) -> ExportJob:
    try:
        return from_entity(storage.table(JOBS_TABLE).get_entity(app_id, job_id))
    except ResourceNotFoundError:
        raise TaskNotFound(f"export task {job_id!r} does not exist for this app") from None


def jobs_in_format(app_id: str, export_format: str) -> Iterator[ExportJob]:
    """The app's jobs (pipelines' runs too) that export in ``export_format``, oldest first."""
    rows = storage.table(JOBS_TABLE).query_entities(
        tablefilter.all_of(tablefilter.eq("PartitionKey", app_id), tablefilter.eq("export_format", export_format)))
    for row in rows:
        yield from_entity(row)


def find_job(app_id: str, job_id: str) -> ExportJob | None:
    try:
        return get_job(app_id, job_id)
    except TaskNotFound:
        return None


def save_job(job: ExportJob) -> ExportJob:
    """Writes the job if nobody changed it since it was read; raises JobChanged otherwise."""
    try:
        metadata = storage.table(JOBS_TABLE).update_entity(
            _to_entity(job), mode=UpdateMode.REPLACE, etag=job.etag, match_condition=MatchConditions.IfNotModified)
    except (ResourceModifiedError, ResourceNotFoundError):
        raise JobChanged(f"job {job.id} changed since it was read") from None
    job.etag = metadata.get("etag")
    if job.state != QUEUED:
        clear_queued(job)
    return job


def clear_queued(job: ExportJob) -> None:
    try:
        storage.table(QUEUED_TABLE).delete_entity(QUEUED_PARTITION, f"{job.app_id}|{job.id}")
    except ResourceNotFoundError:
        pass


def queued_jobs(created_before: dt.datetime) -> Iterator[tuple[str, str]]:
    """(app id, job id) of jobs not yet started that were created before the given time."""
    rows = storage.table(QUEUED_TABLE).query_entities(
        tablefilter.all_of(tablefilter.eq("PartitionKey", QUEUED_PARTITION),
                           tablefilter.compare("created", "lt", iso_text(created_before))),
        select=["app_id", "job_id"])
    for row in rows:
        yield row["app_id"], row["job_id"]


def forget_queued(app_id: str, job_id: str) -> None:
    try:
        storage.table(QUEUED_TABLE).delete_entity(QUEUED_PARTITION, f"{app_id}|{job_id}")
    except ResourceNotFoundError:
        pass
