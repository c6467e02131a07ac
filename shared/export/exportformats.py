"""Result file formats: JSON Lines (`JsonBlob`) and RFC 4180 CSV with a header (`CsvBlob`), both gzip.

Columns per export type are fixed, so every CSV file of a type has the same header; nested values
(extras, info, location, appInfo) are JSON in one column. `GzipSink` compresses a stream of bytes into
one gzip member and hands out blocks of bounded size, so memory never grows with the export.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Dict, List, Optional, Tuple

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


def csv_text(value) -> str:
    """A value as the text of its CSV field, before quoting: nested values are JSON, booleans are
    true/false, and null is an empty field."""
    if value is None:
        return ""
    if value.__class__ is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode("utf-8")
    return str(value)


def _needs_quotes(text: str) -> bool:
    # RFC 4180, as the csv module's QUOTE_MINIMAL with CRLF rows decides it.
    return '"' in text or "," in text or "\n" in text or "\r" in text


def _quoted(text: str) -> str:
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    if "," in text or "\n" in text or "\r" in text:
        return '"' + text + '"'
    return text


def csv_column(values: List) -> List[str]:
    """The CSV fields of one column of a batch of rows (missing values may be given as "").

    Built a column at a time, because it is mostly C work then: most columns (ids, names, times) are all
    text without a character that needs quotes, which one join and one search show."""
    try:
        joined = "".join(values)
        texts = values
    except TypeError:  # null, numbers, booleans or nested values in the column
        dumps = orjson.dumps
        texts = [dumps(value).decode("utf-8") if value.__class__ is dict else csv_text(value) for value in values]
        joined = "".join(texts)
    if not _needs_quotes(joined):
        return texts
    return [_quoted(text) for text in texts]


class RowEncoder:
    """Turns row dicts into the bytes of one format; CSV starts with its header row."""

    def __init__(self, export_type: str, export_format: str, *, export_user_id: bool = True) -> None:
        self.columns = columns(export_type, export_user_id=export_user_id)
        self.csv = export_format == "CsvBlob"

    def header(self) -> bytes:
        if not self.csv:
            return b""
        return (",".join(csv_column(list(self.columns))) + "\r\n").encode("utf-8")

    def encode(self, rows: List[dict]) -> bytes:
        cols = self.columns
        if not rows:
            return b""
        if self.csv:
            fields = [csv_column([row.get(column, "") for row in rows]) for column in cols]
            return ("\r\n".join(map(",".join, zip(*fields))) + "\r\n").encode("utf-8")
        return b"".join(orjson.dumps({c: row[c] for c in cols if row.get(c) is not None}) + b"\n" for row in rows)


def gzip_member(data: bytes) -> bytes:
    """``data`` as one whole gzip member; members one after another make a valid gzip file."""
    return isal_zlib.compress(data, GZIP_LEVEL, 31)


class GzipSink:
    """Compresses what it is given into one gzip member; ``emit`` receives blocks of BLOCK_BYTES (the last one
    shorter)."""

    def __init__(self, emit: Callable[[bytes], None], *, level: int = GZIP_LEVEL, block_bytes: Optional[int] = None,
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

    def _flush_block(self, size: Optional[int] = None) -> None:
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
