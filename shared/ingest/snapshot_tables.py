"""The snapshot tables of earlier versions (devices, tags, tokens, pushfeedback), moved into the snapshot log.

Before the log (shared.ingest.snapshots), snapshot state lived in four tables partitioned `{appId}|{bucket}`. A
deployment upgraded from then runs `python -m tools.admin migrate-snapshot-tables` once: every row becomes log
rows that arrived before anything Collect logs (their arrival stamps start with "0", which sorts before a year),
so the state an export folds is what the tables held, and a report received later still wins. A device row
becomes two reports (its firstSeen alone, then its lastSeen with its info, location and nativePushEnabled); a
token keeps its `updated` as its receive time. The tables are read, never changed: running it again appends the
same rows again, which folds to the same state.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterator

from azure.core.exceptions import ResourceNotFoundError

from shared.ingest import rawstore, snapshots
from shared.ingest.records import Row, encode_line, format_time
from shared.platform import storage

TABLES = ("devices", "tags", "tokens", "pushfeedback")
_BATCH = 20_000


def _records(table: str, row: dict) -> Iterator[dict]:
    """The snapshot records (before their stamps) that a table row stands for."""
    device = row["deviceId"]
    if table == "devices":
        yield {"type": "device", "deviceId": device, "timestamp": row["firstSeen"]}
        report = {"type": "device", "deviceId": device, "timestamp": row["lastSeen"]}
        for column, field in (("lastInfo", "info"), ("lastLocation", "location")):
            if row.get(column):
                report[field] = json.loads(row[column])
        if row.get("nativePushEnabled") is not None:
            report["nativePushEnabled"] = row["nativePushEnabled"]
        yield report
    elif table == "tags":
        yield {"type": "tag", "deviceId": device, "name": row["name"], "value": json.loads(row["value"])}
    elif table == "tokens":
        yield {"type": "token", "deviceId": device, **({"userId": row["userId"]} if row.get("userId") else {}),
               "token": row["token"], **({"platform": row["platform"]} if row.get("platform") else {}),
               "receivedAt": row.get("updated")}
    else:
        yield {"type": "push", "deviceId": device, "campaignId": int(getattr(row["campaignId"], "value",
                                                                             row["campaignId"])),
               "campaignType": row["campaignType"], "action": row["action"], "timestamp": row["timestamp"]}


def _log_row(record: dict, moved_at: dt.datetime, index: int) -> Row:
    received = record.pop("receivedAt", None) or format_time(moved_at)
    line = encode_line(record)
    return Row(snapshots.LOG_TYPE, format_time(moved_at),
               b'%s,"receivedAt":"%s","arrival":"0-table-%012d"}\n' % (line[:-2], received.encode(), index))


def _table_rows(table: str) -> Iterator[dict]:
    try:
        yield from storage.table(table).list_entities(results_per_page=1000)
    except ResourceNotFoundError:
        return


def migrate(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Appends every snapshot table row of every app to its app's log; returns the rows moved per table."""
    moved_at = now or dt.datetime.now(dt.UTC)
    counts: dict[str, int] = defaultdict(int)
    pending: list[Row] = []
    by_app: dict[str, list[Row]] = defaultdict(list)
    index = 0

    def flush() -> None:
        for app_id, rows in by_app.items():
            rawstore.writer().append_rows(rawstore.partition_rows(app_id, rows))
        by_app.clear()
        pending.clear()

    for table in TABLES:
        for row in _table_rows(table):
            app_id = row["PartitionKey"].rsplit("|", 1)[0]
            for record in _records(table, row):
                log_row = _log_row(record, moved_at, index)
                index += 1
                by_app[app_id].append(log_row)
                pending.append(log_row)
            counts[table] += 1
            if len(pending) >= _BATCH:
                flush()
    flush()
    return dict(counts)
