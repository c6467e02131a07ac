"""The CSV writer is RFC 4180 as the csv module writes it (QUOTE_MINIMAL, CRLF), for any values."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.export.exportformats import CsvEncoder, csv_text
from shared.export.registry import EXPORT_TYPES

# Runs without Azurite or a host: `make test-pure`.
pytestmark = pytest.mark.pure

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", ",", '"', "\r", "\n", "\r\n", 'a "quoted", line\nbreak', " spaced ", "ü€😀"])
NUMBERS = st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                      max_leaves=6)
EVENT = EXPORT_TYPES["Event"].columns


def reference(rows, columns) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([[csv_text(row.get(column)) for column in columns] for row in rows])
    return buffer.getvalue().encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({}, optional={column: VALUES for column in EVENT}), max_size=8))
def test_csv_rows_are_byte_for_byte_what_the_csv_module_writes(rows):
    encoder = CsvEncoder(EXPORT_TYPES["Event"].schema)
    written = encoder.header() + encoder.encode(rows)
    assert written == reference(rows, EVENT)
    parsed = list(csv.reader(io.StringIO(written.decode("utf-8"), newline="")))
    assert parsed[0] == list(EVENT)
    assert parsed[1:] == [[csv_text(row.get(column)) for column in EVENT] for row in rows]


def test_nested_values_are_json_booleans_lowercase_and_null_empty():
    encoder = CsvEncoder(EXPORT_TYPES["Device"].schema)
    row = {"deviceId": "d1", "firstSeen": "2026-01-01T00:00:00.000Z", "nativePushEnabled": False,
           "info": {"os": "iOS", "model": 'iPhone "15", pro'}, "appInfo": {}}
    assert encoder.encode([row]) == (
        b'd1,2026-01-01T00:00:00.000Z,,false,"{""os"":""iOS"",""model"":""iPhone \\""15\\"", pro""}",,{}\r\n')


def test_arrow_takes_its_buffers_from_jemalloc_in_the_process_that_writes_parquet():
    # pyarrow's own default (mimalloc) kept what each part freed, and glibc faulted every buffer in afresh; the
    # setting must be in place before pyarrow's first allocation, whatever the function loads first.
    env = {name: value for name, value in os.environ.items() if name != "ARROW_DEFAULT_MEMORY_POOL"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shown = subprocess.run([sys.executable, "-c", "import ExportWorker, pyarrow; "
                            "print(pyarrow.default_memory_pool().backend_name)"],
                           cwd=root, env=env, capture_output=True, text=True, check=True, timeout=60)
    assert shown.stdout.strip() == "jemalloc"
