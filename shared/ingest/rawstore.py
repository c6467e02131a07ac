"""The raw store of historical records: append blobs of gzip members, partitioned by app, type and UTC hour.

    raw/{appId}/{type}/{yyyy}/{MM}/{dd}/{HH}/{writer}-{n}.jsonl.gz

Each append is one complete gzip member of JSON Lines rows already in the export schema, so a blob is a
valid gzip file at every moment and a JsonBlob export can copy it without parsing. Every process writes
to blobs of its own (the writer id is unique per process), so concurrent writers never touch the same
blob; a blob is rotated before the service's limit of 50,000 appended blocks.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ServiceRequestError, ServiceResponseError
from isal import igzip

from shared.ingest.records import Row, parse_time, partition_time, stored_row
from shared.platform import storage
from shared.platform.errors import TransientError

RAW_CONTAINER = "raw"
MAX_BLOCKS_PER_BLOB = 49_000
MAX_BLOCK_BYTES = 4 * 1024 * 1024
GZIP_LEVEL = 2  # ISA-L level: see shared.export.exportformats
# Blob metadata an erasure sets on a blob it rewrote: how many times erasures did (shared.erasure.rewrite).
ERASURE_REWRITES = "erasurerewrites"


def hour_prefix(app_id: str, record_type: str, hour: dt.datetime) -> str:
    return f"{app_id}/{record_type}/{hour:%Y/%m/%d/%H}/"


def day_prefix(app_id: str, record_type: str, day: dt.date) -> str:
    return f"{app_id}/{record_type}/{day:%Y/%m/%d}/"


def hour_of(record: dict) -> dt.datetime:
    return parse_time(partition_time(record)).replace(minute=0, second=0, microsecond=0)


@dataclass
class _OpenBlob:
    name: str
    blocks: int = 0
    length: int = 0  # this process is the blob's only writer, so it knows the length without asking


@dataclass(frozen=True)
class Position:
    """Where the next rows of a partition go: ``blob`` (None before the partition's first append) at or after
    ``offset``, or a later blob of the same writer under the same prefix."""

    prefix: str
    blob: str | None
    offset: int


@dataclass(eq=False)  # compared by identity: two callers may wait with equal rows
class _Waiting:
    """One caller's rows for one partition, waiting for a group commit."""

    lines: list[bytes]
    deadline: float | None
    done: bool = False
    error: BaseException | None = None


@dataclass
class _Partition:
    pending: list[_Waiting] = field(default_factory=list)
    blob: _OpenBlob | None = None
    committing: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = 0.0  # time.monotonic() of the last rows queued


# A partition (app, type, hour) not written for this long is forgotten: a process that runs for weeks would
# otherwise keep one entry per partition it ever wrote. Rows that come later for it go to a new blob.
PARTITION_IDLE_SECONDS = 3600.0


# Storage that is throttling or slow is retried here, briefly, instead of with the SDK's backoff of 15 s and
# more: a caller waiting on Collect gets a 503 with Retry-After within a second or two, not a minute later.
APPEND_TRIES = 3
APPEND_PAUSE_SECONDS = 0.1
_RETRYABLE_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError"})


class RawWriter:
    """Appends rows to this process's blobs, one open blob per partition.

    Group commit: callers appending to one partition at once share its appends. A caller queues its rows; the
    first one to find no append running takes everything queued and appends it as one gzip member, while the
    next callers queue behind it; each returns once its own rows are durable, or raises the append's error.
    Each append is conditional on the blob's length (append position), so an append retried after a lost
    answer is never stored twice."""

    def __init__(self, writer_id: str | None = None) -> None:
        self.writer_id = writer_id or f"{socket.gethostname()[:20]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._partitions: dict[str, _Partition] = defaultdict(_Partition)
        self._next_prune = time.monotonic() + PARTITION_IDLE_SECONDS

    def _members(self, lines: list[bytes]) -> Iterator[bytes]:
        """gzip members of at most ~MAX_BLOCK_BYTES of input each."""
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > MAX_BLOCK_BYTES:
                yield igzip.compress(b"".join(chunk), GZIP_LEVEL, mtime=0)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            yield igzip.compress(b"".join(chunk), GZIP_LEVEL, mtime=0)

    def _new_blob(self, prefix: str) -> _OpenBlob:
        name = f"{prefix}{self.writer_id}-{uuid.uuid4().hex[:8]}.jsonl.gz"
        client = storage.container(RAW_CONTAINER).get_blob_client(name)
        try:
            client.create_append_blob(content_settings=None, metadata={"writer": self.writer_id})
        except ResourceExistsError:
            pass
        return _OpenBlob(name)

    def position(self, prefix: str) -> Position:
        with self._lock:
            blob = self._partitions[prefix].blob
        return Position(prefix, blob.name if blob else None, blob.length if blob else 0)

    def append_lines(self, prefix: str, lines: list[bytes], *, deadline: float | None = None) -> None:
        """Appends rows to the partition; returns only when they are durably stored."""
        self.append_rows({prefix: lines}, deadline=deadline)

    def append_rows(self, rows: dict[str, list[bytes]], *, deadline: float | None = None) -> None:
        """Appends rows to their partitions (prefix -> rows), in that order; returns only when all are durably
        stored, or raises the first failed append's error. Rows still queued at ``deadline`` (time.monotonic())
        are not written: the call raises TransientError for them.

        The rows join every partition's queue first, so while this caller commits one partition, another
        caller's commit of the next one can already carry them. Once one of its partitions failed, the caller's
        rows that no commit took yet are withdrawn, so a failed call leaves as little of itself as it can (with
        storage refusing its first partition, nothing)."""
        mine: list[tuple[str, _Partition, _Waiting]] = []
        now = time.monotonic()
        with self._lock:
            if now >= self._next_prune:
                self._prune(now)
            for prefix, lines in rows.items():
                if lines:
                    partition = self._partitions[prefix]
                    waiting = _Waiting(lines, deadline)
                    partition.pending.append(waiting)
                    partition.last_used = now
                    mine.append((prefix, partition, waiting))
        failed: BaseException | None = None
        for prefix, partition, waiting in mine:
            if failed is not None:
                self._withdraw(partition, waiting, failed)
                continue
            with partition.committing:
                if not waiting.done:
                    with self._lock:
                        group, partition.pending = partition.pending, []
                    self._commit(prefix, partition, group)
            failed = waiting.error
        for _, _, waiting in mine:
            if waiting.error is not None:
                raise waiting.error

    def _withdraw(self, partition: _Partition, waiting: _Waiting, error: BaseException) -> None:
        """Takes rows no commit took yet out of their partition's queue; they fail with ``error``."""
        with self._lock:
            if waiting in partition.pending:
                partition.pending.remove(waiting)
                waiting.error, waiting.done = error, True

    def _prune(self, now: float) -> None:
        """Forgets the partitions idle for PARTITION_IDLE_SECONDS (under self._lock). A caller that queued rows
        since holds its partition and gave it a newer last_used, so nothing pending is forgotten."""
        idle = [prefix for prefix, partition in self._partitions.items()
                if now - partition.last_used >= PARTITION_IDLE_SECONDS and not partition.pending
                and not partition.committing.locked()]
        for prefix in idle:
            del self._partitions[prefix]
        self._next_prune = now + PARTITION_IDLE_SECONDS / 4

    def _commit(self, prefix: str, partition: _Partition, group: list[_Waiting]) -> None:
        now = time.monotonic()
        late = [w for w in group if w.deadline is not None and w.deadline < now]
        for waiting in late:
            waiting.error = TransientError(f"rows for {prefix} waited past their deadline and were not written")
            waiting.done = True
        group = [w for w in group if not w.done]
        try:
            for member in self._members([line for waiting in group for line in waiting.lines]):
                self._append(prefix, partition, member)
        except BaseException as error:  # every caller of the group raises it, the committing one included
            for waiting in group:
                waiting.error = error
        finally:
            for waiting in group:
                waiting.done = True

    def _append(self, prefix: str, partition: _Partition, member: bytes) -> None:
        for attempt in range(APPEND_TRIES):
            if partition.blob is None or partition.blob.blocks >= MAX_BLOCKS_PER_BLOB:
                blob = self._new_blob(prefix)
                with self._lock:
                    partition.blob = blob
            target = partition.blob
            try:
                storage.append_blocks(RAW_CONTAINER).append_block(target.name, member,
                                                                  appendpos_condition=target.length)
            except HttpResponseError as error:
                code = getattr(error, "error_code", None)
                if code == "AppendPositionConditionNotMet":
                    if not self._landed(target, member):
                        target.blocks = MAX_BLOCKS_PER_BLOB  # not the blob we know: go on in a new one
                        continue
                    # else an earlier try was stored though its answer was lost
                elif code in ("BlockCountExceedsLimit", "BlobNotFound", "LeaseIdMissing"):
                    # Full, gone, or leased by an erasure rewriting it (shared.erasure.rewrite): a new blob.
                    target.blocks = MAX_BLOCKS_PER_BLOB
                    continue
                elif code in _RETRYABLE_CODES or error.status_code in (500, 503):
                    self._pause(attempt)
                    continue
                else:
                    raise
            except (ServiceRequestError, ServiceResponseError):
                # Not sent, or sent without an answer: the next try's position condition tells which.
                self._pause(attempt)
                continue
            target.blocks += 1
            target.length += len(member)
            return
        raise TransientError(f"storage did not take an append to a raw blob under {prefix}; try again")

    @staticmethod
    def _pause(attempt: int) -> None:
        if attempt + 1 < APPEND_TRIES:
            time.sleep(APPEND_PAUSE_SECONDS * 3 ** attempt)

    @staticmethod
    def _landed(target: _OpenBlob, member: bytes) -> bool:
        """Whether ``member`` is the blob's tail at our position: an earlier try that stored it."""
        client = storage.container(RAW_CONTAINER).get_blob_client(target.name)
        if client.get_blob_properties().size != target.length + len(member):
            return False
        return client.download_blob(offset=target.length, length=len(member)).readall() == member

    def append_records(self, app_id: str, records: Iterable[dict], *, deadline: float | None = None) -> int:
        """Files normalized historical records under their hour partitions; returns how many."""
        groups = partition_lines(app_id, records)
        self.append_rows(groups, deadline=deadline)
        return sum(len(lines) for lines in groups.values())


def partition_lines(app_id: str, records: Iterable[dict]) -> dict[str, list[bytes]]:
    """Normalized historical records as stored rows, by partition prefix, in their order."""
    return partition_rows(app_id, (stored_row(record) for record in records))


def partition_rows(app_id: str, rows: Iterable[Row]) -> dict[str, list[bytes]]:
    """Stored rows by partition prefix, in their order."""
    groups: dict[str, list[bytes]] = defaultdict(list)
    for kind, moment, line in rows:
        # The time is in the stored form (YYYY-MM-DDTHH:...), so its hour partition is a matter of slicing;
        # the year as hour_prefix writes it (strftime's %Y does not pad years before 1000).
        year = moment[:4] if moment[0] != "0" else str(int(moment[:4]))
        groups[f"{app_id}/{kind}/{year}/{moment[5:7]}/{moment[8:10]}/{moment[11:13]}/"].append(line)
    return dict(groups)


_writer = None
_writer_lock = threading.Lock()


def writer() -> RawWriter:
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = RawWriter()
        return _writer


@dataclass(frozen=True)
class RawBlob:
    name: str
    size: int
    modified: dt.datetime | None = None  # when its last append landed (the newest record's acknowledgement)


def list_day(app_id: str, record_type: str, day: dt.date, *, hour: int | None = None) -> list[RawBlob]:
    """The raw blobs of one UTC day (or of one hour of it), in name order (hour, then writer)."""
    prefix = day_prefix(app_id, record_type, day) + (f"{hour:02d}/" if hour is not None else "")
    blobs = storage.container(RAW_CONTAINER).list_blobs(name_starts_with=prefix)
    return sorted((RawBlob(blob.name, blob.size, blob.last_modified) for blob in blobs), key=lambda b: b.name)


def list_all(app_id: str, record_type: str) -> list[RawBlob]:
    """Every raw blob of a record type, in name order (hour, then writer): the snapshot log is read whole."""
    blobs = storage.container(RAW_CONTAINER).list_blobs(name_starts_with=f"{app_id}/{record_type}/")
    return sorted((RawBlob(blob.name, blob.size) for blob in blobs), key=lambda b: b.name)
