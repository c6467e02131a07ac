"""The published schema of each export type: its columns in file order, each with a type, given as JSON Schema
(a JSON Lines or CSV row) and as an Arrow schema (a Parquet file).

A column added later is added at the end and columns never reorder: `tests/spec/schemas.json` holds every
type's published schema, and a change that is not an addition at the end fails its test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

STRING, TIME, INTEGER, NUMBER, BOOLEAN, JSON = "string", "date-time", "integer", "number", "boolean", "json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str = STRING
    required: bool = False  # never null (in JSON Lines, never left out)
    description: str = ""


def _json_type(column: Column) -> dict[str, Any]:
    if column.kind == TIME:
        schema: dict[str, Any] = {"type": "string", "format": "date-time"}
    elif column.kind == JSON:
        schema = {}  # any JSON value; objects for extras, info, location and appInfo
    else:
        schema = {"type": column.kind}
    if column.description:
        schema["description"] = column.description
    return schema


def json_schema(export_type: str, columns: Sequence[Column]) -> dict[str, Any]:
    """The JSON Schema of one row of a JsonBlob (one line) or CsvBlob (one record; the header names the columns
    in this order, every value is its text, nested values as JSON and null as an empty field) file."""
    return {"$schema": JSON_SCHEMA_DIALECT, "title": f"{export_type} row", "type": "object",
            "properties": {column.name: _json_type(column) for column in columns},
            "required": [column.name for column in columns if column.required],
            "additionalProperties": False, "x-columns": [column.name for column in columns]}


# ParquetBlob times have milliseconds, as every stored time; a Delta table's timestamps are microseconds (its
# protocol's type, which polars and Spark hold its files to).
MILLISECONDS, MICROSECONDS = "ms", "us"


def _arrow_type(kind: str, time_unit: str = MILLISECONDS):
    import pyarrow as pa

    return {STRING: pa.string(), TIME: pa.timestamp(time_unit, tz="UTC"), INTEGER: pa.int64(), NUMBER: pa.float64(),
            BOOLEAN: pa.bool_(), JSON: pa.string()}[kind]


def arrow_schema(columns: Sequence[Column], time_unit: str = MILLISECONDS):
    """The Arrow schema of a ParquetBlob file. Nested values (extras, info, location, appInfo, a tag's value)
    are JSON text: their keys are the app's own, so a struct would change shape from one export to the next."""
    import pyarrow as pa

    return pa.schema([pa.field(column.name, _arrow_type(column.kind, time_unit), nullable=not column.required,
                               metadata={"json": "true"} if column.kind == JSON else None)
                      for column in columns])


def arrow_schema_document(columns: Sequence[Column], time_unit: str = MILLISECONDS) -> list[dict[str, Any]]:
    """The Arrow schema as JSON: each field's name, Arrow type and nullability, in file order."""
    return [{"name": field.name, "type": str(field.type), "nullable": field.nullable,
             **({"json": True} if column.kind == JSON else {})}
            for field, column in zip(arrow_schema(columns, time_unit), columns)]
