"""Reference answers for exports, computed from the generated records independently of the engine."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections import defaultdict

from shared.export.registry import EXPORT_TYPES


def day_of(text: str) -> dt.date:
    return dt.date.fromisoformat(text[:10])


def historical(all_records, record_type, first, last):
    return [r for r in all_records if r["type"] == record_type
            and first <= day_of(r.get("start") or r["timestamp"]) <= last]


def sessions(all_records, first, last):
    grouped = defaultdict(list)
    for r in all_records:
        if r["type"] == "activity":
            grouped[(r["deviceId"], r["sessionId"])].append(r)
    rows = []
    for (device, session), acts in grouped.items():
        first_act = min(acts, key=lambda a: a["start"])
        last_act = max(acts, key=lambda a: a["end"])
        if not first <= day_of(first_act["start"]) <= last:
            continue
        start = dt.datetime.fromisoformat(first_act["start"].replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(last_act["end"].replace("Z", "+00:00"))
        row = {"deviceId": device, "sessionId": session, "start": first_act["start"], "end": last_act["end"],
               "duration": round((end - start).total_seconds(), 3), "activityCount": len(acts),
               "firstActivity": first_act["name"], "lastActivity": last_act["name"]}
        user = next((a["userId"] for a in acts if a.get("userId")), None)
        if user:
            row["userId"] = user
        rows.append(row)
    return rows


def devices(all_records):
    tags = defaultdict(dict)
    for r in all_records:
        if r["type"] == "tag":
            tags[r["deviceId"]][r["name"]] = r["value"]
    return [{"deviceId": r["deviceId"], "firstSeen": r["timestamp"], "lastSeen": r["timestamp"],
             "nativePushEnabled": r["nativePushEnabled"], "info": r["info"], "location": r["location"],
             "appInfo": tags[r["deviceId"]]} for r in all_records if r["type"] == "device"]


def tags(all_records):
    return [{"deviceId": r["deviceId"], "name": r["name"], "value": r["value"]}
            for r in all_records if r["type"] == "tag"]


def tokens(all_records, export_user_id):
    rows = []
    for r in all_records:
        if r["type"] == "token":
            row = {k: r[k] for k in ("deviceId", "token", "platform") if r.get(k) is not None}
            if export_user_id and r.get("userId"):
                row["userId"] = r["userId"]
            rows.append(row)
    return rows


def feedback(all_records, campaign_type, *, ids=None, window=None):
    rows = []
    for r in all_records:
        if r["type"] != "push" or r["campaignType"] != campaign_type:
            continue
        if ids is not None and r["campaignId"] not in ids:
            continue
        if window is not None and not window[0] <= r["timestamp"] <= window[1]:
            continue
        rows.append({k: r[k] for k in ("deviceId", "campaignId", "campaignType", "action", "timestamp")})
    return rows


def cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def as_csv_rows(rows, export_type, columns=None):
    columns = columns or EXPORT_TYPES[export_type].columns
    return [{c: cell(row.get(c)) for c in columns} for row in rows]


def as_columns(rows, export_type):
    """Rows as a typed file holds them: the type's columns only, nulls left out."""
    columns = EXPORT_TYPES[export_type].columns
    return [{c: row[c] for c in columns if row.get(c) is not None} for row in rows]


def canonical(rows):
    return sorted(json.dumps(row, sort_keys=True, ensure_ascii=False) for row in rows)


NESTED = ("extras", "info", "location", "appInfo")


def parse_nested(rows):
    return [{k: (json.loads(v) if k in NESTED and v else v) for k, v in row.items()} for row in rows]


def parquet_rows(data: bytes, export_type: str, path) -> list:
    """The rows of a ParquetBlob file as JSON Lines would hold them, read by two readers that must agree:
    pyarrow (whose schema must be the published one, typed) and DuckDB's read_parquet."""
    import datetime as dt

    import duckdb
    import pyarrow.parquet as pq

    from shared.export import schemas
    from shared.export.registry import EXPORT_TYPES

    columns = EXPORT_TYPES[export_type].schema
    table = pq.read_table(io.BytesIO(data))
    by_name = {column.name: column for column in columns}
    assert table.schema.names == [name for name in EXPORT_TYPES[export_type].columns if name in table.schema.names]
    assert table.schema.equals(schemas.arrow_schema([by_name[name] for name in table.schema.names]))

    def as_json(name, value):
        if value is None:
            return None
        if by_name[name].kind == schemas.JSON:
            return json.loads(value)
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return value

    rows = [{k: as_json(k, v) for k, v in row.items() if v is not None} for row in table.to_pylist()]
    path.write_bytes(data)
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    # Fetched as Arrow: DuckDB's Python rows would need pytz for its zoned timestamps.
    fetched = connection.sql(f"SELECT * FROM read_parquet('{path}')").to_arrow_table().to_pylist()
    read_by_duckdb = [{k: as_json(k, v) for k, v in row.items() if v is not None} for row in fetched]
    assert canonical(read_by_duckdb) == canonical(rows)
    return rows
