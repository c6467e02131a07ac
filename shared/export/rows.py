"""What of each raw row goes into a file (RowSpec), and how runs of raw JSON Lines rows are read: as dicts
(`parse_lines`), or straight into the spec's columns (`decode_columns`) for the formats written a column at a
time (CsvBlob, ParquetBlob).

`decode_columns` has msgspec decode each line into a small struct of the spec's columns only: fields the
spec does not name are skipped unread, and nested values (extras, info, location, appInfo) stay the JSON text
they were stored as (a `msgspec.Raw`), so no dict is built for them. On events that is 4x faster than orjson
building dicts. Scalar columns decode as `Any`, so each value keeps the type it was stored with, as orjson
gives it. A run msgspec refuses is parsed by `parse_lines`, which raises what a bad row always raised.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from shared.export.schemas import JSON, Column

Raw = msgspec.Raw


@dataclass(frozen=True)
class RowSpec:
    """What of each row goes into a file: its columns (a type's schema, or the request's projection of it) and,
    when the request names some, which event, activity, error or job names are kept or left out."""

    columns: tuple[Column, ...]
    include_names: frozenset[str] | None = None
    exclude_names: frozenset[str] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def filters(self) -> bool:
        return self.include_names is not None or self.exclude_names is not None

    def keeps(self, name: Any) -> bool:
        if self.include_names is not None:
            return name in self.include_names
        return self.exclude_names is None or name not in self.exclude_names

    def select(self, rows: list[dict]) -> list[dict]:
        if not self.filters:
            return rows
        return [row for row in rows if self.keeps(row.get("name"))]


def parse_lines(text: bytes) -> list[dict]:
    """The rows of a run of JSON Lines (blank lines skipped)."""
    loads = orjson.loads
    body = text.rstrip(b"\n")
    try:
        # One call for the whole run as a JSON array: a fifth faster than a call per line.
        rows = loads(b"[" + body.replace(b"\n", b",") + b"]")
        if len(rows) == body.count(b"\n") + 1:
            return rows
    except orjson.JSONDecodeError:
        pass
    # Blank lines, or a line that is not one JSON value: line by line, so a bad line raises its own error.
    return [loads(line) for line in text.splitlines() if line]


def row_columns(rows: Sequence[dict], names: Sequence[str], missing: Any = None) -> list[list]:
    """Rows as columns: one list of values per name, ``missing`` where a row lacks the field."""
    return [[row.get(name, missing) for row in rows] for name in names]


@functools.lru_cache(maxsize=64)
def _decoder(spec: RowSpec, missing: Any) -> tuple[msgspec.json.Decoder, Callable]:
    """The decoder of a run's rows into structs of the spec's columns (and the name, when filtering on it), and
    the getter of a decoded row's name."""
    names = list(spec.names)
    if spec.filters and "name" not in names:
        names.append("name")  # read to filter on, not written
    # Fields are f0, f1, ... renamed to the columns, so any column name is a valid struct field.
    fields = [(f"f{index}", Raw if _is_nested(spec, name) else Any, missing) for index, name in enumerate(names)]
    row_type = msgspec.defstruct("Row", fields, rename={f"f{index}": name for index, name in enumerate(names)})
    name = operator.attrgetter(f"f{names.index('name')}") if "name" in names else (lambda row: None)
    return msgspec.json.Decoder(row_type), name


def _is_nested(spec: RowSpec, name: str) -> bool:
    return any(column.name == name and column.kind == JSON for column in spec.columns)


def decode_columns(text: bytes, spec: RowSpec, missing: Any = None) -> tuple[int, Sequence[Sequence]]:
    """The rows ``spec`` keeps of a run of JSON Lines, as (how many, one sequence of values per column): ``missing``
    where a row lacks the field, nested values as `Raw` JSON text (see `nested_texts`)."""
    decoder, name = _decoder(spec, missing)
    try:
        rows = decoder.decode_lines(text)
    except msgspec.MsgspecError:  # not a run of JSON objects: parsed as dicts, which name the bad row
        kept = spec.select(parse_lines(text))
        return len(kept), row_columns(kept, spec.names, missing)
    if spec.filters:
        rows = [row for row in rows if spec.keeps(name(row))]
    columns = len(spec.columns)
    if not rows:
        return 0, [[] for _ in range(columns)]
    # Rows to columns in C: each row as a tuple, transposed (faster than a pass per column).
    return len(rows), list(zip(*map(msgspec.structs.astuple, rows)))[:columns]


# Stored rows are written by json.dumps and files by orjson: their texts of one value differ only in how a
# float in exponent form is written (json.dumps: 1e+20, 1e-05; orjson: 1e20, 1e-5). A quick search for "e+"
# or "e-" finds the runs that may hold one, then this finds the values (text such as "v2e-1" inside a string
# is a false alarm that costs a re-encode, never a wrong text).
_EXPONENT = re.compile(rb"[0-9]e[+-]")
NULL_TEXT = Raw(b"null")


def may_hold_exponent(stored: bytes) -> bool:
    """Whether stored JSON text may hold a float in exponent form, whose text orjson writes differently."""
    return b"e+" in stored or b"e-" in stored


def nested_texts(values: Sequence[Any]) -> list[str | None]:
    """A column of nested values (`Raw` as decode_columns leaves them, decoded values, or None) as the JSON text
    orjson writes for each; None for null.

    The stored texts are taken as they are, checked and decoded all at once (one join, one search, one
    decode), since a newline never occurs in compact JSON; only a value the search flags is re-encoded."""
    if not values:
        return []
    stored = [bytes(value) if value.__class__ is Raw else b"null" for value in values]
    joined = b"\n".join(stored)
    texts: list[str | None] = joined.decode("utf-8").split("\n")  # type: ignore[assignment]
    flagged = set()
    if may_hold_exponent(joined):
        ends = list(itertools.accumulate(len(data) + 1 for data in stored))
        flagged = {bisect.bisect_right(ends, match.start()) for match in _EXPONENT.finditer(joined)}
    for index, value in enumerate(values):
        if index in flagged or value.__class__ is not Raw:
            if value.__class__ is Raw:
                value = orjson.loads(stored[index])
            texts[index] = None if value is None else orjson.dumps(value).decode("utf-8")
        elif texts[index] == "null":
            texts[index] = None
    return texts
