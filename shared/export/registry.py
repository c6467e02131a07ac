"""What can be exported: every export type is one entry (its routes, columns, planner and row source), and every
file format is one entry (its encoder, file extension and content type).

The API's routes, the request checks, the planner, the engine, the schedules, the task list's $filter and the
OpenAPI document all read these tables, so adding a type or a format is one entry here plus its tests.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from shared.export import convert, exportformats, jsonreader, parquet, planning, schemas, snapshotfold, sources
from shared.export.exportformats import RowFile
from shared.export.planning import WorkItem
from shared.export.rows import RowSpec, parse_lines
from shared.export.schemas import BOOLEAN, INTEGER, JSON, NUMBER, TIME, Column
from shared.export.spec import FLAT, HIVE, ExportScope, ExportSpec, RunTag

# The kinds of export route: what a request gives to say what to export.
HISTORICAL, SNAPSHOT, FEEDBACK_BY_DATE, FEEDBACK_BY_CAMPAIGN = "historical", "snapshot", "byDate", "byCampaign"
_KIND_FIELDS: dict[str, tuple[str, ...]] = {
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
    options: tuple[str, ...] = ()  # the keys its body's exportOptions object may hold

    @property
    def fields(self) -> tuple[str, ...]:
        return COMMON_FIELDS + _KIND_FIELDS[self.kind] + (("exportOptions",) if self.options else ()) + self.extensions

    @property
    def extensions(self) -> tuple[str, ...]:
        """The fields this service adds to the contract for this route (old clients never send them)."""
        return (("fields",) + (("names",) if EXPORT_TYPES[self.export_type].filters_names else ())
                + (("layout",) if self.kind == HISTORICAL else ()))


RowSource = Callable[[ExportSpec, WorkItem], Iterator[list[dict]]]
TextSource = Callable[[ExportSpec, WorkItem], sources.RowText]
Planner = Callable[[ExportSpec, planning.FileNames], list[WorkItem]]


@dataclass(frozen=True)
class ExportType:
    """One kind of data an app can export."""

    name: str  # the contract's exportType
    schema: tuple[Column, ...]  # in file order; a column added later goes at the end
    routes: tuple[ExportRoute, ...]
    plan: Planner  # the job's work items (each writes one file)
    # an item's rows as JSON Lines text in the export's row shape, which the formats convert (most types) ...
    text: TextSource | None = None
    # ... or as batches of row dicts, in file order (sessions, computed a row at a time)
    rows: RowSource | None = None
    # the raw store's record type, for types kept as raw JSON Lines in the export's row shape
    raw_record_type: str | None = None
    # a column written only when the request's exportOptions.exportUserId is true (the tokens' userId)
    user_id_column: str | None = None
    hourly: bool = False  # schedules may export it hour by hour

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.schema)

    @property
    def filters_names(self) -> bool:
        """Its rows have a name that an export may include or exclude (activities, events, errors, jobs)."""
        return self.raw_record_type is not None and "name" in self.columns

    def row_batches(self, job: ExportSpec, item: WorkItem) -> Iterator[list[dict]]:
        """Batches of an item's rows as dicts, in file order."""
        if self.rows is not None:
            return self.rows(job, item)
        assert self.text is not None
        return (parse_lines(run) for run in self.text(job, item).runs())

    def columns_for(self, *, export_user_id: bool = True,
                    fields: tuple[str, ...] | None = None) -> tuple[Column, ...]:
        """The columns an export writes: the schema's, less the userId of tokens unless asked for, and only
        ``fields`` when the request projects; always in the schema's order."""
        chosen = [column for column in self.schema
                  if not (column.name == self.user_id_column and not export_user_id)]
        if fields is not None:
            chosen = [column for column in chosen if column.name in fields]
        return tuple(chosen)


def _raw_text(job: ExportSpec, item: WorkItem) -> sources.RowText:
    return sources.RawText(item.sources)


def _folded(kind: str) -> TextSource:
    """The text of a snapshot type: the app's folded state and snapshot log, as the item's plan saw them."""
    def text(job: ExportSpec, item: WorkItem) -> sources.RowText:
        return sources.MadeText(lambda: snapshotfold.rows(kind, item.state, item.buckets, item.sources))
    return text


def _feedback(job: ExportSpec, item: WorkItem) -> sources.RowText:
    return sources.MadeText(lambda: snapshotfold.feedback(
        item.state, item.buckets, item.sources, campaign_type=job.campaign_type or "",
        campaign_ids=job.campaign_ids, window=_feedback_window(job)))


def _feedback_window(job: ExportSpec) -> tuple[dt.datetime, dt.datetime] | None:
    start, end = job.campaign_window_start, job.campaign_window_end
    return (start, end) if start is not None and end is not None else None


def _historical(name: str, route: str, schema: tuple[Column, ...]) -> ExportType:
    return ExportType(name, schema, (ExportRoute(route, name, HISTORICAL),), planning.raw_partitions,
                      text=_raw_text, raw_record_type=name.lower(), hourly=True)


