"""The export engine: plan a job into work items, run one item, and finish the job.

A work item writes exactly one result file. It stages the file's bytes as blocks whose ids come from the
item's index and the block's position, so a retried item rewrites the same blocks; its outcome (block
ids, records, bytes, MD5) goes into a part row. Only when every part is done are the block lists
committed, in order, and the manifest written last: a file appears complete, exactly once, or not at all.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Sequence

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContentSettings

from shared.export import convert, destination, sources

from shared.ingest import rawstore

from shared.platform import storage

from shared.tasks import jobs, monitor, parts
from shared.platform.config import get_settings
from shared.platform.errors import PermanentJobError
from shared.export.exportformats import GzipSink, RowEncoder, file_name, gzip_member, manifest_name
from shared.export.pipeline import Background, Uploads, release_free_memory, tune_allocator

PLANS_CONTAINER = "exportplans"
ROW_BATCH = 2000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkItem:
    index: int
    file: str
    kind: str  # copy | rows | sessions | snapshot
    sources: tuple = ()  # ((raw blob name, size), ...): what the item reads, as the plan saw it
    # sessions only: the activity blobs of the day before and the day after
    before: tuple = ()
    after: tuple = ()

    def to_json(self) -> dict:
        return {"index": self.index, "file": self.file, "kind": self.kind,
                **{key: [list(s) for s in getattr(self, key)] for key in ("sources", "before", "after")}}

    @classmethod
    def from_json(cls, doc: dict) -> "WorkItem":
        return cls(index=doc["index"], file=doc["file"], kind=doc["kind"],
                   **{key: tuple(tuple(s) for s in doc.get(key, ())) for key in ("sources", "before", "after")})


def _days(job: jobs.ExportJob) -> List[dt.date]:
    first, last = job.start_date, job.end_date
    if first is None or last is None:
        return []
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def plan_items(job: jobs.ExportJob) -> List[WorkItem]:
    """The work items of a job, from what the raw store holds now."""
    def name(index: int) -> str:
        return file_name(job.export_type, job.id, index, job.export_format)

    if job.start_date is None:
        return [WorkItem(0, name(0), "snapshot")]
    if job.export_type == "Session":
        listed = {}

        def activities(day: dt.date) -> tuple:
            if day not in listed:
                listed[day] = tuple((b.name, b.size) for b in rawstore.list_day(job.app_id, "activity", day))
            return listed[day]

        def beside(day: dt.date, days: int) -> tuple:
            try:
                return activities(day + dt.timedelta(days=days))
            except OverflowError:  # the first or last day a date can name has nothing beside it
                return ()

        days = [day for day in _days(job) if activities(day)]
        return [WorkItem(i, name(i), "sessions", activities(day), before=beside(day, -1), after=beside(day, 1))
                for i, day in enumerate(days)] or [WorkItem(0, name(0), "sessions")]
    record_type = job.export_type.lower()
    kind = "copy" if job.export_format == "JsonBlob" else "rows"
    blobs = [(blob.name, blob.size) for day in _days(job)
             for blob in rawstore.list_day(job.app_id, record_type, day, hour=job.hour)]
    return [WorkItem(i, name(i), kind, tuple(group)) for i, group in enumerate(split_evenly(blobs))]


def split_evenly(blobs: List[tuple]) -> List[List[tuple]]:
    """(name, size) blobs in order, cut into as few groups as keep each under EXPORT_PART_MAX_BYTES (a
    larger blob is a group of its own), of about equal size: parts that run side by side end together."""
    cap = get_settings().part_max_bytes
    total = sum(size for _, size in blobs)
    target = total / max(1, -(-total // cap))
    groups: List[List[tuple]] = [[]]
    size = 0
    for name, blob_size in blobs:
        if groups[-1] and (size + blob_size > cap or (size >= target and blob_size > 0)):
            groups.append([])
            size = 0
        groups[-1].append((name, blob_size))
        size += blob_size
    return groups


def load_or_create_plan(job: jobs.ExportJob) -> List[WorkItem]:
    """The job's plan. The first planner's plan wins; a racing second planner adopts it."""
    blob = storage.container(PLANS_CONTAINER).get_blob_client(f"{job.app_id}/{job.id}.json")
    items = plan_items(job)
    try:
        blob.upload_blob(json.dumps({"items": [item.to_json() for item in items]}), overwrite=False)
        return items
    except ResourceExistsError:
        return read_plan(job.app_id, job.id)


def read_plan(app_id: str, job_id: str) -> List[WorkItem]:
    blob = storage.container(PLANS_CONTAINER).get_blob_client(f"{app_id}/{job_id}.json")
    return [WorkItem.from_json(doc) for doc in json.loads(blob.download_blob().readall())["items"]]


def block_id(item: int, block: int) -> str:
    return base64.b64encode(f"{item:06d}-{block:06d}".encode()).decode()


def _batched(rows: Iterable[dict]) -> Iterator[List[dict]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= ROW_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _row_batches(job: jobs.ExportJob, item: WorkItem) -> Iterator[List[dict]]:
    if item.kind == "rows":
        return sources.rows(item.sources)
    if item.kind == "sessions":
        return _batched(sources.sessions(item.before, item.sources, item.after))
    if job.export_type == "Tag":
        return sources.tags(job.app_id)
    if job.export_type == "Device":
        return sources.devices(job.app_id)
    if job.export_type == "Token":
        return sources.tokens(job.app_id)
    start, end = job.campaign_window_start, job.campaign_window_end
    return sources.feedback(job.app_id, campaign_type=job.campaign_type or "", campaign_ids=job.campaign_ids,
                            window=(start, end) if start is not None and end is not None else None)


class LineCounter:
    """Counts the rows of a stream of concatenated gzip members fed chunk by chunk."""

    def __init__(self) -> None:
        self.count = 0
        self._stream = sources.Gunzip()

    def feed(self, data: bytes) -> None:
        self.count += sum(out.count(b"\n") for out in self._stream.feed(data))

    def finish(self) -> int:
        return self.count + self._stream.flush().count(b"\n")


@dataclass
class PartResult:
    records: int
    bytes: int
    md5: str
    blocks: List[str]


def produce(job: jobs.ExportJob, item: WorkItem, stage: Callable[[str, bytes], None]) -> PartResult:
    """Writes the item's file as staged blocks; ``stage(block_id, data)`` stores one block.

    Reading, converting, compressing and uploading overlap (see shared.export.pipeline), each holding a few
    blocks at most, so memory stays bounded by the block size whatever the export's size.
    """
    tune_allocator()
    blocks: List[str] = []
    uploads = Uploads(stage)

    def emit(data: bytes) -> None:
        identifier = block_id(item.index, len(blocks))
        blocks.append(identifier)
        uploads.submit(identifier, data)

    records = 0
    try:
        if item.kind == "copy":
            # Whole raw partitions are already gzip JSON Lines in the export schema: pass the bytes on, and
            # count the rows by decompressing them (no JSON parsing) on a thread of its own.
            sink = GzipSink(emit, compress=False)
            counter = LineCounter()
            counting = Background(counter.feed, depth=4)
            for chunk in sources.raw_chunks(item.sources):
                counting.put(chunk)
                sink.write(chunk)
            counting.close()
            records = counter.finish()
            if sink.bytes == 0 and not sink.has_pending:
                sink.write(gzip_member(b""))  # an empty export is still a valid gzip file
            sink.close()
        elif item.kind == "rows" and get_settings().convert_processes:
            # The CPU-bound part on every core (shared.export.convert): each run of rows comes back as a gzip member.
            sink = GzipSink(emit, compress=False)
            header = RowEncoder(job.export_type, job.export_format, export_user_id=job.export_user_id).header()
            sink.write(gzip_member(header))
            for count, member in convert.converted(sources.line_text(item.sources), job.export_type,
                                                   job.export_format, export_user_id=job.export_user_id,
                                                   processes=get_settings().convert_processes):
                records += count
                sink.write(member)
            sink.close()
        else:
            sink = GzipSink(emit)
            compressor = Background(sink.write)
            encoder = RowEncoder(job.export_type, job.export_format, export_user_id=job.export_user_id)
            compressor.put(encoder.header())
            for batch in _row_batches(job, item):
                records += len(batch)
                compressor.put(encoder.encode(batch))
            compressor.close()
            sink.close()
    finally:
        uploads.wait()
        release_free_memory()
    return PartResult(records=records, bytes=sink.bytes, md5=base64.b64encode(sink.md5.digest()).decode(),
                      blocks=blocks)


# --- destination writes -------------------------------------------------------------------------------

def destination_of(job: jobs.ExportJob) -> destination.Destination:
    return destination.Destination(url=job.container_url, sas=destination.unseal(job.sealed_sas),
                                   expires=job.sas_expires)


def storage_failure(error: Exception, job: jobs.ExportJob) -> Exception:
    """The error to raise for a failed call to the destination: permanent when no retry can fix it."""
    if jobs.utcnow() >= job.sas_expires:
        return PermanentJobError(monitor.sas_expired(job))
    reason = destination.failure_reason(error, job.container_url)
    return PermanentJobError(reason) if reason else error


# A running part looks at most this often whether its job was cancelled (one table read).
CANCEL_CHECK_SECONDS = 1.0


def _stage_to(job: jobs.ExportJob, item: WorkItem) -> Callable[[str, bytes], None]:
    blob = destination_of(job).blob_client(item.file, max_single_put_size=8 * 1024 * 1024)
    checked = [time.monotonic()]

    def stage(identifier: str, data: bytes) -> None:
        if time.monotonic() - checked[0] >= CANCEL_CHECK_SECONDS:
            checked[0] = time.monotonic()
            current = jobs.find_job(job.app_id, job.id)
            if current is None or current.finished:  # cancelled, or failed by another part: stop here
                raise PermanentJobError(f"the export ended while part {item.index} ran")
        try:
            blob.stage_block(identifier, data, length=len(data))
        except AzureError as error:
            raise storage_failure(error, job) from None

    return stage


# --- running an item -----------------------------------------------------------------------------------

def run_item(app_id: str, job_id: str, index: int, *, last_try: bool) -> bool:
    """The worker's job: produce one file's blocks and record the part. Idempotent. Returns True when this
    call recorded the job's last outstanding part (so the monitor can finish the job now)."""
    job = jobs.find_job(app_id, job_id)
    if job is None or job.finished:
        return False
    existing = parts.find_part(job.id, index)
    if existing is not None and existing.done:
        return False
    plan = read_plan(app_id, job_id)
    item = plan[index]
    try:
        result = produce(job, item, _stage_to(job, item))
    except PermanentJobError as error:
        parts.record(parts.failed(job.id, index, item.file, str(error)))
        return True  # a failed part decides the job: no need to wait for the others
    except Exception as error:
        if last_try:
            parts.record(parts.failed(job.id, index, item.file, (
                f"part {index} failed on every try ({type(error).__name__}); the export service could not read "
                f"the data or write the file")))
        raise
    parts.record(parts.done(job.id, index, item.file, records=result.records, size=result.bytes, md5=result.md5,
                            blocks=result.blocks))
    log.info("Export %s part %d: %d records, %d bytes", job.id, index, result.records, result.bytes)
    return parts.all_recorded(job.id, len(plan))


