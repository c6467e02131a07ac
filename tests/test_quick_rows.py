"""Collect's quick path (shared.ingest.records.quick_row) against the full checks: for every record it takes,
it stores the same bytes under the same partition as normalize and encode_line would, and it leaves every
record the full checks refuse to them.

Records are built near the quick path's edges (lengths at their limits, times at the day's edges and just
past the clock limit, extras with floats at every magnitude, integers at 64 bits, lone surrogates, keys one
character out, objects and arrays nested to past the record's limit) and sent through JSON as a client sends
them, then read as Collect reads them.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_accepted_records_export import record_strategy

from bench.ingest import make_batches
from shared.ingest.records import HISTORICAL_TYPES, MAX_CLOCK_AHEAD, RecordError, normalize, quick_row, stored_row
from shared.platform import json_input

# Runs without Azurite or a host: `make test-pure`.
pytestmark = pytest.mark.pure

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

def usually(ok, bent):
    """``ok`` seven times in eight, else ``bent``: most records reach the quick path, some with one field off."""
    return st.integers(0, 7).flatmap(lambda n: bent if n == 0 else ok)


texts = st.one_of(st.sampled_from(["a", "x" * 64, "x" * 65, "x" * 128, "x" * 129, "", "é", "名", "\ud800", "a\n"]),
                  st.text(st.characters(exclude_categories=()), max_size=6))
plain_texts = st.from_regex(r"[a-z_ .]{1,8}", fullmatch=True)
ids = usually(st.from_regex(r"[A-Za-z0-9._:@=+-]{1,3}", fullmatch=True), texts)


@st.composite
def stored_times(draw):
    """Times in the stored form: within the last days, at the clock limit, past it, or days that do not exist."""
    limit = NOW + MAX_CLOCK_AHEAD
    moment = draw(st.sampled_from([NOW - dt.timedelta(days=3), NOW, NOW, limit, limit + dt.timedelta(milliseconds=1)]))
    moment += dt.timedelta(milliseconds=draw(st.integers(-86_400_000, 0)) * draw(st.sampled_from([0, 1])))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return draw(usually(st.just(text), st.sampled_from([text[:8] + "30" + text[10:], text.replace("Z", "+00:00"),
                                                        text.lower(), text[:-5] + "Z"])))


floats = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 1e-4, -1e-4, 9.999e-5, 1e16, 9.999999999999998e15,
                                                 1e-5, 5e-324, 2.0 ** 53]))
flat_values = usually(st.one_of(st.none(), st.booleans(), plain_texts, st.integers(-1000, 1000),
                                st.floats(-1e6, 1e6).filter(lambda f: f == 0 or abs(f) >= 1e-4)),
                      st.one_of(floats, texts, st.integers(-2**63 - 2, 2**63 + 1), st.just("y" * 1020)))
extras_keys = usually(st.from_regex(r"[a-zA-Z0-9_]{1,4}", fullmatch=True),
                      st.sampled_from(["k" * 64, "k" * 65, "", "a,b", "k\n", "\ud800", "é"]))


@st.composite
def nested_extras(draw):
    """Extras holding objects and arrays 1 to 16 deep: a record allows 16 levels, itself and its extras two."""
    value = draw(flat_values)
    wrappers = usually(st.sampled_from([lambda v: {"k": v}, lambda v: [v], lambda v: [1.5, v, None]]),
                       st.just(lambda v: {"\ud800": v}))
    for _ in range(draw(st.one_of(st.integers(1, 16), st.integers(13, 16)))):
        value = draw(wrappers)(value)
    return {draw(extras_keys): value}


extras = st.one_of(st.none(), st.dictionaries(extras_keys, flat_values, max_size=4), nested_extras(),
                   usually(st.dictionaries(extras_keys, flat_values, max_size=3),
                           st.dictionaries(extras_keys, st.lists(flat_values, max_size=2), max_size=2)))


@st.composite
def near_quick(draw, extras=extras):
    """A historical record as an SDK sends it, often with a field bent."""
    kind = draw(st.sampled_from(["activity", "event", "error", "job", "crash"]))
    optional = usually(st.one_of(st.none(), plain_texts), texts)
    required = usually(plain_texts, st.one_of(st.none(), texts))
    record = {"type": kind, "deviceId": draw(ids), "userId": draw(optional)}
    if kind in ("activity", "job"):
        start = draw(stored_times())
        record.update(start=start, end=draw(usually(st.just(start), stored_times())))
    else:
        record["timestamp"] = draw(stored_times())
    if kind == "crash":
        record.update(crashType=draw(required), message=draw(optional))
    else:
        record.update(name=draw(required), extras=draw(extras))
    if kind == "activity":
        record["sessionId"] = draw(required)
    if kind in ("event", "error"):
        record.update(sessionId=draw(optional), jobId=draw(optional))
    for field in draw(usually(st.just([]), st.lists(st.sampled_from(sorted(record) + ["unknown", "value"]),
                                                     max_size=2))):
        if record.pop(field, None) is None:
            record[field] = draw(flat_values)
    return {key: value for key, value in record.items() if value is not None or draw(st.booleans())}


def as_collect_reads_it(record):
    return json_input.parse(json.dumps(record).encode("utf-8"))


def full_row(raw):
    try:
        record = normalize(raw, now=NOW)
    except RecordError:
        return None
    return stored_row(record) if record["type"] in HISTORICAL_TYPES else None


def assert_a_quick_row_is_the_full_checks_row(record):
    raw = as_collect_reads_it(record)
    row = quick_row(raw, NOW)
    if row is not None:
        assert row == full_row(raw)
        assert json.loads(row.line) == normalize(raw, now=NOW)
    event("quick" if row is not None else "full checks")


@settings(max_examples=3000, deadline=None)
@given(record=st.one_of(near_quick(), near_quick(), record_strategy))
def test_a_quick_row_is_what_the_full_checks_store(record):
    assert_a_quick_row_is_the_full_checks_row(record)


@settings(max_examples=1000, deadline=None)
@given(record=near_quick(extras=nested_extras()))
def test_nested_extras_take_the_quick_path_only_within_the_records_nesting_limit(record):
    assert_a_quick_row_is_the_full_checks_row(record)


def test_the_records_sdks_send_take_the_quick_path():
    # The bench's sessions: activities and events with flat extras, times in the stored form. Without the
    # quick path they all pass through the full checks, three times slower (docs/ingestion.md).
    now = dt.datetime.now(dt.UTC)
    records = [as_collect_reads_it(record) for batch in make_batches(4, 50) for record in batch]
    rows = [quick_row(record, now) for record in records]
    assert rows == [stored_row(normalize(record, now=now)) for record in records]


def test_extras_nested_to_the_records_limit_take_the_quick_path_and_one_level_more_the_full_checks():
    def record(levels):
        value = 1
        for _ in range(levels):
            value = {"k": value}
        return {"type": "event", "deviceId": "d", "name": "e", "timestamp": "2026-03-01T11:00:00.000Z",
                "extras": {"x": value}}

    # The record is level 1 and its extras level 2: 14 objects inside them reach the limit of 16.
    assert quick_row(record(14), NOW) == stored_row(normalize(record(14), now=NOW))
    assert quick_row(record(15), NOW) is None
    with pytest.raises(RecordError, match="more than 16 levels"):
        normalize(record(15), now=NOW)
