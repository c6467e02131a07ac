"""A pipeline's run history: table `pipelineruns`, partition = the pipeline's uid, one row per run, newest first
(row key = the sequence number subtracted from 10^9). A run is an export task (its current attempt's task id is
kept with every earlier attempt's); the row is written when the run is planned and when it ends."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.platform import storage, tablefilter
from shared.platform.times import iso, parse_iso

RUNS_TABLE = "pipelineruns"
_NEWEST_FIRST = 10 ** 9


def _key(sequence: int) -> str:
    return f"{_NEWEST_FIRST - sequence:09d}"


@dataclass
class RunRecord:
    uid: str  # the pipeline's
    sequence: int
    run: str
    periods: tuple[str, ...]
    late: bool
    planned: dt.datetime
    tasks: list[str] = field(default_factory=list)  # the export task of each attempt, the current one last
    state: str = "Queued"  # the current attempt's task state, once it has ended
    read_at: dt.datetime | None = None
    completed: dt.datetime | None = None
    records: int | None = None
    files: int | None = None
    bytes: int | None = None
    raw_bytes: int = 0  # of the raw store the run reads
    newest_acknowledged: dt.datetime | None = None  # of the records it delivers: the last append it reads
    error: str | None = None
    replaces: tuple[str, ...] = ()

    @property
    def lag_seconds(self) -> float | None:
        if self.completed is None or self.newest_acknowledged is None or self.state != "Succeeded":
            return None
        return round((self.completed - self.newest_acknowledged).total_seconds(), 3)

    def to_entity(self) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "PartitionKey": self.uid, "RowKey": _key(self.sequence), "sequence": self.sequence, "run": self.run,
            "periods": json.dumps(list(self.periods)), "late": self.late, "planned": iso(self.planned),
            "tasks": json.dumps(self.tasks), "state": self.state, "raw_bytes": self.raw_bytes,
            "replaces": json.dumps(list(self.replaces))}
        for name in ("read_at", "completed", "newest_acknowledged"):
            if getattr(self, name) is not None:
                entity[name] = iso(getattr(self, name))
        for name in ("records", "files", "bytes", "error"):
            if getattr(self, name) is not None:
                entity[name] = getattr(self, name)
        return entity

    @classmethod
    def from_entity(cls, entity: Any) -> RunRecord:
        def moment(name: str) -> dt.datetime | None:
            return parse_iso(entity.get(name))

        return cls(uid=entity["PartitionKey"], sequence=entity["sequence"], run=entity["run"],
                   periods=tuple(json.loads(entity["periods"])), late=entity["late"],
                   planned=moment("planned"), tasks=json.loads(entity["tasks"]),  # type: ignore[arg-type]
                   state=entity["state"], read_at=moment("read_at"), completed=moment("completed"),
                   records=entity.get("records"), files=entity.get("files"), bytes=entity.get("bytes"),
                   raw_bytes=entity.get("raw_bytes", 0), newest_acknowledged=moment("newest_acknowledged"),
                   error=entity.get("error"), replaces=tuple(json.loads(entity.get("replaces", "[]"))))

    def to_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "run": self.run, "sequence": self.sequence, "periods": list(self.periods),
            "delivery": "late" if self.late else "first", "taskId": self.tasks[-1] if self.tasks else None,
            "attempts": len(self.tasks), "state": self.state, "datePlanned": iso(self.planned),
            "readAt": iso(self.read_at), "dateCompleted": iso(self.completed), "recordCount": self.records,
            "fileCount": self.files, "bytes": self.bytes, "lagSeconds": self.lag_seconds,
            "errorDetails": self.error}
        if self.replaces:
            result["replaces"] = list(self.replaces)
        return {key: value for key, value in result.items() if value is not None}


def take_task_state(record: RunRecord, job: Any) -> None:
    """The run as its current attempt's export task (shared.tasks.jobs.ExportJob) is now."""
    record.state, record.read_at = job.state.value, job.date_started
    if job.finished:
        record.completed = job.date_completed
        record.records, record.files, record.bytes = job.record_count, len(job.files), job.bytes
        record.error = job.error_details


def save_run(record: RunRecord) -> None:
    storage.table(RUNS_TABLE).upsert_entity(record.to_entity())


def get_run(uid: str, sequence: int) -> RunRecord | None:
    try:
        return RunRecord.from_entity(storage.table(RUNS_TABLE).get_entity(uid, _key(sequence)))
    except ResourceNotFoundError:
        return None


def list_runs(uid: str, *, top: int, after: int | None = None) -> tuple[list[RunRecord], int | None]:
    """A page of the pipeline's runs, newest first, after the run numbered ``after``; and the number to give as
    ``after`` for the next page (None on the last)."""
    clauses = [tablefilter.eq("PartitionKey", uid)]
    if after is not None:
        clauses.append(tablefilter.compare("RowKey", "gt", _key(after)))
    rows = storage.table(RUNS_TABLE).query_entities(tablefilter.all_of(*clauses), results_per_page=top + 1)
    page: list[RunRecord] = []
    for entity in rows:
        if len(page) == top:
            return page, page[-1].sequence
        page.append(RunRecord.from_entity(entity))
    return page, None


def delete_runs(uid: str) -> None:
    table = storage.table(RUNS_TABLE)
    for entity in table.query_entities(tablefilter.eq("PartitionKey", uid), select=["PartitionKey", "RowKey"]):
        try:
            table.delete_entity(entity["PartitionKey"], entity["RowKey"])
        except ResourceNotFoundError:
            pass