# --- finishing ------------------------------------------------------------------------------------------

def manifest(job: jobs.ExportJob, files: List[dict]) -> dict:
    collection, _, name = job.app_id.partition("~")
    document: Dict[str, Any] = {"jobId": job.id, "app": {"appCollection": collection, "appName": name},
                "exportType": job.export_type, "exportFormat": job.export_format, "compression": "gzip",
                "readAt": jobs.iso(job.date_started), "dateCreated": jobs.iso(job.date_created)}
    if job.start_date is not None and job.end_date is not None:
        document["range"] = {"startDate": job.start_date.isoformat(), "endDate": job.end_date.isoformat()}
        if job.hour is not None:
            document["range"]["hour"] = job.hour
    if job.campaign_type is not None:
        document["campaignType"] = job.campaign_type
    if job.campaign_ids is not None:
        document["campaignIds"] = job.campaign_ids
    if job.campaign_window_start is not None:
        document["campaignWindow"] = {"start": jobs.iso(job.campaign_window_start),
                                      "end": jobs.iso(job.campaign_window_end)}
    if job.schedule:
        document["schedule"] = job.schedule
    document["recordCount"] = sum(f["records"] for f in files)
    document["bytes"] = sum(f["bytes"] for f in files)
    document["files"] = files
    return document


