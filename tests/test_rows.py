"""Runs of stored rows decoded straight into columns (shared.export.rows, msgspec) give the files that parsing
each row into a dict gives: the same CSV bytes, the same Parquet values, the same rows kept by a names filter,
and the same error for a bad row."""

from __future__ import annotations

import gzip
import json

import orjson
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.export import sources
from shared.export.arrowbuffers import buffers_run
from shared.export.exportformats import CsvEncoder, JsonLinesEncoder
from shared.export.parquet import record_batch
from shared.export.registry import EXPORT_TYPES
from shared.export.rows import RowSpec, decode_columns, nested_texts, parse_lines
from shared.export.schemas import BOOLEAN, INTEGER, JSON, NUMBER, STRING, TIME, Column, arrow_schema
from shared.ingest.records import encode_line, format_time

# Runs without Azurite or a host: `make test-pure`.
pytestmark = pytest.mark.pure

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", ",", '"', "\r\n", 'a "quoted", line\nbreak', "ü€😀", "\u2028", "e+5", "1e-05"])
FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1e16, 1e-05, 1.5e300, -0.0, 0.1])
NESTED = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | FLOATS | TEXT,
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                      max_leaves=6)
TIMES = st.datetimes(timezones=st.just(__import__("datetime").timezone.utc)).map(format_time)
COLUMNS = (Column("s"), Column("t", TIME), Column("i", INTEGER), Column("n", NUMBER), Column("b", BOOLEAN),
           Column("j", JSON))
KIND_VALUES = {STRING: TEXT, TIME: TIMES, INTEGER: st.integers(-2**63, 2**63 - 1), NUMBER: FLOATS,
               BOOLEAN: st.booleans(), JSON: NESTED}
ROWS = st.lists(st.fixed_dictionaries(
    {"type": st.just("event")},
    optional={"name": st.sampled_from(["open", "buy", "quit"]),
              **{column.name: st.none() | KIND_VALUES[column.kind] for column in COLUMNS}}), max_size=12)


def stored(rows) -> bytes:
    """Rows as the raw store holds them."""
    return b"".join(encode_line(row) for row in rows)


def _reference_array(column: Column, values: list, arrow_type) -> pa.Array:
    """What a row-by-row writer makes of a column: nested values as orjson's JSON text."""
    if column.kind == JSON:
        return pa.array([None if value is None else orjson.dumps(value).decode() for value in values], pa.string())
    if column.kind == TIME:
        return pa.array(values, pa.string()).cast(arrow_type)
    return pa.array(values, arrow_type)


SPECS = st.sampled_from([RowSpec(COLUMNS), RowSpec(COLUMNS[::2]), RowSpec(COLUMNS, frozenset({"buy"})),
                         RowSpec(COLUMNS[3:], None, frozenset({"open", "quit"}))])


@settings(max_examples=300, deadline=None)
@given(ROWS, SPECS)
def test_csv_from_columns_is_byte_for_byte_csv_from_dicts(rows, spec):
    text = stored(rows)
    encoder = CsvEncoder(spec.columns)
    kept = spec.select(parse_lines(text))
    assert encoder.encode_run(text, spec) == (len(kept), encoder.encode(kept))


OBJECTS = st.dictionaries(TEXT, NESTED, min_size=1, max_size=3)


@settings(max_examples=200, deadline=None)
@example([{"a": "x,y"}, {}, {"b": [1]}])
@example([{}, {"a": 1}])
@example([{"a": 1e-05}, {"b": 'say "hi"'}])
@given(st.lists(OBJECTS | OBJECTS.map(lambda value: [value]) | st.just({}) | NESTED, min_size=1, max_size=8))
def test_a_csv_column_of_objects_is_byte_for_byte_csv_from_dicts(objects):
    text = stored([{"s": "a", "j": value} for value in objects])
    encoder = CsvEncoder(COLUMNS[::5])
    assert encoder.encode_run(text, RowSpec(COLUMNS[::5])) == (len(objects), encoder.encode(parse_lines(text)))


@settings(max_examples=300, deadline=None)
@given(ROWS, SPECS)
def test_parquet_batches_hold_what_each_row_holds(rows, spec):
    text = stored(rows)
    count, buffers = buffers_run(text, spec)
    schema = arrow_schema(spec.columns)
    batch = record_batch(buffers, count, schema, spec.columns)
    kept = spec.select(parse_lines(text))
    expected = pa.RecordBatch.from_arrays(
        [_reference_array(column, [row.get(column.name) for row in kept], field.type)
         for column, field in zip(spec.columns, schema)], schema=schema)
    assert count == len(kept)
    assert batch.to_pylist() == expected.to_pylist()
    batch.validate(full=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(NESTED, max_size=10))
