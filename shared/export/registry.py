"""What can be exported: every export type is one entry (its routes, columns, planner and row source), and every
file format is one entry (its encoder, file extension and content type).

The API's routes, the request checks, the planner, the engine, the schedules, the task list's $filter and the
OpenAPI document all read these tables, so adding a type or a format is one entry here plus its tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Tuple

from shared.export import exportformats, planning, sources
from shared.export.planning import WorkItem

if TYPE_CHECKING:
    from shared.tasks.jobs import ExportJob

# The kinds of export route: what a request gives to say what to export.
HISTORICAL, SNAPSHOT, FEEDBACK_BY_DATE, FEEDBACK_BY_CAMPAIGN = "historical", "snapshot", "byDate", "byCampaign"
_KIND_FIELDS: Dict[str, Tuple[str, ...]] = {
    HISTORICAL: ("startDate", "endDate"),
    SNAPSHOT: (),
    FEEDBACK_BY_DATE: ("campaignType", "campaignWindowStart", "campaignWindowEnd"),
    FEEDBACK_BY_CAMPAIGN: ("campaignType", "campaignIds"),
}
COMMON_FIELDS = ("containerUrl", "description", "exportFormat")


@dataclass(frozen=True)
class ExportRoute:
    """``POST exportTasks/{route}``: the export type it creates and the kind of range its body gives."""

    route: str
    export_type: str
    kind: str
    options: Tuple[str, ...] = ()  # the keys its body's exportOptions object may hold

    @property
    def fields(self) -> Tuple[str, ...]:
        return COMMON_FIELDS + _KIND_FIELDS[self.kind] + (("exportOptions",) if self.options else ())


RowSource = Callable[["ExportJob", WorkItem], Iterator[List[dict]]]
Planner = Callable[["ExportJob", planning.FileNames], List[WorkItem]]


@dataclass(frozen=True)
class ExportType:
    """One kind of data an app can export."""

    name: str  # the contract's exportType
    columns: Tuple[str, ...]  # in file order; a column added later goes at the end
    routes: Tuple[ExportRoute, ...]
    plan: Planner  # the job's work items (each writes one file)
    rows: RowSource  # batches of one item's rows, in file order
    # the raw store's record type, for types kept as raw JSON Lines in the export's row shape
    raw_record_type: Optional[str] = None
    # a column written only when the request's exportOptions.exportUserId is true (the tokens' userId)
    user_id_column: Optional[str] = None
    hourly: bool = False  # schedules may export it hour by hour

    def columns_for(self, *, export_user_id: bool = True) -> Tuple[str, ...]:
        if self.user_id_column and not export_user_id:
            return tuple(column for column in self.columns if column != self.user_id_column)
        return self.columns


def _raw_rows(job: "ExportJob", item: WorkItem) -> Iterator[List[dict]]:
    return sources.rows(item.sources)


def _feedback_rows(job: "ExportJob", item: WorkItem) -> Iterator[List[dict]]:
    start, end = job.campaign_window_start, job.campaign_window_end
    return sources.feedback(job.app_id, campaign_type=job.campaign_type or "", campaign_ids=job.campaign_ids,
                            window=(start, end) if start is not None and end is not None else None)


def _historical(name: str, route: str, columns: Tuple[str, ...]) -> ExportType:
    return ExportType(name, columns, (ExportRoute(route, name, HISTORICAL),), planning.raw_partitions, _raw_rows,
                      raw_record_type=name.lower(), hourly=True)


def _snapshot(name: str, route: str, columns: Tuple[str, ...], rows: RowSource, **options) -> ExportType:
    route_options = ("exportUserId",) if options.get("user_id_column") else ()
    return ExportType(name, columns, (ExportRoute(route, name, SNAPSHOT, route_options),), planning.single_item,
                      rows, **options)


EXPORT_TYPES: Dict[str, ExportType] = {export_type.name: export_type for export_type in (
    _historical("Activity", "activities", ("deviceId", "userId", "sessionId", "name", "start", "end", "extras")),
    ExportType("Session", ("deviceId", "userId", "sessionId", "start", "end", "duration", "activityCount",
                           "firstActivity", "lastActivity"),
               (ExportRoute("sessions", "Session", HISTORICAL),), planning.session_days,
               lambda job, item: sources.batched(sources.sessions(item.before, item.sources, item.after))),
    _historical("Event", "events", ("deviceId", "userId", "sessionId", "jobId", "name", "timestamp", "extras")),
    _historical("Job", "jobs", ("deviceId", "userId", "name", "start", "end", "extras")),
    _historical("Error", "errors", ("deviceId", "userId", "sessionId", "jobId", "name", "timestamp", "extras")),
    _historical("Crash", "crashes", ("deviceId", "userId", "timestamp", "crashType", "message", "stack")),
    _snapshot("Tag", "tags", ("deviceId", "name", "value"), lambda job, item: sources.tags(job.app_id)),
    _snapshot("Device", "devices", ("deviceId", "firstSeen", "lastSeen", "nativePushEnabled", "info", "location",
                                    "appInfo"), lambda job, item: sources.devices(job.app_id)),
    _snapshot("Token", "tokens", ("deviceId", "userId", "token", "platform", "updated"),
              lambda job, item: sources.tokens(job.app_id), user_id_column="userId"),
    ExportType("Push", ("deviceId", "campaignId", "campaignType", "action", "timestamp"),
               (ExportRoute("feedbackByDate", "Push", FEEDBACK_BY_DATE),
                ExportRoute("feedbackByCampaign", "Push", FEEDBACK_BY_CAMPAIGN)),
               planning.single_item, _feedback_rows),
)}

ROUTES: Dict[str, ExportRoute] = {route.route: route for export_type in EXPORT_TYPES.values()
                                  for route in export_type.routes}


@dataclass(frozen=True)
class ExportFormat:
    """A result file format."""

    name: str  # the contract's exportFormat
    extension: str  # of each result file
    content_type: str  # of each result file
    compression: str  # as the manifest names it
    encoder: Callable[[Tuple[str, ...]], exportformats.TextEncoder]
    # raw partitions are already files of this format (gzip JSON Lines): a historical export copies their bytes
    copies_raw: bool = False


EXPORT_FORMATS: Dict[str, ExportFormat] = {export_format.name: export_format for export_format in (
    ExportFormat("JsonBlob", "jsonl.gz", "application/gzip", "gzip", exportformats.JsonLinesEncoder, copies_raw=True),
    ExportFormat("CsvBlob", "csv.gz", "application/gzip", "gzip", exportformats.CsvEncoder),
)}
DEFAULT_FORMAT = "JsonBlob"


def export_type(name: str) -> ExportType:
    return EXPORT_TYPES[name]


def export_format(name: str) -> ExportFormat:
    return EXPORT_FORMATS[name]


def file_name(job: "ExportJob", index: int) -> str:
    return f"{job.export_type}/{job.id}/part-{index:05d}.{EXPORT_FORMATS[job.export_format].extension}"


def manifest_name(job: "ExportJob") -> str:
    return f"{job.export_type}/{job.id}/manifest.json"
