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
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from isal import igzip

from shared.ingest.records import encode_line, parse_time, partition_time
from shared.platform import storage
from shared.platform.errors import TransientError

RAW_CONTAINER = "raw"
MAX_BLOCKS_PER_BLOB = 49_000
MAX_BLOCK_BYTES = 4 * 1024 * 1024
GZIP_LEVEL = 2  # ISA-L level: see shared.export.exportformats


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


class RawWriter:
    """Appends rows to this process's blobs, one open blob per partition."""

    def __init__(self, writer_id: Optional[str] = None) -> None:
        self.writer_id = writer_id or f"{socket.gethostname()[:20]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._open: Dict[str, _OpenBlob] = {}
        self._partition_locks: Dict[str, threading.Lock] = defaultdict(threading.Lock)

    def _members(self, lines: List[bytes]) -> Iterator[bytes]:
        """gzip members of at most ~MAX_BLOCK_BYTES of input each."""
        chunk: List[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > MAX_BLOCK_BYTES:
                yield igzip.compress(b"".join(chunk), GZIP_LEVEL, mtime=0)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            yield igzip.compress(b"".join(chunk), GZIP_LEVEL, mtime=0)

    def _blob_for(self, prefix: str, rotate: bool) -> _OpenBlob:
        with self._lock:
            current = self._open.get(prefix)
            if current is not None and not rotate and current.blocks < MAX_BLOCKS_PER_BLOB:
                return current
            name = f"{prefix}{self.writer_id}-{uuid.uuid4().hex[:8]}.jsonl.gz"
            client = storage.container(RAW_CONTAINER).get_blob_client(name)
            try:
                client.create_append_blob(content_settings=None, metadata={"writer": self.writer_id})
            except ResourceExistsError:
                pass
            current = _OpenBlob(name)
            self._open[prefix] = current
            return current

    def append_lines(self, prefix: str, lines: List[bytes]) -> None:
        """Appends rows to the partition; returns only when they are durably stored."""
        with self._partition_locks[prefix]:
            for member in self._members(lines):
                rotate = False
                for _ in range(3):
                    target = self._blob_for(prefix, rotate)
                    try:
                        storage.container(RAW_CONTAINER).get_blob_client(target.name).append_block(member)
                        target.blocks += 1
                        break
                    except HttpResponseError as error:
                        if getattr(error, "error_code", None) not in ("BlockCountExceedsLimit", "BlobNotFound"):
                            raise
                        rotate = True
                else:
                    raise TransientError(f"could not append to a raw blob under {prefix}")

    def append_records(self, app_id: str, records: Iterable[dict]) -> int:
        """Files normalized historical records under their hour partitions; returns how many."""
        groups: Dict[Tuple[str, dt.datetime], List[bytes]] = defaultdict(list)
        for record in records:
            groups[(record["type"], hour_of(record))].append(encode_line(record))
        for (record_type, hour), lines in groups.items():
            self.append_lines(hour_prefix(app_id, record_type, hour), lines)
        return sum(len(lines) for lines in groups.values())


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


def list_day(app_id: str, record_type: str, day: dt.date, *, hour: Optional[int] = None) -> List[RawBlob]:
    """The raw blobs of one UTC day (or of one hour of it), in name order (hour, then writer)."""
    prefix = day_prefix(app_id, record_type, day) + (f"{hour:02d}/" if hour is not None else "")
    blobs = storage.container(RAW_CONTAINER).list_blobs(name_starts_with=prefix)
    return sorted((RawBlob(blob.name, blob.size) for blob in blobs), key=lambda b: b.name)