def test_nested_values_keep_the_json_text_orjson_writes(values):
    text = b"".join(encode_line({"j": value}) for value in values)
    _, (column,) = decode_columns(text, RowSpec((Column("j", JSON),)))
    assert nested_texts(column) == [None if value is None else orjson.dumps(value).decode() for value in values]


def test_nested_values_laid_out_from_their_stored_text_read_back_as_the_json_text_orjson_writes():
    text = b'{"j":null}\n{"j":{"a":"\xc3\xbc","b":[1,2.5,true]}}\n{}\n{"j":"\xe2\x82\xac"}\n{"j":7}\n'
    spec = RowSpec((Column("j", JSON),))
    count, buffers = buffers_run(text, spec)
    batch = record_batch(buffers, count, arrow_schema(spec.columns), spec.columns)
    batch.validate(full=True)
    assert batch.column(0).to_pylist() == [None, '{"a":"ü","b":[1,2.5,true]}', None, '"€"', "7"]


def test_floats_in_exponent_form_are_written_as_orjson_writes_them():
    rows = [{"j": {"big": 1e20, "small": 1e-05, "label": "one-2e+3"}}, {"j": [1.5e300]}, {"j": "e+1"}]
    _, (column,) = decode_columns(stored(rows), RowSpec((Column("j", JSON),)))
    assert json.dumps(rows[0]["j"]) != orjson.dumps(rows[0]["j"]).decode()  # the texts the stores differ in
    assert nested_texts(column) == [orjson.dumps(row["j"]).decode() for row in rows]


def test_a_bad_row_raises_what_parsing_it_alone_raises():
    text = stored([{"name": "open"}]) + b'{"name": "broken\n'
    with pytest.raises(orjson.JSONDecodeError):
        decode_columns(text, RowSpec(COLUMNS))


def test_blank_lines_are_skipped_and_unknown_fields_ignored():
    text = b'\n{"type":"event","s":"a","extra":{"deep":[1,2]}}\n\n{"s":"b"}\n'
    count, columns = decode_columns(text, RowSpec((Column("s"),)))
    assert (count, [list(values) for values in columns]) == (2, [["a", "b"]])


def test_json_lines_runs_still_leave_out_what_is_null():
    spec = RowSpec(EXPORT_TYPES["Event"].schema[:2])
    text = stored([{"deviceId": "d", "userId": None, "timestamp": "2026-01-01T00:00:00.000Z"}])
    assert JsonLinesEncoder(spec.columns).encode_run(text, spec) == (1, b'{"deviceId":"d"}\n')


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda line: line.replace(b"\n", b"") + b"\n"), max_size=40),
       st.binary(max_size=8).map(lambda tail: tail.replace(b"\n", b"")), st.integers(1, 64), st.integers(1, 200),
       st.integers(1, 50), st.integers(1, 32), st.integers(1, 32))
def test_raw_text_is_cut_into_runs_of_whole_lines(lines, tail, member_bytes, chunk_bytes, run_bytes, feed_bytes,
                                                  piece_bytes):
    data = b"".join(lines) + tail
    gzipped = b"".join(gzip.compress(data[at:at + member_bytes]) for at in range(0, len(data), member_bytes))
    chunks = [gzipped[at:at + chunk_bytes] for at in range(0, len(gzipped), chunk_bytes)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "raw_chunks", lambda blobs, **reading: iter(chunks))
        patch.setattr(sources, "ROW_TEXT_BYTES", run_bytes)
        # Slices and pieces smaller than a member: decompression stops at its output limit and goes on.
        patch.setattr(sources, "FEED_BYTES", feed_bytes)
        patch.setattr(sources, "PIECE_BYTES", piece_bytes)
        runs = list(sources.line_text([("blob", len(data))]))
    assert b"".join(runs) == (data if tail.strip() else b"".join(lines))  # a blank last line is dropped
    assert all(run.endswith(b"\n") for run in runs[:-1])
    assert all(run_bytes <= len(run) <= run_bytes + 40 for run in runs[:-1])
    assert all(len(run) <= run_bytes + 40 for run in runs[-1:])
