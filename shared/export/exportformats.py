"""The encoders of the text result formats, JSON Lines (`JsonBlob`) and RFC 4180 CSV with a header (`CsvBlob`),
and their gzip compression (shared.export.registry says which format uses which).

Columns per export type are fixed, so every CSV file of a type has the same header; nested values
(extras, info, location, appInfo) are JSON in one column. `GzipSink` compresses a stream of bytes into
one gzip member and hands out blocks of bounded size, so memory never grows with the export.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson
from isal import isal_zlib

from shared.export.pipeline import Background
from shared.export.rows import RowSpec, decode_columns, may_hold_exponent, nested_texts, parse_lines, row_columns
from shared.export.schemas import JSON, Column

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


def csv_column(values: Sequence) -> Sequence[str]:
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
    return _quoted_where_needed(texts, joined)


def csv_nested_column(values: Sequence) -> Sequence[str]:
    """The CSV fields of a column of nested values (see shared.export.rows.nested_texts): objects and arrays as
    their JSON text; a bare string, number or boolean as csv_text writes it; null as an empty field."""
    objects = _quoted_stored_objects(values)
    if objects is not None:
        return objects
    texts = [text if text is not None and text[0] in "{[" else "" if text is None else csv_text(orjson.loads(text))
             for text in nested_texts(values)]
    return _quoted_where_needed(texts, "".join(texts))


def _quoted_stored_objects(values: Sequence) -> list[str] | None:
    """The fields of a column of objects with at least one key, still as their stored JSON text (`Raw`, as
    decode_columns leaves them; see nested_texts for when that text is the one written): each holds a quote,
    so each is quoted, which is done for the whole column at once. None for any other column."""
    try:
        joined = b"\x00".join(values)  # NUL is never in JSON text, so it marks where each value ends
    except TypeError:  # null, or values parsed as dicts
        return None
    others = len(values) - 1
    if not (joined.startswith(b'{"') and joined.count(b'\x00{"') == others == joined.count(b"\x00")) \
            or may_hold_exponent(joined):
        return None
    text = joined.decode("utf-8")
    return ('"' + text.replace('"', '""').replace("\x00", '"\x00"') + '"').split("\x00")


def _quoted_where_needed(texts: Sequence[str], joined: str) -> Sequence[str]:
    if not _needs_quotes(joined):
        return texts
    return [_quoted(text) for text in texts]


class TextEncoder(Protocol):
    """Turns batches of row dicts into the text of one format, column by column in ``columns``' order."""

    def __init__(self, columns: tuple[Column, ...]) -> None: ...

    def header(self) -> bytes: ...

    def encode(self, rows: list[dict]) -> bytes: ...

    def encode_run(self, text: bytes, spec: RowSpec) -> tuple[int, bytes]:
        """The rows ``spec`` keeps of a run of raw JSON Lines, encoded: (how many, text)."""


class JsonLinesEncoder:
    """One JSON object per line; a null or missing value is left out of its row."""

    def __init__(self, columns: tuple[Column, ...]) -> None:
        self.columns = tuple(column.name for column in columns)

    def header(self) -> bytes:
        return b""

    def encode(self, rows: list[dict]) -> bytes:
        cols = self.columns
        return b"".join(orjson.dumps({c: row[c] for c in cols if row.get(c) is not None}) + b"\n" for row in rows)

    def encode_run(self, text: bytes, spec: RowSpec) -> tuple[int, bytes]:
        rows = spec.select(parse_lines(text))
        return len(rows), self.encode(rows)


