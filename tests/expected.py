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


def _tag_state(all_records):
    """(device, name) -> value, in the order the records were sent: a later set wins, null removes the tag."""
    state = {}
    for r in all_records:
        if r["type"] == "tag":
            if r["value"] is None:
                state.pop((r["deviceId"], r["name"]), None)
            else:
                state[(r["deviceId"], r["name"])] = r["value"]
    return state


def devices(all_records):
    """Each device's state from its reports, in the order they were sent: firstSeen the earliest report's time;
    a report at or after the latest one known sets lastSeen and the info, location and nativePushEnabled it
    carries (what it leaves out stays); an older report changes nothing else."""
    app_info = defaultdict(dict)
    for (device, name), value in _tag_state(all_records).items():
        app_info[device][name] = value
    state = {}
    for r in all_records:
        if r["type"] != "device":
            continue
        seen = r["timestamp"]  # the generated reports all carry their time
        row = state.setdefault(r["deviceId"], {"deviceId": r["deviceId"], "firstSeen": seen, "lastSeen": seen,
                                               "nativePushEnabled": None, "info": None, "location": None})
        row["firstSeen"] = min(row["firstSeen"], seen)
        if seen >= row["lastSeen"]:
            row["lastSeen"] = seen
            row.update({k: r[k] for k in ("info", "location", "nativePushEnabled") if r.get(k) is not None})
    return [dict(row, appInfo=app_info[device]) for device, row in state.items()]


def tags(all_records):
    return [{"deviceId": device, "name": name, "value": value}
            for (device, name), value in _tag_state(all_records).items()]


def tokens(all_records, export_user_id):
    """Each device's latest token record (a new one replaces the whole row)."""
    latest = {r["deviceId"]: r for r in all_records if r["type"] == "token"}
    rows = []
    for r in latest.values():
        row = {k: r[k] for k in ("deviceId", "token", "platform") if r.get(k) is not None}
        if export_user_id and r.get("userId"):
            row["userId"] = r["userId"]
        rows.append(row)
    return rows


def feedback(all_records, campaign_type, *, ids=None, window=None):
    """One row per device, campaign and action: the latest sent."""
    latest = {}
    for r in all_records:
        if r["type"] != "push" or r["campaignType"] != campaign_type:
            continue
        if ids is not None and r["campaignId"] not in ids:
            continue
        if window is not None and not window[0] <= r["timestamp"] <= window[1]:
            continue
        latest[(r["deviceId"], r["campaignId"], r["action"])] = {
            k: r[k] for k in ("deviceId", "campaignId", "campaignType", "action", "timestamp")}
    return list(latest.values())


def for_route(all_records, route, *, first=None, last=None, campaign=None, window=None):
    """What an export of ``route`` holds: its days ``first`` to ``last`` (historical routes), its campaign type
    and ids (``campaign``, feedbackByCampaign) or its campaign type and time window (feedbackByDate); tokens
    with their userId."""
    from shared.export.registry import ROUTES

    export_type = ROUTES[route].export_type
    if export_type == "Session":
        return sessions(all_records, first, last)
    if export_type in ("Activity", "Event", "Job", "Error", "Crash"):
        return historical(all_records, export_type.lower(), first, last)
    if export_type == "Tag":
        return tags(all_records)
    if export_type == "Device":
        return devices(all_records)
    if export_type == "Token":
        return tokens(all_records, export_user_id=True)
    if route == "feedbackByCampaign":
        return feedback(all_records, campaign[0], ids=set(campaign[1]))
    return feedback(all_records, window[0], window=window[1:])


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
            return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
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
