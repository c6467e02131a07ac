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

    @classmethod
    def of(cls, scope: ExportScope, **job: object) -> ExportSpec:
        return cls(**{name: getattr(scope, name) for name in SCOPE_FIELDS}, **job)  # type: ignore[arg-type]
