"""Planning: a job cut into work items, each of which writes one result file.

A plan is read from what the raw store holds when the job starts, and saved before any item runs: the first
planner's plan wins and a racing second planner adopts it, so every try of an item writes the same file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from azure.core.exceptions import ResourceExistsError

from shared.export.spec import HIVE, ExportSpec
from shared.ingest import rawstore, snapshots
from shared.platform import storage
from shared.platform.config import get_settings

PLANS_CONTAINER = "exportplans"
# A raw blob as a plan saw it: its name and its size then.
RawSource = tuple[str, int]
# The bytes of a raw blob from start to end (the part of a snapshot log blob that came after a folded state).
RawRange = tuple[str, int, int]
Source = RawSource | RawRange
# A file's name from its index and, for a historical export, its day.
FileNames = Callable[[int, dt.date | None], str]


@dataclass(frozen=True)
class WorkItem:
    index: int
    file: str
    sources: tuple[Source, ...] = ()  # the raw blobs the item reads, as the plan saw them
    # sessions only: the activity blobs of the day before and the day after
    before: tuple[RawSource, ...] = ()
    after: tuple[RawSource, ...] = ()
    # snapshot types only: the files of the folded state the log's ``sources`` go on from, in ``buckets`` buckets
    state: tuple[RawSource, ...] = ()
    buckets: int = 0

    def to_json(self) -> dict:
        return {"index": self.index, "file": self.file, "buckets": self.buckets,
                **{key: [list(s) for s in getattr(self, key)] for key in _SOURCE_LISTS}}

    @classmethod
    def from_json(cls, doc: dict) -> WorkItem:
        return cls(index=doc["index"], file=doc["file"], buckets=doc.get("buckets", 0),
                   **{key: tuple(tuple(s) for s in doc.get(key, ())) for key in _SOURCE_LISTS})


_SOURCE_LISTS = ("sources", "before", "after", "state")


def _days(job: ExportSpec) -> list[dt.date]:
    first, last = job.start_date, job.end_date
    if first is None or last is None:
        return []
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def snapshot_log(job: ExportSpec, file_name: FileNames) -> list[WorkItem]:
    """One file, from the app's newest folded snapshot state and the part of its log that came since, as they
    are now (shared.export.snapshotfold folds them)."""
    return snapshot_log_items(job.app_id, file_name)


def snapshot_log_items(app_id: str, file_name: FileNames) -> list[WorkItem]:
    """``snapshot_log`` of an app."""
    generation = snapshots.current_generation(app_id)
    _, tail = snapshot_tail(app_id, generation)
    if generation is None:
        return [WorkItem(0, file_name(0, None), tuple(tail))]
    state = tuple((generation.file(kind, bucket), size) for kind, bucket, size in state_files(generation))
    return [WorkItem(0, file_name(0, None), tuple(tail), state=state, buckets=generation.buckets)]


def snapshot_tail(app_id: str,
                  generation: snapshots.Generation | None) -> tuple[list[rawstore.RawBlob], list[RawRange]]:
    """The app's snapshot log blobs as they are now, and the part of them a generation does not hold (all of
    them without one)."""
    covers = generation.covers if generation is not None else {}
    blobs = rawstore.list_all(app_id, snapshots.LOG_TYPE)
    return blobs, [(blob.name, covers.get(blob.name, 0), blob.size) for blob in blobs
                   if blob.size > covers.get(blob.name, 0)]


def state_files(generation: snapshots.Generation) -> list[tuple[str, int, int]]:
    """(kind, bucket, size) of each file of a generation."""
    found = {blob.name: blob.size for blob in storage.container(rawstore.RAW_CONTAINER).list_blobs(
        name_starts_with=generation.folder)}
    return [(kind, bucket, found.get(generation.file(kind, bucket), 0)) for kind in snapshots.KINDS
            for bucket in range(generation.buckets)]


def raw_partitions(job: ExportSpec, file_name: FileNames) -> list[WorkItem]:
    """The raw blobs of the job's days (or hour) of its record type, in order, cut into even files; in the hive
    layout, each day's files apart (a day without records has none)."""
    record_type = job.export_type.lower()

    def blobs(day: dt.date) -> list[RawSource]:
        return [(blob.name, blob.size) for blob in rawstore.list_day(job.app_id, record_type, day, hour=job.hour)]

    groups: list[tuple[dt.date | None, list[Source]]]
    if job.layout == HIVE:
        groups = [(day, group) for day in _days(job) for group in split_evenly(blobs(day)) if group]
    else:
        groups = [(None, group) for group in split_evenly([blob for day in _days(job) for blob in blobs(day)])]
    items = [WorkItem(i, file_name(i, day), tuple(group)) for i, (day, group) in enumerate(groups)]
    return items or [WorkItem(0, file_name(0, job.start_date))]  # an empty export is one file without rows


