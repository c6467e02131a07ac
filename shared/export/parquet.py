"""ParquetBlob: one Parquet file per part, written with pyarrow. Columns are typed by the export type's schema
(shared.export.schemas): UTC times as timestamp[ms, tz=UTC], integers as int64, booleans as bool, nested values
as JSON text. Pages are zstd-compressed; row groups hold ROW_GROUP_ROWS rows (half of DuckDB's own 122,880,
about 2 MB of events once compressed): readers such as DuckDB and Spark read row groups in parallel, and the
writer holds one row group's columns until it is written, so memory stays a few tens of MiB on both sides.

pyarrow (about 40 MiB per process) is imported on first use, so a host or pool process that never writes
Parquet does not carry it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from shared.export.arrowbuffers import ColumnBuffers, batch_buffers
from shared.export.exportformats import GzipSink
from shared.export.pipeline import release_free_memory
from shared.export.rows import RowSpec, row_columns
from shared.export.schemas import (
    BOOLEAN,
    INTEGER,
    MICROSECONDS,
    MILLISECONDS,
    NUMBER,
    STRING,
    TIME,
    Column,
    arrow_schema,
)

if TYPE_CHECKING:
    import pyarrow as pa

ROW_GROUP_ROWS = 61_440
COMPRESSION = "zstd"

# Arrow's buffers come from jemalloc, which reuses what a row group freed for the next one (Arrow sets it to give
# pages that stay free back to the system promptly). The C library's allocator, told to unmap each large buffer
# as it is freed (tune_allocator), had every buffer of the writer faulted in afresh: with DuckDB reading the
# rows, a 2M-event export took 0.4-0.6 s longer that way (three exports of each, interleaved), for 12-15 MiB
# less at the peak of a 10M-event export. mimalloc, pyarrow's default, kept what each part's row groups freed
# (a 250 MiB peak, when conversion processes read the rows). Arrow reads the setting once, at its first
# allocation, so it is set when this module loads, before pyarrow is imported; a value in the app's settings
# wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")


def dictionary_columns(columns: Sequence[Column]) -> list[str]:
    """The columns written with dictionary encoding: the text columns (ids, names), whose values repeat. Times and
    nested values rarely do: a dictionary of them outgrows its page and is dropped for plain encoding part way
    through each row group, work for nothing (on events, files were 5% smaller and written with 14% less CPU
    this way than with a dictionary for every column)."""
    return [column.name for column in columns if column.kind == STRING]


def _bitmap(flags: bytes, rows: int) -> pa.Buffer:
    """A byte per row (0 or 1) as the bitmap Arrow keeps booleans and validity in."""
    import pyarrow as pa

    return pa.Array.from_buffers(pa.uint8(), rows, [None, pa.py_buffer(flags)]).cast(pa.bool_()).buffers()[1]


def _array(column: Column, buffers: ColumnBuffers, rows: int, arrow_type) -> pa.Array:
    import pyarrow as pa

    present, values = buffers
    validity = None if present is None else _bitmap(present, rows)
    if column.kind == BOOLEAN:
        return pa.Array.from_buffers(pa.bool_(), rows, [validity, _bitmap(values[0], rows)])
    if column.kind in (INTEGER, NUMBER):
        return pa.Array.from_buffers(arrow_type, rows, [validity, pa.py_buffer(values[0])])
    text = pa.Array.from_buffers(pa.string(), rows, [validity] + [pa.py_buffer(buffer) for buffer in values])
    # Times are ISO 8601 text with Z, as every stored time is: Arrow parses them in C++.
    return text.cast(arrow_type) if column.kind == TIME else text


def record_batch(buffers: list[ColumnBuffers], rows: int, schema: pa.Schema,
                 columns: Sequence[Column]) -> pa.RecordBatch:
    """A batch of ``rows`` rows given as each column's buffers (shared.export.arrowbuffers), without copying."""
    import pyarrow as pa

    arrays = [_array(column, column_buffers, rows, field.type)
              for column, column_buffers, field in zip(columns, buffers, schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class _BlockStream:
    """The file object ParquetWriter writes to: bytes go on to the blocks of the destination blob."""

    def __init__(self, sink: GzipSink) -> None:
        self._sink = sink
        self._position = 0
        self.closed = False

    def write(self, data) -> int:
        data = bytes(data)
        self._sink.write(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class ParquetFile:
    """One Parquet file being written; whole row groups are written as rows arrive."""

    TIME_UNIT = MILLISECONDS

    def __init__(self, emit: Callable[[bytes], None], spec: RowSpec, *, converted: bool = False) -> None:
        import pyarrow.parquet as pq

        self.sink = GzipSink(emit, compress=False)
        self._columns = spec.columns
        self._schema = arrow_schema(spec.columns)  # of the rows as they come
        self._written = arrow_schema(spec.columns, self.TIME_UNIT)  # of the file
        self._writer = pq.ParquetWriter(_BlockStream(self.sink), self._written, compression=COMPRESSION,
                                        write_statistics=True, use_dictionary=dictionary_columns(spec.columns))
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write_rows(self, rows: list[dict]) -> None:
        if rows:
            import pyarrow as pa

            values = row_columns(rows, [column.name for column in self._columns])
            batch = record_batch(batch_buffers(values, self._columns), len(rows), self._schema, self._columns)
            self._add(pa.Table.from_batches([batch]))

    def write_converted(self, rows: int, payload: pa.Table) -> None:
        """A run's rows as shared.export.jsonreader read them, in the file's schema."""
        self._add(payload)

    def _add(self, table: pa.Table) -> None:
        if table.num_rows:
            self._pending.append(table)
            self._pending_rows += table.num_rows
        while self._pending_rows >= ROW_GROUP_ROWS:
            self._write_group(ROW_GROUP_ROWS)

    def _write_group(self, rows: int) -> None:
        import pyarrow as pa

        table = pa.concat_tables(self._pending)
        group = table.slice(0, rows)
        self._writer.write_table(group if self.TIME_UNIT == MILLISECONDS else group.cast(self._written),
                                 row_group_size=rows)
        rest = table.slice(rows)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows
        # The group's buffers came from many runs and go all at once: what they leave free in the allocator's
        # arenas is given back now, not at the end of the part (10-20 MiB less at the peak, measured).
        release_free_memory()

    def close(self) -> None:
        if self._pending_rows:
            self._write_group(self._pending_rows)
        self._writer.close()
        self.sink.close()


class TableFile(ParquetFile):
    """A data file of a DeltaLake table: the same Parquet, and once closed, ``stats``: what the table's log says
    of it (rows, and per column its nulls and, for times and numbers, its least and greatest value), taken from
    the statistics the writer kept of each row group."""

    TIME_UNIT = MICROSECONDS
    stats: str | None = None

    def close(self) -> None:
        super().close()
        self.stats = json.dumps(file_stats(self._writer.writer.metadata, self._columns), separators=(",", ":"))


def file_stats(metadata, columns: Sequence[Column]) -> dict:
    """Delta Lake's per-file statistics from a Parquet file's metadata. Text columns get no bounds: a reader takes
    missing bounds as unknown, where a bound cut short would have to be adjusted as Spark does."""
    nulls = {column.name: 0 for column in columns}
    least: dict = {}
    greatest: dict = {}
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index, column in enumerate(columns):
            statistics = row_group.column(index).statistics
            if statistics is None:
                continue
            nulls[column.name] += statistics.null_count
            if column.kind not in (TIME, INTEGER, NUMBER) or not statistics.has_min_max:
                continue
            low, high = statistics.min, statistics.max
            if column.name not in least or low < least[column.name]:
                least[column.name] = low
            if column.name not in greatest or high > greatest[column.name]:
                greatest[column.name] = high
    return {"numRecords": metadata.num_rows, "minValues": {name: _stat(value) for name, value in least.items()},
            "maxValues": {name: _stat(value) for name, value in greatest.items()}, "nullCount": nulls}


def _stat(value):
    """A bound as JSON: times in UTC with microseconds (Delta's form for timestamps)."""
    if hasattr(value, "isoformat"):
        return value.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return value
