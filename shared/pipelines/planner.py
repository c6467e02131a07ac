"""What a pipeline's run reads, fixed when the run is planned: its work items (each writes one file) and, for each
period it delivers, what it will have read of each raw blob (its marks).

- A period's first run reads every raw blob of the period up to its size at planning: records appended later are
  late, and never part of it.
- A late run reads, of each blob of a period that received late records, the bytes from the period's marks to the
  blob's size now. Every append is a whole gzip member, so those bytes are a valid stream of their own, and bytes
  an earlier run read are never read again: a late run costs what its late records cost.
- Sessions are computed from activities, so a late activity changes sessions already delivered: a late run of a
  sessions pipeline delivers again, whole, the sessions of each delivered day whose activities, or whose
  neighbours' activities, grew; its manifest names the runs it replaces (docs/pipelines.md).
- A snapshot pipeline delivers the whole snapshot, as it is, at each period."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.export import planning, registry
from shared.export.planning import Source, WorkItem
from shared.export.spec import ExportScope
from shared.ingest import rawstore
from shared.ingest.latearrivals import LatePartition
from shared.pipelines import store
from shared.pipelines.model import Pipeline
from shared.pipelines.periods import DAILY, Period

SESSION_SOURCE = "activity"


@dataclass
class RunPlan:
    """A run as planned: what it delivers and reads, and what the pipeline will have read once it is planned."""

    periods: list[Period]
    late: bool
    items: list[WorkItem]
    marks: dict[str, dict[str, int]] = field(default_factory=dict)  # period label -> blob -> bytes read by then
    raw_bytes: int = 0
    newest_acknowledged: dt.datetime | None = None
    replaces: tuple[str, ...] = ()


def raw_type(pipeline: Pipeline) -> str:
    """The raw store's record type the pipeline reads."""
    return SESSION_SOURCE if pipeline.export_type == "Session" else pipeline.export_type.lower()


def _listing(pipeline: Pipeline, day: dt.date, hour: int | None) -> list[rawstore.RawBlob]:
    return rawstore.list_day(pipeline.app_id, raw_type(pipeline), day, hour=hour)


def _newest(blobs: Iterable[rawstore.RawBlob]) -> dt.datetime | None:
    times = [blob.modified for blob in blobs if blob.modified is not None and blob.size > 0]
    return max(times) if times else None


class _Files:
    """The run's files, numbered across its periods."""

    def __init__(self, pipeline: Pipeline, sequence: int, scope: ExportScope) -> None:
        self.pipeline, self.scope = pipeline, scope
        self.run = pipeline.run_tag(sequence, (), False)
        self.items: list[WorkItem] = []

    def add(self, period: Period, groups: list[list[Source]], **extra) -> None:
        for group in groups:
            index = len(self.items)
            self.items.append(WorkItem(index, registry.pipeline_file_name(self.run, self.scope, period.label, index),
                                       tuple(group), **extra))

    def add_items(self, period: Period, found: list[WorkItem]) -> None:
        for item in found:
            index = len(self.items)
            self.items.append(WorkItem(index, registry.pipeline_file_name(self.run, self.scope, period.label, index),
                                       item.sources, before=item.before, after=item.after, state=item.state,
                                       buckets=item.buckets))


def first_run(pipeline: Pipeline, periods: list[Period], sequence: int) -> RunPlan:
    """The first delivery of ``periods`` (due, consecutive): everything the raw store holds of them now."""
    files = _Files(pipeline, sequence, pipeline.scope(periods))
    if not pipeline.historical:
        (period,) = periods  # a snapshot is the snapshot now: one period a run
        files.add_items(period, planning.snapshot_log_items(pipeline.app_id, _unnamed))
        return RunPlan([period], False, files.items)
    if pipeline.export_type == "Session":
        plan = _sessions(pipeline, periods, files, late=False)
        assert plan is not None  # a first run delivers each of its periods, if only as no file
        return plan
    plan = RunPlan(periods, False, [])
    listed: list[rawstore.RawBlob] = []
    for period in periods:
        blobs = _listing(pipeline, period.day, period.hour)
        files.add(period, [group for group in planning.split_evenly([(b.name, b.size) for b in blobs]) if group])
        plan.marks[period.label] = {blob.name: blob.size for blob in blobs}
        plan.raw_bytes += sum(blob.size for blob in blobs)
        listed += blobs
    plan.items, plan.newest_acknowledged = files.items, _newest(listed)
    return plan


