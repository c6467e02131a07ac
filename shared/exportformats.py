"""Result file formats: JSON Lines (`JsonBlob`) and RFC 4180 CSV with a header (`CsvBlob`), both gzip.

Columns per export type are fixed, so every CSV file of a type has the same header; nested values
(extras, info, location, appInfo) are JSON in one column. `GzipSink` compresses a stream of bytes into
one gzip member and hands out blocks of bounded size, so memory never grows with the export.
"""

from __future__ import annotations

import csv
import hashlib
import io
from typing import Callable, Dict, Iterable, Tuple

import orjson
from isal import isal_zlib

COLUMNS: Dict[str, Tuple[str, ...]] = {
    "Activity": ("deviceId", "userId", "sessionId", "name", "start", "end", "extras"),
    "Event": ("deviceId", "userId", "sessionId", "jobId", "name", "timestamp", "extras"),
    "Error": ("deviceId", "userId", "sessionId", "jobId", "name", "timestamp", "extras"),
    "Job": ("deviceId", "userId", "name", "start", "end", "extras"),
    "Crash": ("deviceId", "userId", "timestamp", "crashType", "message", "stack"),
    "Session": ("deviceId", "userId", "sessionId", "start", "end", "duration", "activityCount", "firstActivity",
                "lastActivity"),
    "Device": ("deviceId", "firstSeen", "lastSeen", "nativePushEnabled", "info", "location", "appInfo"),
    "Tag": ("deviceId", "name", "value"),
    "Token": ("deviceId", "userId", "token", "platform", "updated"),
    "Push": ("deviceId", "campaignId", "campaignType", "action", "timestamp"),
}
EXTENSIONS = {"JsonBlob": "jsonl", "CsvBlob": "csv"}
BLOCK_BYTES = 4 * 1024 * 1024
# ISA-L's deflate (isal) at level 2 compresses about 10x faster than zlib at 6, for files about 5% larger:
# on CSV exports, compression was a third of the CPU time.
GZIP_LEVEL = 2


def columns(export_type: str, *, export_user_id: bool = True) -> Tuple[str, ...]:
    cols = COLUMNS[export_type]
    if export_type == "Token" and not export_user_id:
        cols = tuple(c for c in cols if c != "userId")
    return cols


def file_name(export_type: str, job_id: str, index: int, export_format: str) -> str:
    return f"{export_type}/{job_id}/part-{index:05d}.{EXTENSIONS[export_format]}.gz"


def manifest_name(export_type: str, job_id: str) -> str:
    return f"{export_type}/{job_id}/manifest.json"


# Columns whose values can be objects or booleans; every other column is a string or a number, which the
# csv module writes as they are (and None as an empty field).
_SHAPED = {"extras", "info", "location", "appInfo", "value", "nativePushEnabled"}


def _cell(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode("utf-8")
    return value


class RowEncoder:
    """Turns row dicts into the bytes of one format; CSV starts with its header row."""

    def __init__(self, export_type: str, export_format: str, *, export_user_id: bool = True) -> None:
        self.columns = columns(export_type, export_user_id=export_user_id)
        self.csv = export_format == "CsvBlob"
        self._shaped = [index for index, column in enumerate(self.columns) if column in _SHAPED]
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def header(self) -> bytes:
        if not self.csv:
            return b""
        self._writer.writerow(self.columns)
        return self._take()

    def _take(self) -> bytes:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text.encode("utf-8")

    def encode(self, rows: Iterable[dict]) -> bytes:
        cols = self.columns
        if self.csv:
            shaped = self._shaped
            table = []
            for row in rows:
                cells = list(map(row.get, cols))
                for index in shaped:
                    value = cells[index]
                    if value is not None:
                        cells[index] = _cell(value)
                table.append(cells)
            self._writer.writerows(table)
            return self._take()
        return b"".join(orjson.dumps({c: row[c] for c in cols if row.get(c) is not None}) + b"\n" for row in rows)


class GzipSink:
    """Compresses what it is given into one gzip member; ``emit`` receives blocks of BLOCK_BYTES (the last one
    shorter)."""

    def __init__(self, emit: Callable[[bytes], None], *, level: int = GZIP_LEVEL, block_bytes: int = None,
                 compress: bool = True) -> None:
        self._emit = emit
        self._block_bytes = block_bytes or BLOCK_BYTES
        self._pending = bytearray()
        self._compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31) if compress else None
        self.md5 = hashlib.md5()
        self.bytes = 0

    def _out(self, data: bytes) -> None:
        self._pending += data
        while len(self._pending) >= self._block_bytes:
            self._flush_block(self._block_bytes)

    def _flush_block(self, size: int = None) -> None:
        block = bytes(self._pending[:size] if size else self._pending)
        del self._pending[:len(block)]
        if block:
            self.md5.update(block)
            self.bytes += len(block)
            self._emit(block)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def write(self, data: bytes) -> None:
        """Uncompressed data to compress (or, for a sink made with compress=False, gzip bytes to pass on)."""
        self._out(self._compressor.compress(data) if self._compressor else data)

    def close(self) -> None:
        if self._compressor is not None:
            self._out(self._compressor.flush())
        self._flush_block()