def _snapshot(name: str, route: str, schema: tuple[Column, ...], text: TextSource, **options) -> ExportType:
    route_options = ("exportUserId",) if options.get("user_id_column") else ()
    return ExportType(name, schema, (ExportRoute(route, name, SNAPSHOT, route_options),), planning.snapshot_log,
                      text=text, **options)


DEVICE_ID = Column("deviceId", required=True, description="the app's id of the device")
USER_ID = Column("userId", description="the app's id of the user, when it gave one")
SESSION_ID = Column("sessionId", description="the session the record belongs to")
JOB_ID = Column("jobId", description="the job the record belongs to")
NAME = Column("name", required=True)
START, END = Column("start", TIME, required=True), Column("end", TIME, required=True)
TIMESTAMP = Column("timestamp", TIME, required=True)
EXTRAS = Column("extras", JSON, description="the record's extra keys and values (a JSON object)")

EXPORT_TYPES: dict[str, ExportType] = {export_type.name: export_type for export_type in (
    _historical("Activity", "activities", (DEVICE_ID, USER_ID, SESSION_ID, NAME, START, END, EXTRAS)),
    ExportType("Session", (DEVICE_ID, USER_ID, Column("sessionId", required=True), START, END,
                           Column("duration", NUMBER, required=True, description="seconds from start to end"),
                           Column("activityCount", INTEGER, required=True),
                           Column("firstActivity", required=True), Column("lastActivity", required=True)),
               (ExportRoute("sessions", "Session", HISTORICAL),), planning.session_days,
               rows=lambda job, item: sources.batched(sources.sessions(item.before, item.sources, item.after))),
    _historical("Event", "events", (DEVICE_ID, USER_ID, SESSION_ID, JOB_ID, NAME, TIMESTAMP, EXTRAS)),
    _historical("Job", "jobs", (DEVICE_ID, USER_ID, NAME, START, END, EXTRAS)),
    _historical("Error", "errors", (DEVICE_ID, USER_ID, SESSION_ID, JOB_ID, NAME, TIMESTAMP, EXTRAS)),
    _historical("Crash", "crashes", (DEVICE_ID, USER_ID, TIMESTAMP, Column("crashType", required=True),
                                     Column("message"), Column("stack"))),
    _snapshot("Tag", "tags", (DEVICE_ID, NAME, Column("value", JSON, description="a string, integer, date or "
                                                                                "boolean")),
              _folded("tag")),
    _snapshot("Device", "devices", (DEVICE_ID, Column("firstSeen", TIME), Column("lastSeen", TIME),
                                    Column("nativePushEnabled", BOOLEAN), Column("info", JSON),
                                    Column("location", JSON),
                                    Column("appInfo", JSON, description="the device's tags, name to value")),
              _folded("device")),
    _snapshot("Token", "tokens", (DEVICE_ID, USER_ID, Column("token", required=True), Column("platform"),
                                  Column("updated", TIME)),
              _folded("token"), user_id_column="userId"),
    ExportType("Push", (DEVICE_ID, Column("campaignId", INTEGER, required=True),
                        Column("campaignType", required=True), Column("action", required=True), TIMESTAMP),
               (ExportRoute("feedbackByDate", "Push", FEEDBACK_BY_DATE),
                ExportRoute("feedbackByCampaign", "Push", FEEDBACK_BY_CAMPAIGN)),
               planning.snapshot_log, text=_feedback),
)}

ROUTES: dict[str, ExportRoute] = {route.route: route for export_type in EXPORT_TYPES.values()
                                  for route in export_type.routes}


# Rows (JSON Lines in the export's row shape) converted on ``cores`` cores, a run of rows at a time: (rows kept,
# what the file's write_converted takes) of each run, in order.
RunsConverter = Callable[[sources.RowText, RowSpec, int], Iterator[tuple[int, Any]]]


@dataclass(frozen=True)
class ExportFormat:
    """A result file format."""

    name: str  # the contract's exportFormat
    extension: str  # of each result file
    content_type: str  # of each result file
    compression: str  # as the manifest names it
    open_file: Callable[..., RowFile]  # (emit, spec, converted=) -> the file being written
    convert_runs: RunsConverter
    schema: Callable[[str, tuple[Column, ...]], dict[str, Any]]  # the schema published with its files
    # raw partitions are already files of this format (gzip JSON Lines): a historical export copies their bytes
    copies_raw: bool = False
    # its runs are converted on threads of the worker, in native code: it needs no conversion processes
    converts_on_threads: bool = False
    # its files are a Delta Lake table's, partitioned by date, made visible by a commit of the table's log
    # (shared.export.deltatable)
    table: bool = False


def _text_format(name: str, extension: str, encoder, **options) -> ExportFormat:
    return ExportFormat(name, extension, "application/gzip", "gzip", exportformats.text_file(encoder),
                        functools.partial(_in_processes, functools.partial(exportformats.gzip_text_run, encoder)),
                        _json_schema, **options)


def _in_processes(convert_run: exportformats.RunConverter, text: sources.RowText, spec: RowSpec,
                  cores: int) -> Iterator[tuple[int, Any]]:
    return convert.converted(text.runs(), convert_run, spec, processes=cores)