class CsvEncoder:
    """RFC 4180 with CRLF rows, starting with a header row of the column names."""

    def __init__(self, columns: tuple[Column, ...]) -> None:
        self.columns = tuple(column.name for column in columns)
        self._field_writers = [csv_nested_column if column.kind == JSON else csv_column for column in columns]

    def header(self) -> bytes:
        return (",".join(csv_column(list(self.columns))) + "\r\n").encode("utf-8")

    def encode(self, rows: list[dict]) -> bytes:
        return self.encode_columns(row_columns(rows, self.columns, ""))

    def encode_run(self, text: bytes, spec: RowSpec) -> tuple[int, bytes]:
        count, columns = decode_columns(text, spec, "")
        return count, self.encode_columns(columns)

    def encode_columns(self, columns: Sequence[Sequence]) -> bytes:
        """Rows given as one list of values per column ("" or None where a row has no value)."""
        if not columns or not columns[0]:
            return b""
        fields = [fields_of(values) for fields_of, values in zip(self._field_writers, columns)]
        return ("\r\n".join(map(",".join, zip(*fields))) + "\r\n").encode("utf-8")


def gzip_member(data: bytes) -> bytes:
    """``data`` as one whole gzip member; members one after another make a valid gzip file."""
    return isal_zlib.compress(data, GZIP_LEVEL, 31)


class GzipSink:
    """Compresses what it is given into one gzip member; ``emit`` receives blocks of BLOCK_BYTES (the last one
    shorter)."""

    def __init__(self, emit: Callable[[bytes], None], *, level: int = GZIP_LEVEL, block_bytes: int | None = None,
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

    def _flush_block(self, size: int | None = None) -> None:
        # Copied once, through a view: a slice of the bytearray and then bytes of it copied each block twice,
        # into memory mapped afresh (over glibc's mmap threshold, see pipeline.tune_allocator) and faulted in.
        with memoryview(self._pending) as pending:
            block = bytes(pending[:size] if size else pending)
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


class RowFile(Protocol):
    """One result file being written: rows go in, blocks come out through ``emit``; ``sink`` counts them."""

    sink: GzipSink

    def write_rows(self, rows: list[dict]) -> None: ...

    def write_converted(self, rows: int, payload: Any) -> None: ...

    def close(self) -> None: ...


# A pool process's work on a run of JSON Lines rows: how many rows it kept, and what write_converted takes
# (picklable, and made without the format's libraries where they are heavy: see shared.export.arrowbuffers).
RunConverter = Callable[[bytes, RowSpec], tuple[int, Any]]


class GzipTextFile:
    """A gzip text file (JSON Lines or CSV). Rows encoded here are compressed on a thread of their own; runs
    converted in the pool arrive as whole gzip members, and a gzip file is members one after another."""

    def __init__(self, encoder: TextEncoder, emit: Callable[[bytes], None], *, converted: bool) -> None:
        self._encoder = encoder
        self.sink = GzipSink(emit, compress=not converted)
        self._compressor = None if converted else Background(self.sink.write)
        if self._compressor is None:
            self.sink.write(gzip_member(encoder.header()))
        else:
            self._compressor.put(encoder.header())

    def write_rows(self, rows: list[dict]) -> None:
        if self._compressor is None:
            self.sink.write(gzip_member(self._encoder.encode(rows)))
        else:
            self._compressor.put(self._encoder.encode(rows))

    def write_converted(self, rows: int, payload: bytes) -> None:
        self.sink.write(payload)

    def close(self) -> None:
        if self._compressor is not None:
            self._compressor.close()
        self.sink.close()


# A text format's encoder class, made for the columns of a file.
EncoderClass = Callable[[tuple[Column, ...]], TextEncoder]


def text_file(encoder: EncoderClass) -> Callable[..., GzipTextFile]:
    def open_file(emit: Callable[[bytes], None], spec: RowSpec, *, converted: bool) -> GzipTextFile:
        return GzipTextFile(encoder(spec.columns), emit, converted=converted)
    return open_file


def gzip_text_run(encoder: EncoderClass, text: bytes, spec: RowSpec) -> tuple[int, bytes]:
    """A pool process's conversion of a run of JSON Lines rows into one gzip member of a text format."""
    count, data = encoder(spec.columns).encode_run(text, spec)
    return count, gzip_member(data)
