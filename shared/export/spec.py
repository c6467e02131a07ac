"""What one export is, as the pipeline sees it: a narrow, frozen description that the job (shared.tasks.jobs)
holds and hands to planning, the engine, the registry's names and the committer. The pipeline reads nothing
else of the job, so shared/export never reaches up into shared/tasks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from shared.export.destination import SealedDestination


@dataclass(frozen=True)
class ExportSpec:
    """One export: of which app and job, what (type, range or campaign, the columns and names kept), how
    (format, layout) and where (the destination, its SAS sealed)."""

    app_id: str
    job_id: str
    export_type: str
    export_format: str
    destination: SealedDestination
    date_created: dt.datetime
    read_at: dt.datetime | None = None  # when the job started reading the data (the manifest's readAt)
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
    layout: str = "flat"  # or "hive": historical files under date=YYYY-MM-DD/ folders
    schedule: str | None = None  # the schedule that made the job, if one did