def _json_schema(export_type: str, columns: tuple[Column, ...]) -> dict[str, Any]:
    return {"jsonSchema": schemas.json_schema(export_type, columns)}


def _arrow_schema(export_type: str, columns: tuple[Column, ...]) -> dict[str, Any]:
    return {"arrowSchema": schemas.arrow_schema_document(columns)}


def _table_schema(export_type: str, columns: tuple[Column, ...]) -> dict[str, Any]:
    return {"deltaArrowSchema": schemas.arrow_schema_document(columns, schemas.MICROSECONDS)}


EXPORT_FORMATS: dict[str, ExportFormat] = {export_format.name: export_format for export_format in (
    _text_format("JsonBlob", "jsonl.gz", exportformats.JsonLinesEncoder, copies_raw=True),
    _text_format("CsvBlob", "csv.gz", exportformats.CsvEncoder),
    ExportFormat("ParquetBlob", "parquet", "application/vnd.apache.parquet", parquet.COMPRESSION,
                 parquet.ParquetFile, jsonreader.converted, _arrow_schema, converts_on_threads=True),
    ExportFormat("DeltaLake", "parquet", "application/vnd.apache.parquet", parquet.COMPRESSION,
                 parquet.TableFile, jsonreader.converted, _table_schema, converts_on_threads=True, table=True),
)}
DEFAULT_FORMAT = "JsonBlob"
LAYOUTS = (FLAT, HIVE)


def export_type(name: str) -> ExportType:
    return EXPORT_TYPES[name]


def export_format(name: str) -> ExportFormat:
    return EXPORT_FORMATS[name]


def file_name(job: ExportSpec, index: int, day: dt.date | None = None) -> str:
    """A result file's name: under a date=YYYY-MM-DD folder for the hive layout, so readers get the day as a
    column; a DeltaLake file in its table's folder (the task's id in its name: the table holds many tasks')."""
    folder = f"date={day.isoformat()}/" if day is not None and job.layout == HIVE else ""
    extension = EXPORT_FORMATS[job.export_format].extension
    table = table_folder(job)
    if table is not None:
        return f"{table}/{folder}part-{job.job_id}-{index:05d}.{extension}"
    return f"{job.export_type}/{job.job_id}/{folder}part-{index:05d}.{extension}"


def table_folder(job: ExportSpec) -> str | None:
    """The folder of a DeltaLake export's table: a pipeline's own, else `delta/{exportType}` (None: no table)."""
    if not EXPORT_FORMATS[job.export_format].table:
        return None
    return job.run.pipeline if job.run is not None else f"delta/{job.export_type}"


def pipeline_file_name(run: RunTag, scope: ExportScope, period: str, index: int) -> str:
    """A pipeline run's file of one event-time period: under the pipeline's folder, in the period's folder
    (date=YYYY-MM-DD in the hive layout, for hourly periods too), named by the run so that runs never collide."""
    folder = f"date={period[:10]}" if scope.layout == HIVE else period
    return f"{run.pipeline}/{folder}/{run.run}-part-{index:05d}.{EXPORT_FORMATS[scope.export_format].extension}"


def _job_folder(job: ExportSpec) -> str:
    return job.run.folder if job.run is not None else f"{job.export_type}/{job.job_id}"


def schema_name(job: ExportSpec) -> str:
    return f"{_job_folder(job)}/schema.json"


def success_name(job: ExportSpec) -> str:
    """The marker written after the manifest, that Spark and Hadoop tools wait for (hive layout, pipeline runs)."""
    return f"{_job_folder(job)}/_SUCCESS"


def published_schema(job: ExportSpec) -> dict[str, Any]:
    """The schema written beside a job's files, of its format and with its projection applied."""
    columns = row_spec(job).columns
    return {"exportType": job.export_type, "exportFormat": job.export_format,
            "columns": [column.name for column in columns],
            **EXPORT_FORMATS[job.export_format].schema(job.export_type, columns)}


def type_schemas(export_type: ExportType) -> dict[str, Any]:
    """An export type's published schemas, as the schema endpoint serves them: every format's."""
    document: dict[str, Any] = {"exportType": export_type.name, "columns": list(export_type.columns),
                                "formats": list(EXPORT_FORMATS)}
    for export_format in EXPORT_FORMATS.values():
        document.update(export_format.schema(export_type.name, export_type.schema))
    return document


def row_spec(job: ExportSpec) -> RowSpec:
    """What of each row the job's files hold: its columns, and the names it includes or excludes."""
    projection = tuple(job.projection) if job.projection is not None else None
    columns = EXPORT_TYPES[job.export_type].columns_for(export_user_id=job.export_user_id, fields=projection)
    names = job.name_filter or {}
    return RowSpec(columns, frozenset(names["include"]) if "include" in names else None,
                   frozenset(names["exclude"]) if "exclude" in names else None)


def manifest_name(job: ExportSpec) -> str:
    return f"{_job_folder(job)}/manifest.json"
