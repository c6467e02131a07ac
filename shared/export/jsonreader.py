"""ParquetBlob's reading of raw JSON Lines: DuckDB's JSON reader turns each run of rows into the Arrow columns of
the file's schema, in C++ without the GIL, while the part's other threads cut the next run and write the last.

DuckDB is the reader because it keeps a nested value (extras, info, location, appInfo) as JSON text: pyarrow's
JSON reader makes each object a struct whose shape follows the app's keys. Reading 2M events took DuckDB 1.2 s
of CPU, where our own reader (msgspec, then the buffers of shared.export.arrowbuffers, in conversion processes
that send them back through a pipe) took about 5 s. A run is handed to DuckDB as a file in a temporary folder
(DuckDB reads files, and a pipe it would hold whole): the file lives for one run, so it is written to and read
from the page cache, and the folder never holds more than one run.

A file must hold what the exact reading (shared.export.arrowbuffers) gives, value for value:
- Scalar columns are read as the schema types them. DuckDB would turn a value of another JSON type into that
  type (a number into its text for a string column), where the exact reading refuses it; the raw store holds
  only records Collect checked field by field (shared.ingest.records), so its strings are strings.
- DuckDB writes its own JSON text of a nested value. It is orjson's text except in two things: a float whose
  shortest form has an exponent (DuckDB writes some of them out in full: 0.00001, 10000000000000000.0), and a
  control character escaped with capital hex digits (\\u001B, not \\u001b). A run where DuckDB's text may hold
  either is read the exact way instead (`_MAY_DIFFER`; text inside a string that looks like one costs a slower
  run, never a wrong value). So is a run DuckDB refuses (a line that is not a JSON object, text that is not
  UTF-8): the exact reading then raises the error that names the row.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING

from shared.export import arrowbuffers, parquet, sources
from shared.export.pipeline import prefetch
from shared.export.rows import RowSpec
from shared.export.schemas import BOOLEAN, INTEGER, JSON, NUMBER, STRING, TIME, Column, arrow_schema
from shared.platform.config import get_settings

if TYPE_CHECKING:
    import pyarrow as pa

# Rows are read from runs of this much text, one DuckDB query each (a query costs a few ms however small its
# run). DuckDB reads a file into buffers of 32 MiB, of which a run's size is touched.
RUN_BYTES = 4 * 1024 * 1024

_DUCKDB_TYPES = {STRING: "VARCHAR", TIME: "VARCHAR", INTEGER: "BIGINT", NUMBER: "DOUBLE", BOOLEAN: "BOOLEAN",
                 JSON: "JSON"}
# Where DuckDB's JSON text may not be orjson's: a number, where a value starts, written with
# 17 or more digits before its point, with 0.0000 before its digits, or with an exponent; or a control character
# escaped with a capital hex digit.
_MAY_DIFFER = r"(^|[:,\[])-?([0-9]{17}|0\.0000|[0-9.]+[eE])|\\u00[01][A-F]"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@lru_cache(maxsize=64)
def _query(spec: RowSpec) -> tuple[str, bool]:
    """The query reading a run's file (its path is the query's one parameter) into the spec's columns, plus the
    name when the spec filters on it; and whether the name was added for that."""
    fields = list(spec.columns)
    adds_name = spec.filters and "name" not in spec.names
    if adds_name:
        fields.append(Column("name"))
    selected = ", ".join(_quoted(column.name) + ("::VARCHAR" if column.kind == JSON else "") + " AS "
                         + _quoted(column.name) for column in fields)
    columns = ", ".join(f"{_literal(column.name)}: '{_DUCKDB_TYPES[column.kind]}'" for column in fields)
    return (f"SELECT {selected} FROM read_json($path, format = 'newline_delimited', columns = {{{columns}}})",
            adds_name)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def read_file(connection, path: str, spec: RowSpec) -> pa.Table | None:
    """The rows ``spec`` keeps of a file of raw JSON Lines, as a table of the file's schema; None when they are
    to be read the exact way (see the module's docstring)."""
    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc

    query, adds_name = _query(spec)
    try:
        table = connection.sql(query, params={"path": path}).to_arrow_table()
    except duckdb.Error:
        return None
    for column in spec.columns:
        if column.kind == JSON and pc.any(pc.match_substring_regex(table[column.name], _MAY_DIFFER)).as_py():
            return None
    if spec.filters:
        names = table["name"]
        if spec.include_names is not None:
            kept = pc.is_in(names, value_set=pa.array(sorted(spec.include_names), pa.string()))
        else:
            kept = pc.invert(pc.is_in(names, value_set=pa.array(sorted(spec.exclude_names or ()), pa.string())))
        table = table.filter(kept)  # is_in is false for a null name: kept by an exclusion, not by an inclusion
        if adds_name:
            table = table.drop_columns(["name"])
    schema = arrow_schema(spec.columns)
    return pa.Table.from_arrays([table[field.name].cast(field.type) for field in schema], schema=schema)


def read_exactly(text: bytes, spec: RowSpec) -> pa.Table:
    """A run read the exact way: msgspec and shared.export.arrowbuffers, in this process."""
    import pyarrow as pa

    count, buffers = arrowbuffers.buffers_run(text, spec)
    return pa.Table.from_batches([parquet.record_batch(buffers, count, arrow_schema(spec.columns), spec.columns)])


_lock = threading.Lock()
_database = None
_database_threads = 0


def _cursor(threads: int):
    """A connection of its own (parts run side by side) to the process's one DuckDB database: the parts share its
    threads and its memory (a database takes about 25 MiB before its first query)."""
    global _database, _database_threads
    import duckdb

    with _lock:
        if _database is None or _database_threads != threads:
            _database = duckdb.connect(config={"threads": threads})
            _database_threads = threads
        return _database.cursor()


def _tables(text: sources.RowText, spec: RowSpec, threads: int) -> Iterator[tuple[int, pa.Table]]:
    with tempfile.TemporaryDirectory(prefix="ee-runs-") as folder, _cursor(threads) as connection:
        runs = 0
        run = None
        try:
            for piece, ends in text.pieces(RUN_BYTES):
                if run is None:
                    # A new name for each run, so nothing DuckDB may keep about a file it read applies to the next.
                    run = open(os.path.join(folder, f"run-{runs:06d}.jsonl"), "wb")
                    runs += 1
                run.write(piece)
                if ends:
                    run.close()
                    yield _read_run(connection, run.name, spec)
                    os.remove(run.name)
                    run = None
        finally:
            if run is not None:
                run.close()


def _read_run(connection, path: str, spec: RowSpec) -> tuple[int, pa.Table]:
    table = read_file(connection, path, spec)
    if table is None:
        with open(path, "rb") as run:
            table = read_exactly(run.read(), spec)
    return table.num_rows, table


def converted(text: sources.RowText, spec: RowSpec, cores: int) -> Iterator[tuple[int, pa.Table]]:
    """(rows kept, their table) of each run of the rows, in order, read by DuckDB one run ahead of the caller.

    The parts a worker runs side by side share the ``cores``: each query gets its share of them. One DuckDB
    thread per part on 2 cores read as fast as two, with 15-35 MiB less memory at the peak of two parts."""
    threads = max(1, cores // get_settings().worker_concurrency)
    return prefetch(_tables(text, spec, threads), depth=1)
