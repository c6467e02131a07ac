"""The export engine: what one work item does. It reads the item's rows, encodes them in the job's format and
stages the file's bytes as blocks of the destination blob.

Block ids come from the item's index and the block's position, so a retried item rewrites the same blocks.
Which rows and which encoding is shared.export.registry's; the plan is shared.export.planning's; the commit that
makes the files visible is shared.export.committer's; running an item for a job is shared.tasks.orchestration's.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass

from azure.core.exceptions import AzureError

from shared.export import planning, registry, sources
from shared.export.exportformats import GzipSink, gzip_member
from shared.export.pipeline import Background, Uploads, release_free_memory, tune_allocator
from shared.export.planning import WorkItem
from shared.export.spec import ExportSpec
from shared.platform.config import get_settings
from shared.platform.errors import PermanentJobError


def plan_items(job: ExportSpec) -> list[WorkItem]:
    """The work items of a job, from what the raw store holds now."""
    return registry.export_type(job.export_type).plan(job, lambda index, day: registry.file_name(job, index, day))


def load_or_create_plan(job: ExportSpec) -> list[WorkItem]:
    """The job's plan: made now, unless another planner saved one first. A pipeline run's plan was saved with the
    run (its bytes pinned, shared.pipelines.planner): it is only read."""
    if job.run is not None:
        return planning.read_plan(job.app_id, job.job_id)
    return planning.save_or_adopt(job, plan_items(job))


# Blocks uploading at once for a part: a copy of raw bytes goes at the storage's speed, while a converted
# file comes slower than its blocks upload, and each block waiting is BLOCK_BYTES of memory.
COPY_UPLOADS = 4
CONVERTED_UPLOADS = 2


def block_id(item: int, block: int) -> str:
    return base64.b64encode(f"{item:06d}-{block:06d}".encode()).decode()


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
    blocks: list[str]
    stats: str | None = None  # what a table's log says of the file (DeltaLake), from the file's own statistics


def produce(job: ExportSpec, item: WorkItem, stage: Callable[[str, bytes], None]) -> PartResult:
    """Writes the item's file as staged blocks; ``stage(block_id, data)`` stores one block.

    Reading, converting, compressing and uploading overlap (see shared.export.pipeline), each holding a few
    blocks at most, so memory stays bounded by the block size whatever the export's size.
    """
    tune_allocator()
    export_type, export_format = registry.export_type(job.export_type), registry.export_format(job.export_format)
    spec = registry.row_spec(job)
    copies_raw = (export_type.raw_record_type is not None and export_format.copies_raw
                  and spec.columns == export_type.schema and not spec.filters)
    processes = get_settings().convert_processes
    blocks: list[str] = []
    uploads = Uploads(stage, limit=COPY_UPLOADS if copies_raw else CONVERTED_UPLOADS)

    def emit(data: bytes) -> None:
        identifier = block_id(item.index, len(blocks))
        blocks.append(identifier)
        uploads.submit(identifier, data)

    records = 0
    stats = None
    try:
        if copies_raw:
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
        else:
            text = export_type.text(job, item) if export_type.text is not None else None
            converted = text is not None and (processes > 0 or export_format.converts_on_threads)
            file = export_format.open_file(emit, spec, converted=converted)
            if text is not None and converted:
                # The CPU-bound part on every core (shared.export.convert, shared.export.jsonreader).
                for count, payload in export_format.convert_runs(text, spec, processes):
                    records += count
                    file.write_converted(count, payload)
            else:
                for batch in export_type.row_batches(job, item):
                    batch = spec.select(batch)
                    records += len(batch)
                    file.write_rows(batch)
            file.close()
            sink = file.sink
            stats = getattr(file, "stats", None)
    finally:
        uploads.wait()
        release_free_memory()
    return PartResult(records=records, bytes=sink.bytes, md5=base64.b64encode(sink.md5.digest()).decode(),
                      blocks=blocks, stats=stats)


# A running part looks at most this often whether its job was cancelled (one table read).
CANCEL_CHECK_SECONDS = 1.0


def stage_to(job: ExportSpec, item: WorkItem, still_running: Callable[[], bool]) -> Callable[[str, bytes], None]:
    """``stage(block_id, data)`` for ``item``'s file in the job's destination. It stops, with PermanentJobError,
    once ``still_running()`` says the job ended (asked at most every CANCEL_CHECK_SECONDS); a failed write is
    raised as the destination classifies it."""
    target = job.destination.open()
    blob = target.blob_client(item.file, max_single_put_size=8 * 1024 * 1024)
    checked = [time.monotonic()]

    def stage(identifier: str, data: bytes) -> None:
        if time.monotonic() - checked[0] >= CANCEL_CHECK_SECONDS:
            checked[0] = time.monotonic()
            if not still_running():  # cancelled, or failed by another part: stop here
                raise PermanentJobError(f"the export ended while part {item.index} ran")
        try:
            # With its MD5, a block damaged on the way is refused rather than kept, and the item is retried.
            # (Given none, Azurite computes a CRC64 in JavaScript: a quarter of its CPU in a JsonBlob export.)
            blob.stage_block(identifier, data, length=len(data), validate_content=True)
        except AzureError as error:
            raise target.failure(error) from None

    return stage