def session_days(job: ExportSpec, file_name: FileNames) -> list[WorkItem]:
    """A file per day that has activities: its sessions, read with the activities of the days beside it."""
    return session_items(job.app_id, _days(job), file_name) or [WorkItem(0, file_name(0, job.start_date))]


def session_items(app_id: str, days: list[dt.date], file_name: FileNames) -> list[WorkItem]:
    """The sessions of each of ``days`` that has activities, as they are now: one item each."""
    listed: dict[dt.date, tuple[RawSource, ...]] = {}

    def activities(day: dt.date) -> tuple[RawSource, ...]:
        if day not in listed:
            listed[day] = tuple((b.name, b.size) for b in rawstore.list_day(app_id, "activity", day))
        return listed[day]

    def beside(day: dt.date, days: int) -> tuple[RawSource, ...]:
        try:
            return activities(day + dt.timedelta(days=days))
        except OverflowError:  # the first or last day a date can name has nothing beside it
            return ()

    found = [day for day in days if activities(day)]
    return [WorkItem(i, file_name(i, day), activities(day), before=beside(day, -1), after=beside(day, 1))
            for i, day in enumerate(found)]


def source_bytes(source: Source) -> int:
    return source[1] if len(source) == 2 else source[2] - source[1]


def split_evenly(blobs: Sequence[Source]) -> list[list[Source]]:
    """Blobs (or ranges of blobs) in order, cut into as few groups as keep each under EXPORT_PART_MAX_BYTES (a
    larger one is a group of its own), of about equal size: parts that run side by side end together."""
    cap = get_settings().part_max_bytes
    total = sum(source_bytes(source) for source in blobs)
    target = total / max(1, -(-total // cap))
    groups: list[list[Source]] = [[]]
    size = 0
    for source in blobs:
        blob_size = source_bytes(source)
        if groups[-1] and (size + blob_size > cap or (size >= target and blob_size > 0)):
            groups.append([])
            size = 0
        groups[-1].append(source)
        size += blob_size
    return groups


def _plan_blob(app_id: str, job_id: str):
    return storage.container(PLANS_CONTAINER).get_blob_client(f"{app_id}/{job_id}.json")


def save_or_adopt(job: ExportSpec, items: list[WorkItem]) -> list[WorkItem]:
    """The job's plan: ``items`` when this call saves it first, else the plan saved before."""
    try:
        save_plan(job.app_id, job.job_id, items)
        return items
    except ResourceExistsError:
        return read_plan(job.app_id, job.job_id)


def save_plan(app_id: str, job_id: str, items: list[WorkItem]) -> None:
    """Saves a job's plan before the job exists (a pipeline's run); ResourceExistsError when one is saved."""
    _plan_blob(app_id, job_id).upload_blob(json.dumps({"items": [item.to_json() for item in items]}),
                                           overwrite=False)


def read_plan(app_id: str, job_id: str) -> list[WorkItem]:
    document = json.loads(_plan_blob(app_id, job_id).download_blob().readall())
    return [WorkItem.from_json(doc) for doc in document["items"]]
