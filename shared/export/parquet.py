"""ParquetBlob: one Parquet file per part, written with pyarrow. Columns are typed by the export type's schema
(shared.export.schemas): UTC times as timestamp[ms, tz=UTC], integers as int64, booleans as bool, nested values
as JSON text. Pages are zstd-compressed; row groups hold ROW_GROUP_ROWS rows, the size DuckDB and Spark read
in parallel well, so a reader's memory per row group stays a few tens of MiB.
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from shared.export.exportformats import GzipSink, RowSpec, parse_lines
from shared.export.schemas import BOOLEAN, INTEGER, JSON, NUMBER, TIME, Column, arrow_schema

ROW_GROUP_ROWS = 122_880
COMPRESSION = "zstd"


def _column_array(column: Column, values: list, arrow_type) -> pa.Array:
    if column.kind == JSON:
        dumps = orjson.dumps
        return pa.array([None if value is None else dumps(value).decode("utf-8") for value in values], pa.string())
    if column.kind == TIME:
        # ISO 8601 text with Z, as every stored time is: Arrow parses it in C++.
        return pa.array(values, pa.string()).cast(arrow_type)
    if column.kind in (INTEGER, NUMBER, BOOLEAN):
        return pa.array(values, arrow_type)
    return pa.array(values, pa.string())


def record_batch(rows: List[dict], columns: Sequence[Column]) -> pa.RecordBatch:
    """Rows as an Arrow record batch of the columns' types."""
    schema = arrow_schema(columns)
    arrays = [_column_array(column, [row.get(column.name) for row in rows], field.type)
              for column, field in zip(columns, schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def arrow_run(text: bytes, spec: RowSpec) -> Tuple[int, bytes]:
    """A pool process's conversion of a run of JSON Lines rows: an Arrow record batch, as IPC stream bytes."""
    rows = spec.select(parse_lines(text))
    batch = record_batch(rows, spec.columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return len(rows), sink.getvalue().to_pybytes()


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

    def __init__(self, emit: Callable[[bytes], None], spec: RowSpec, *, converted: bool = False) -> None:
        self.sink = GzipSink(emit, compress=False)
        self._columns = spec.columns
        self._schema = arrow_schema(spec.columns)
        self._writer = pq.ParquetWriter(_BlockStream(self.sink), self._schema, compression=COMPRESSION,
                                        write_statistics=True)
        self._pending: List[pa.RecordBatch] = []
        self._pending_rows = 0

    def write_rows(self, rows: List[dict]) -> None:
        if rows:
            self._add(record_batch(rows, self._columns))

    def write_converted(self, payload: bytes) -> None:
        with pa.ipc.open_stream(payload) as reader:
            for batch in reader:
                self._add(batch)

    def _add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
        while self._pending_rows >= ROW_GROUP_ROWS:
            self._write_group(ROW_GROUP_ROWS)

    def _write_group(self, rows: int) -> None:
        table = pa.Table.from_batches(self._pending, schema=self._schema)
        self._writer.write_table(table.slice(0, rows), row_group_size=rows)
        rest = table.slice(rows)
        self._pending = rest.to_batches() if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close(self) -> None:
        if self._pending_rows:
            self._write_group(self._pending_rows)
        self._writer.close()
        self.sink.close()