def _unnamed(index: int, day: dt.date | None) -> str:
    return ""  # the planners of shared.export name files for one-shot exports; _Files names a run's


def _session_blobs(pipeline: Pipeline, period: Period) -> list[rawstore.RawBlob]:
    """The activity blobs a day's sessions read: those of the day and of the days beside it."""
    return [blob for days in (-1, 0, 1) for blob in _listing(pipeline, period.day + dt.timedelta(days=days), None)]


def _sessions(pipeline: Pipeline, periods: list[Period], files: _Files, *, late: bool) -> RunPlan | None:
    """Sessions of whole days, computed from their activities (and the days beside them) as they are now; for a
    late run, of the days whose activities, or their neighbours', grew since the day was last delivered."""
    plan = RunPlan([], late, [])
    listed: list[rawstore.RawBlob] = []
    for period in periods:
        blobs = _session_blobs(pipeline, period)
        if late:
            marks = store.read_marks(pipeline, period.label)
            if not any(blob.size > marks.get(blob.name, 0) for blob in blobs):
                continue
            replaced = pipeline.run_name(Pipeline.sequence_of(pipeline.periods[period.label]))
            if replaced not in plan.replaces:
                plan.replaces += (replaced,)
        listed += blobs
        plan.periods.append(period)
        files.add_items(period, planning.session_items(pipeline.app_id, [period.day], _unnamed))
        plan.marks[period.label] = {blob.name: blob.size for blob in blobs}
    if not plan.periods:
        return None
    plan.items = files.items
    plan.raw_bytes = sum(planning.source_bytes(s) for item in plan.items
                         for s in item.sources + item.before + item.after)
    plan.newest_acknowledged = _newest(listed)
    return plan


def touched_periods(pipeline: Pipeline, noted: Iterable[LatePartition]) -> dict[str, set[int]]:
    """The delivered periods (label -> hours of the day) with late arrivals of the pipeline's record type. A day
    of sessions is touched by late activities of the days beside it too, which its sessions read."""
    kind = raw_type(pipeline)
    touched: dict[str, set[int]] = {}
    for partition in noted:
        if partition.record_type != kind:
            continue
        if pipeline.export_type == "Session":
            labels = [f"{partition.hour + dt.timedelta(days=d):%Y-%m-%d}" for d in (-1, 0, 1)]
        else:
            labels = [Period(partition.hour, pipeline.cadence).label if pipeline.cadence != DAILY
                      else f"{partition.hour:%Y-%m-%d}"]
        for label in labels:
            if label in pipeline.periods:
                touched.setdefault(label, set()).add(partition.hour.hour)
    return touched


def late_run(pipeline: Pipeline, touched: dict[str, set[int]], sequence: int) -> RunPlan | None:
    """The late run of the periods that received late records (None when no blob of them grew)."""
    periods = sorted(pipeline.period(label) for label in touched)
    files = _Files(pipeline, sequence, pipeline.scope(periods))
    if pipeline.export_type == "Session":
        return _sessions(pipeline, periods, files, late=True)
    plan = RunPlan([], True, [])
    grown: list[rawstore.RawBlob] = []
    for period in periods:
        marks = store.read_marks(pipeline, period.label)
        hours = [period.hour] if period.hour is not None else sorted(touched[period.label])
        blobs = [blob for hour in hours for blob in _listing(pipeline, period.day, hour)]
        ranges: list[Source] = [(blob.name, marks.get(blob.name, 0), blob.size) for blob in blobs
                                if blob.size > marks.get(blob.name, 0)]
        if not ranges:
            continue
        files.add(period, [group for group in planning.split_evenly(ranges) if group])
        grown += [blob for blob in blobs if blob.size > marks.get(blob.name, 0)]
        plan.raw_bytes += sum(planning.source_bytes(source) for source in ranges)
        plan.periods.append(period)
        plan.marks[period.label] = {**marks, **{blob.name: blob.size for blob in blobs}}
    if not plan.periods:
        return None
    plan.items = files.items
    plan.newest_acknowledged = _newest(grown)
    return plan
