"""The encoders of the text result formats, JSON Lines (`JsonBlob`) and RFC 4180 CSV with a header (`CsvBlob`),
and their gzip compression (shared.export.registry says which format uses which).

Columns per export type are fixed, so every CSV file of a type has the same header; nested values
(extras, info, location, appInfo) are JSON in one column. `GzipSink` compresses a stream of bytes into
one gzip member and hands out blocks of bounded size, so memory never grows with the export.
"""

from __future__ import annotations

import hashlib
from typing import Callable, List, Optional, Protocol, Tuple

import orjson
from isal import isal_zlib

BLOCK_BYTES = 4 * 1024 * 1024
# ISA-L's deflate (isal) at level 2 compresses about 10x faster than zlib at 6, for files about 5% larger:
# on CSV exports, compression was a third of the CPU time.
GZIP_LEVEL = 2


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


class TextEncoder(Protocol):
    """Turns batches of row dicts into the text of one format, column by column in ``columns``' order."""

    columns: Tuple[str, ...]

    def __init__(self, columns: Tuple[str, ...]) -> None: ...

    def header(self) -> bytes: ...

    def encode(self, rows: List[dict]) -> bytes: ...


class JsonLinesEncoder:
    """One JSON object per line; a null or missing value is left out of its row."""

    def __init__(self, columns: Tuple[str, ...]) -> None:
        self.columns = columns

    def header(self) -> bytes:
        return b""

    def encode(self, rows: List[dict]) -> bytes:
        cols = self.columns
        return b"".join(orjson.dumps({c: row[c] for c in cols if row.get(c) is not None}) + b"\n" for row in rows)


class CsvEncoder:
    """RFC 4180 with CRLF rows, starting with a header row of the column names."""

    def __init__(self, columns: Tuple[str, ...]) -> None:
        self.columns = columns

    def header(self) -> bytes:
        return (",".join(csv_column(list(self.columns))) + "\r\n").encode("utf-8")

    def encode(self, rows: List[dict]) -> bytes:
        if not rows:
            return b""
        fields = [csv_column([row.get(column, "") for row in rows]) for column in self.columns]
        return ("\r\n".join(map(",".join, zip(*fields))) + "\r\n").encode("utf-8")


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
