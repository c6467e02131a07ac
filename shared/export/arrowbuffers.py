"""Rows as the memory of Arrow arrays, built in plain Python: ParquetBlob's exact reading, for the rows of the
types not kept raw (sessions, snapshots) and for a run of raw rows DuckDB does not read as the files need
(shared.export.jsonreader says when).

A run is decoded (shared.export.rows) and each column laid out as Arrow lays it out (a string column as
int32 offsets and UTF-8 bytes; an integer or number column as 8-byte values; a boolean column as a byte per
row), with a byte per row saying which values are present when some are null; shared.export.parquet wraps
those bytes as arrays without copying them. Text columns are joined and encoded once per column, not per
value; nested values are laid out from the JSON text they were stored as, without decoding it. (It was
written for conversion processes that never import pyarrow, which is why it builds bytes, not arrays.)
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Sequence

from shared.export.rows import NULL_TEXT, Raw, RowSpec, decode_columns, may_hold_exponent, nested_texts
from shared.export.schemas import BOOLEAN, INTEGER, JSON, NUMBER, Column

# (present: a byte per row, 1 where the value is not null, or None when none is null; the value buffers)
ColumnBuffers = tuple[bytes | None, tuple[bytes, ...]]


def _present(values: Sequence) -> bytes | None:
    return bytes(value is not None for value in values) if None in values else None


def _text_buffers(values: Sequence) -> tuple[bytes, ...]:
    """int32 offsets and UTF-8 data of a column of strings (None taken as "")."""
    if None in values:
        values = ["" if value is None else value for value in values]
    text = "".join(values)  # a value that is not a string is refused here, as pyarrow would refuse it
    data = text.encode("utf-8")
    # All ASCII (the usual case): a character is a byte, so lengths are the strings' lengths.
    lengths = map(len, values) if len(data) == len(text) else (len(value.encode("utf-8")) for value in values)
    return array("i", itertools.accumulate(lengths, initial=0)).tobytes(), data


_STORED_KINDS = {Raw, type(None)}


def _stored_json_buffers(values: Sequence) -> ColumnBuffers | None:
    """A column of nested values laid out straight from their stored JSON text (`Raw`, as decode_columns leaves
    it), with no string made per value: that text is what nested_texts gives unless a float in exponent form
    may be in it. None when it may, or when a value is not stored text (rows parsed as dicts)."""
    if not set(map(type, values)) <= _STORED_KINDS:
        return None
    present = None
    if None in values or NULL_TEXT in values:
        present = bytes([value is not None and value != NULL_TEXT for value in values])
        values = [value if kept else b"" for value, kept in zip(values, present)]
    data = b"".join(values)
    if may_hold_exponent(data) or not (data.isascii() or _is_utf8(data)):
        return None
    return present, (array("i", itertools.accumulate(map(len, values), initial=0)).tobytes(), data)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def column_buffers(column: Column, values: Sequence) -> ColumnBuffers:
    if column.kind == JSON:
        stored = _stored_json_buffers(values)
        if stored is not None:
            return stored
        values = nested_texts(values)
    if column.kind == INTEGER:
        return _present(values), (array("q", [0 if value is None else value for value in values]).tobytes(),)
    if column.kind == NUMBER:
        return _present(values), (array("d", [0.0 if value is None else value for value in values]).tobytes(),)
    if column.kind == BOOLEAN:
        return _present(values), (bytes(value is True for value in values),)
    return _present(values), _text_buffers(values)  # strings, JSON text, and times as text


def batch_buffers(values: Sequence[Sequence], columns: Sequence[Column]) -> list[ColumnBuffers]:
    """Rows, given as one list of values per column, as each column's buffers."""
    return [column_buffers(column, column_values) for column, column_values in zip(columns, values)]


def buffers_run(text: bytes, spec: RowSpec) -> tuple[int, list[ColumnBuffers]]:
    """The exact reading of a run of raw JSON Lines rows for a Parquet file: each column's buffers."""
    count, values = decode_columns(text, spec)
    return count, batch_buffers(values, spec.columns)
