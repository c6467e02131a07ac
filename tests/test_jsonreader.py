"""ParquetBlob's reading of raw rows with DuckDB (shared.export.jsonreader) gives what the exact reading gives
(msgspec and shared.export.arrowbuffers), value for value; where DuckDB would write a nested value's JSON text
otherwise, or refuses a run, the run is read the exact way; and no run file outlives its part."""

from __future__ import annotations

import time

import duckdb
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_rows import COLUMNS, NESTED, ROWS, SPECS, stored

from shared.export import jsonreader, sources
from shared.export.registry import EXPORT_TYPES
from shared.export.rows import RowSpec
from shared.export.schemas import JSON, Column

EVENTS = RowSpec(EXPORT_TYPES["Event"].schema)


@pytest.fixture(scope="module")
def connection():
    with duckdb.connect(config={"threads": 1}) as connection:
        yield connection


@pytest.fixture(scope="module")
def read(connection, tmp_path_factory):
    """Reads rows as a run file, as a part does: (DuckDB's table or None, the exact reading's table)."""
    folder = tmp_path_factory.mktemp("runs")
    counter = iter(range(10**9))

    def read(text: bytes, spec: RowSpec):
        path = folder / f"run-{next(counter)}.jsonl"
        path.write_bytes(text)
        return jsonreader.read_file(connection, str(path), spec), jsonreader.read_exactly(text, spec)

    return read


def event(index: int, **fields) -> dict:
    return {"type": "event", "deviceId": f"d{index % 7}", "sessionId": f"s{index % 3}", "name": "open",
            "timestamp": f"2026-01-15T00:00:{index % 60:02d}.{index % 1000:03d}Z", **fields}


@settings(max_examples=300, deadline=None)
@example([{"type": "event", "j": 1e16, "s": "\x1b"}], RowSpec(COLUMNS))
@given(ROWS, SPECS)
def test_a_run_read_by_duckdb_holds_what_the_exact_reading_holds(read, rows, spec):
    got, want = read(stored(rows), spec)
    if got is not None:
        assert got.schema == want.schema
        assert got.to_pylist() == want.to_pylist()


def test_events_as_collect_stores_them_are_read_by_duckdb(read):
    rows = [event(index, userId=None if index % 2 else "u1", extras={"level": index, "price": 6.95, "item": "a,\"b\""})
            for index in range(500)]
    got, want = read(stored(rows), EVENTS)
    assert got is not None, "an ordinary run of events is read by DuckDB, not the exact way"
    assert got.to_pylist() == want.to_pylist()
    assert got.column("extras").to_pylist()[1] == '{"level":1,"price":6.95,"item":"a,\\"b\\""}'


@pytest.mark.parametrize("value", [1e-05, 1e16, 1.2345678901234567e16, -2.5e-05, "\x1b", {"a": [0.00001]}])
def test_a_nested_value_duckdb_writes_otherwise_sends_its_run_the_exact_way(read, value):
    rows = [event(1, extras={"v": value}), event(2, extras={"v": 1})]
    got, want = read(stored(rows), EVENTS)
    assert got is None
    assert want.column("extras").to_pylist()[0] == orjson.dumps({"v": value}).decode()


@settings(max_examples=200, deadline=None)
@given(st.lists(NESTED, min_size=1, max_size=10))
def test_nested_text_duckdb_keeps_is_orjson_s_text(read, values):
    spec = RowSpec((Column("j", JSON),))
    got, _ = read(b"".join(orjson.dumps({"j": value}) + b"\n" for value in values), spec)
    if got is not None:
        assert got.column("j").to_pylist() == [None if value is None else orjson.dumps(value).decode()
                                               for value in values]


def test_a_line_duckdb_refuses_is_read_the_exact_way_which_names_it(connection, tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_bytes(stored([event(1)]) + b'{"name": "broken\n')
    assert jsonreader.read_file(connection, str(path), EVENTS) is None
    with pytest.raises(orjson.JSONDecodeError):
        jsonreader._read_run(connection, str(path), EVENTS)


@pytest.mark.parametrize("include,exclude,kept", [(frozenset({"open"}), None, ["d1", "d3"]),
                                                   (None, frozenset({"open"}), ["d2", "d4"])])
def test_names_filter_keeps_a_row_without_a_name_only_when_excluding(read, include, exclude, kept):
    rows = [event(1), {**event(2), "name": "buy"}, event(3), {k: v for k, v in event(4).items() if k != "name"}]
    got, want = read(stored(rows), RowSpec(EVENTS.columns[:2], include, exclude))
    assert got is not None and got.column_names == ["deviceId", "userId"]
    assert got.column("deviceId").to_pylist() == kept
    assert got.to_pylist() == want.to_pylist()


def test_run_files_are_gone_when_the_part_ends_or_fails(app_env, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    runs = [stored([event(index) for index in range(start, start + 50)]) for start in range(0, 200, 50)]

    class HalvedRuns(sources.RowText):
        def pieces(self, run_bytes):
            for run in runs:
                half = len(run) // 2
                yield run[:half], False
                yield run[half:], True

    converted = list(jsonreader.converted(HalvedRuns(), EVENTS, 2))
    assert [count for count, _ in converted] == [50] * 4
    assert [row["timestamp"].second for _, table in converted for row in table.to_pylist()][:3] == [0, 1, 2]
    assert list(tmp_path.iterdir()) == []

    reading = jsonreader.converted(HalvedRuns(), EVENTS, 2)
    next(reading)
    assert list(tmp_path.iterdir()), "the part's runs are read from its folder"
    reading.close()  # the part failed after its first run: the reading thread stops and removes the folder
    deadline = time.monotonic() + 10
    while list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.iterdir()) == []
