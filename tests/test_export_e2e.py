"""End to end on Azurite through the local host: generated data in, one export task per data type and
format through the HTTP API, and the files in the container hold exactly the expected records."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import time

import expected
import pytest
import requests
from azure.storage.blob import BlobServiceClient
from conftest import REPO_ROOT
from helpers import API_VERSION, app_path, container_sas_url

from devhost.host import LocalHost
from sampledata import Plan, load, records
from shared.export.registry import EXPORT_TYPES
from shared.ingest import collect
from shared.platform import apps

# A fixed day, not one relative to today: the generated data depends on its dates, and on this one it holds
# something for every case (test_the_data_gives_every_case_something_to_hold).
LAST = dt.date(2026, 5, 4)
FIRST = LAST - dt.timedelta(days=1)  # the generated data spans three days, the range two
PLAN = Plan(devices=25, days=3, last_day=LAST, seed=3)


def at(day, clock):
    return f"{day.isoformat()}T{clock}.000Z"


# Sessions that cross midnight: one starting in range (kept whole), one starting the day before the range
# (not exported, although some of its activities fall inside it).
SPECIAL = [
    {"type": "activity", "deviceId": "night-owl", "sessionId": "late-1", "name": "menu",
     "start": at(FIRST, "23:58:00"), "end": at(FIRST, "23:59:30")},
    {"type": "activity", "deviceId": "night-owl", "sessionId": "late-1", "name": "play",
     "start": at(LAST, "00:00:10"), "end": at(LAST, "00:02:00")},
    {"type": "activity", "deviceId": "night-owl", "sessionId": "before-range", "name": "menu",
     "start": at(FIRST - dt.timedelta(days=1), "23:59:00"), "end": at(FIRST - dt.timedelta(days=1), "23:59:50")},
    {"type": "activity", "deviceId": "night-owl", "sessionId": "before-range", "name": "play",
     "start": at(FIRST, "00:00:05"), "end": at(FIRST, "00:01:00")},
    {"type": "event", "deviceId": "quoting", "name": "say", "timestamp": at(LAST, "12:00:00"),
     "extras": {"text": "comma, \"quote\"\nnewline ünïcödé"}},
]
CASES = [
    ("activities", "Activity"), ("sessions", "Session"), ("events", "Event"), ("jobs", "Job"),
    ("errors", "Error"), ("crashes", "Crash"), ("tags", "Tag"), ("devices", "Device"), ("tokens", "Token"),
    ("feedbackByCampaign", "Push"), ("feedbackByDate", "Push"),
]
FORMATS = ("JsonBlob", "CsvBlob", "ParquetBlob")
WINDOW = (f"{LAST.isoformat()}T10:00:00Z", f"{LAST.isoformat()}T12:30:00Z")


def body_for(route, container_url, export_format):
    body = {"containerUrl": container_url, "exportFormat": export_format, "description": f"{route} test"}
    if route in ("activities", "sessions", "events", "jobs", "errors", "crashes"):
        body.update(startDate=FIRST.isoformat(), endDate=LAST.isoformat())
    elif route == "tokens":
        body["exportOptions"] = {"exportUserId": True}
    elif route == "feedbackByCampaign":
        body.update(campaignType="DataPush", campaignIds=[1, 2])
    elif route == "feedbackByDate":
        body.update(campaignType="Poll", campaignWindowStart=WINDOW[0], campaignWindowEnd=WINDOW[1])
    return body


def expected_rows(route, export_type, all_records):
    start, end = (w.replace("Z", ".000Z") for w in WINDOW)
    return expected.for_route(all_records, route, first=FIRST, last=LAST, campaign=("DataPush", [1, 2]),
                              window=("Poll", start, end))


@pytest.fixture(scope="module")
def exported(app_env):
    token = str(int(time.time() * 1000))[-9:]
    collection = f"e2e{token}"
    keys = apps.register_app(collection, "game")
    app_id = f"{collection}~game"
    load(app_id, PLAN)
    assert collect.ingest(app_id, SPECIAL)["accepted"] == len(SPECIAL)
    container = f"exports-{token}"
    container_url = container_sas_url(app_env, container)
    host = LocalHost(REPO_ROOT, port=0, functions=["ExportTasks", "PollExport", "ExportWorker"]).start()
    try:
        base = host.base_url + app_path(collection, "game") + "/exportTasks"
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {keys.export_key}"
        tasks = {}
        for route, _ in CASES:
            for export_format in FORMATS:
                response = session.post(f"{base}/{route}", params={"api-version": API_VERSION},
                                        json=body_for(route, container_url, export_format), timeout=30)
                assert response.status_code == 202, response.text
                tasks[(route, export_format)] = response.json()["id"]
        deadline = time.monotonic() + 120
        results = {}
        while len(results) < len(tasks) and time.monotonic() < deadline:
            for case, task_id in tasks.items():
                if case not in results:
                    task = session.get(f"{base}/{task_id}", params={"api-version": API_VERSION}, timeout=30).json()
                    if task["state"] in ("Succeeded", "Failed"):
                        results[case] = task
            time.sleep(0.3)
    finally:
        host.stop()
    blobs = BlobServiceClient.from_connection_string(app_env.connection_string).get_container_client(container)
    all_records = list(records(PLAN)) + SPECIAL
    return results, blobs, all_records


@pytest.mark.parametrize("route, export_type", CASES)
def test_the_data_gives_every_case_something_to_hold(route, export_type):
    assert expected_rows(route, export_type, list(records(PLAN)) + SPECIAL)


@pytest.mark.parametrize("export_format", FORMATS)
@pytest.mark.parametrize("route, export_type", CASES)
def test_export_holds_exactly_the_expected_records(exported, route, export_type, export_format, tmp_path):
    results, blobs, all_records = exported
    task = results.get((route, export_format))
    assert task is not None, "the task did not finish in time"
    assert task["state"] == "Succeeded", task["errorDetails"]
    assert task["exportType"] == export_type and task["dateCompleted"]
    manifest = json.loads(blobs.download_blob(f"{export_type}/{task['id']}/manifest.json").readall())
    assert manifest["jobId"] == task["id"] and manifest["exportFormat"] == export_format
    rows = []
    for entry in manifest["files"]:
        blob = blobs.get_blob_client(entry["name"])
        data = blob.download_blob().readall()
        assert blob.get_blob_properties().metadata["jobId"] == task["id"]
        assert len(data) == entry["bytes"]
        import base64
        import hashlib
        assert base64.b64encode(hashlib.md5(data).digest()).decode() == entry["md5"]
        if export_format == "ParquetBlob":
            part = expected.parquet_rows(data, export_type, tmp_path / entry["name"].replace("/", "_"))
            assert len(part) == entry["records"]
            rows += part
            continue
        text = gzip.decompress(data).decode("utf-8")
        if export_format == "JsonBlob":
            part = [json.loads(line) for line in text.splitlines()]
        else:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            columns = list(EXPORT_TYPES[export_type].columns)
            assert reader.fieldnames == columns
            part = list(reader)
        assert len(part) == entry["records"]
        rows += part
    want = expected_rows(route, export_type, all_records)
    if export_type == "Token":
        for row in rows:
            row.pop("updated")
            if export_format != "JsonBlob":
                for key in [k for k, v in row.items() if v == "" or v is None]:
                    row.pop(key)
    if export_format == "CsvBlob" and export_type != "Token":
        want = expected.as_csv_rows(want, export_type)
    if export_format == "ParquetBlob":
        want = expected.as_columns(want, export_type)
    if export_format == "CsvBlob":
        # nested values are JSON text in one column: compare them as JSON, not as key order
        rows, want = expected.parse_nested(rows), expected.parse_nested(want)
    assert expected.canonical(rows) == expected.canonical(want)
    assert manifest["recordCount"] == task["recordCount"] == len(want)


def test_sessions_crossing_midnight_are_whole_and_exported_once(exported):
    results, blobs, _ = exported
    task = results[("sessions", "JsonBlob")]
    manifest = json.loads(blobs.download_blob(f"Session/{task['id']}/manifest.json").readall())
    rows = [json.loads(line) for entry in manifest["files"]
            for line in gzip.decompress(blobs.download_blob(entry["name"]).readall()).splitlines()]
    night = [row for row in rows if row["deviceId"] == "night-owl"]
    assert night == [{"deviceId": "night-owl", "sessionId": "late-1", "start": at(FIRST, "23:58:00"),
                      "end": at(LAST, "00:02:00"), "duration": 240.0, "activityCount": 2,
                      "firstActivity": "menu", "lastActivity": "play"}]
