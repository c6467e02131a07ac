"""What one export is, as the pipeline sees it.

``ExportScope`` is what an export holds and how its files are written, as a checked request gives it; the
request (shared.export.export_request) builds it once and the job (shared.tasks.jobs) keeps it as it is.
``ExportSpec`` is the scope plus the facts of the job the pipeline needs (its app and id, its destination, when
it was created and started reading): the one value that planning, the engine, the registry's names and the
committer take. The pipeline reads nothing else of the job, so shared/export never reaches up into
shared/tasks."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.export.destination import SealedDestination

# The layouts of a historical export's files: all in the job's folder, or a folder per day (date=YYYY-MM-DD).
FLAT, HIVE = "flat", "hive"


@dataclass(frozen=True, kw_only=True)
class ExportScope:
    """What an export holds (type, range or campaign, the columns and names kept) and how it is written
    (format, layout)."""

    export_type: str
    export_format: str  # its default is the request's (shared.export.registry.DEFAULT_FORMAT)
    start_date: dt.date | None = None  # historical types: the UTC days, both included
    end_date: dt.date | None = None
    hour: int | None = None  # an hourly schedule's hour of its one day
    campaign_type: str | None = None  # push feedback: by campaign ids, or by a time window
    campaign_ids: tuple[int, ...] | None = None
    campaign_window_start: dt.datetime | None = None
    campaign_window_end: dt.datetime | None = None
    export_user_id: bool = False  # tokens: the userId column is written
    projection: tuple[str, ...] | None = None  # the request's fields: the columns written, when not all
    name_filter: Mapping[str, tuple[str, ...]] | None = None  # {"include": names} or {"exclude": names}
    layout: str = FLAT  # or HIVE: historical files under date=YYYY-MM-DD/ folders


SCOPE_FIELDS = tuple(field.name for field in dataclasses.fields(ExportScope))


def frozen(value: Any) -> Any:
    """A stored JSON value as a scope keeps it: arrays as tuples, within objects too."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return {key: frozen(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class RunTag:
    """The pipeline run a job is (shared.pipelines): its files, manifest and _SUCCESS go under the pipeline's
    folder, and its manifest names the run, the event-time periods it delivers and whether it is a late one."""

    pipeline: str  # the pipeline's name, which is its folder
    run: str  # "run-{sequence:06d}-{pipeline uid}", unique across a pipeline deleted and made again
    sequence: int
    periods: tuple[str, ...]  # labels: YYYY-MM-DD (daily) or YYYY-MM-DDTHH (hourly)
    late: bool
    replaces: tuple[str, ...] = ()  # runs whose files of these periods this one replaces (sessions)

    def to_json(self) -> dict:
        return {"pipeline": self.pipeline, "run": self.run, "sequence": self.sequence,
                "periods": list(self.periods), "late": self.late, "replaces": list(self.replaces)}

    @classmethod
    def from_json(cls, doc: Mapping) -> RunTag:
        return cls(pipeline=doc["pipeline"], run=doc["run"], sequence=doc["sequence"],
                   periods=tuple(doc["periods"]), late=doc["late"], replaces=tuple(doc.get("replaces", ())))

    @property
    def folder(self) -> str:
        """Where the run's manifest, schema and _SUCCESS go: a folder readers of the data files skip (`_`)."""
        return f"{self.pipeline}/_{self.run}"


@dataclass(frozen=True, kw_only=True)
class ExportSpec(ExportScope):
    """One export: its scope, of which app and job, where it goes (the destination, its SAS sealed), and what
    its manifest names of the job."""

    app_id: str
    job_id: str
    destination: SealedDestination
    date_created: dt.datetime
    read_at: dt.datetime | None = None  # when the job started reading the data (the manifest's readAt)
    schedule: str | None = None  # the schedule that made the job, if one did
    run: RunTag | None = None  # the pipeline run the job is, if it is one

    @classmethod
    def of(cls, scope: ExportScope, **job: object) -> ExportSpec:
        return cls(**{name: getattr(scope, name) for name in SCOPE_FIELDS}, **job)  # type: ignore[arg-type]
