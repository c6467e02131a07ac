"""Exports produced by the engine in the test's own process, and read back as a reader of each format would."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import tempfile
from pathlib import Path

import expected

from shared.export import engine
from shared.export.registry import ROUTES
from shared.export.spec import ExportScope
from shared.tasks import jobs

FORMATS = ("JsonBlob", "CsvBlob", "ParquetBlob")


def run_export(app_id, route, export_format, **fields):
    """The rows of an export of ``route`` in ``export_format``: JSON Lines as parsed, CSV with its nested
    columns parsed, Parquet as pyarrow and DuckDB both read it (expected.parquet_rows)."""
    now = dt.datetime.now(dt.UTC)
    if fields.get("campaign_ids") is not None:
        fields["campaign_ids"] = tuple(fields["campaign_ids"])
    scope = ExportScope(export_type=ROUTES[route].export_type, export_format=export_format, **fields)
    job = jobs.ExportJob(app_id=app_id, id=jobs.new_job_id(now), route=route, scope=scope,
                         container_url="http://127.0.0.1:1/unused/unused", sealed_sas="",
                         sas_expires=now + dt.timedelta(hours=1), date_created=now)
    rows = []
    for item in engine.plan_items(job.spec):
        blocks = {}
        result = engine.produce(job.spec, item, blocks.__setitem__)
        data = b"".join(blocks[block] for block in result.blocks)
        if export_format == "ParquetBlob":
            with tempfile.TemporaryDirectory() as folder:
                part = expected.parquet_rows(data, job.export_type, Path(folder) / "part.parquet")
        else:
            text = gzip.decompress(data).decode("utf-8")
            if export_format == "JsonBlob":
                # JSON Lines rows end with "\n" only: str.splitlines would also cut at U+2028 or U+0085.
                part = [json.loads(line) for line in text.split("\n") if line]
            else:
                part = expected.parse_nested(list(csv.DictReader(io.StringIO(text, newline=""))))
        assert len(part) == result.records
        rows += part
    return rows


def as_read(rows, export_type, export_format):
    """Reference rows as a reader of ``export_format`` gets them from ``run_export``."""
    if export_format == "CsvBlob":
        return expected.parse_nested(expected.as_csv_rows(rows, export_type))
    if export_format == "ParquetBlob":
        return expected.as_columns(rows, export_type)
    return [{key: value for key, value in row.items() if value is not None} for row in rows]  # nulls left out