def commit(job: jobs.ExportJob, done: Sequence[parts.Part]) -> List[dict]:
    """Commits every file's staged blocks in order, then writes the manifest; returns the files' entries.
    Safe to run twice: the same block lists commit to the same bytes, and the manifest is only created.

    A file is visible once its block list is committed, so a commit that fails for good part-way removes
    the files it committed: a failed export leaves no file that a reader could take for a finished one."""
    target = destination_of(job)
    container = target.container_client()
    files = []
    metadata = {"jobId": job.id, "exportType": job.export_type}
    ordered = sorted(done, key=lambda part: part.index)
    try:
        for part in ordered:
            blob = container.get_blob_client(part.file)
            blob.commit_block_list([BlobBlock(block_id=b) for b in part.blocks],
                                   content_settings=ContentSettings(content_type="application/gzip"),
                                   metadata=dict(metadata, records=str(part.records)))
            files.append({"name": part.file, "url": f"{target.url}/{part.file}", "records": part.records,
                          "bytes": part.bytes, "md5": part.md5})
        body = json.dumps(manifest(job, files), indent=2).encode()
        try:
            container.get_blob_client(manifest_name(job.export_type, job.id)).upload_blob(
                body, overwrite=False, metadata=metadata,
                content_settings=ContentSettings(content_type="application/json"))
        except ResourceExistsError:
            pass
    except AzureError as error:
        failure = storage_failure(error, job)
        if isinstance(failure, PermanentJobError):
            _remove_files(container, [part.file for part in ordered])
        raise failure from None
    return files


def _remove_files(container, names: List[str]) -> None:
    """Best effort: a destination that refuses this too keeps files without a manifest, which the README
    tells readers never to take for a finished export."""
    for name in names:
        try:
            container.delete_blob(name)
        except ResourceNotFoundError:
            pass
        except AzureError as error:
            log.warning("Could not remove %s after a failed commit (%s)", name, type(error).__name__)
            return
