"""A pipeline's life through the local host over HTTP: pipelines made with PUT, records sent to Collect, the
RunPipelines timer and the export queues running in the host; records of past periods sent late (minutes, hours
and days after their period was delivered) land once, under their period, in every format."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
import uuid
from collections import Counter

import requests
from azure.storage.blob import BlobServiceClient
from helpers import API_VERSION, app_path, container_sas_url, local_host
from pipelining import event, read_rows

from shared.platform import apps

UTC = dt.UTC
PIPELINES = {"json-flat": ("JsonBlob", "flat"), "csv-hive": ("CsvBlob", "hive"),
             "parquet-hive": ("ParquetBlob", "hive")}


def _folder(layout: str, moment: dt.datetime) -> str:
    return f"date={moment:%Y-%m-%d}" if layout == "hive" else f"{moment:%Y-%m-%d}"


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def test_late_records_reach_every_pipeline_once_under_their_period_through_the_local_host(app_env, names):
    collection = f"e2e{names.token}"
    keys = apps.register_app(collection, "app")
    container = names.container("e2e")
    url = container_sas_url(app_env, container, expiry=dt.datetime.now(UTC) + dt.timedelta(days=30))
    blobs = BlobServiceClient.from_connection_string(app_env.connection_string).get_container_client(container)
    now = dt.datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first, second = today - dt.timedelta(days=2), today - dt.timedelta(days=1)
    sent: list[tuple[dt.datetime, str]] = []
    with local_host("ExportPipelines", "Collect", "PollExport", "ExportWorker", "RunPipelines") as host:
        base = f"{host.base_url}{app_path(collection, 'app')}"
        session = requests.Session()
        session.params = {"api-version": API_VERSION}

        def send(tag: str, moments: list[dt.datetime]) -> None:
            records = [event(f"{tag}-{index}", moment, device=f"dev-{index % 3}") for index, moment in
                       enumerate(moments)]
            answer = session.post(f"{base}/collect", data=gzip.compress(json.dumps({"records": records}).encode()),
                                  headers={"Authorization": f"Bearer {keys.collect_key}", "Content-Encoding": "gzip",
                                           "Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())},
                                  timeout=30)
            assert answer.status_code == 200 and answer.json()["accepted"] == len(records), answer.text
            sent.extend((moment, record["name"]) for moment, record in zip(moments, records))

        def delivered(name: str) -> Counter:
            found: Counter = Counter()
            for blob in blobs.list_blobs(name_starts_with=f"{name}/"):
                folder = blob.name[len(name) + 1:].rpartition("/")[0]
                if not folder.startswith("_"):
                    for row in read_rows(blob.name, blobs.download_blob(blob.name).readall(), "Event"):
                        found[(folder, row["name"])] += 1
            return found

        def expected(layout: str) -> Counter:
            return Counter((_folder(layout, moment), name) for moment, name in sent)

        def pipeline(name: str) -> dict:
            return session.get(f"{base}/exportPipelines/{name}", timeout=30,
                               headers={"Authorization": f"Bearer {keys.export_key}"}).json()

        send("on-time", [first + dt.timedelta(hours=h) for h in (0, 6, 23)] + [second + dt.timedelta(hours=12)])
        for name, (export_format, layout) in PIPELINES.items():
            answer = session.put(f"{base}/exportPipelines/{name}", timeout=30, json={
                "route": "events", "exportFormat": export_format, "layout": layout, "settleMinutes": 0,
                "lateDeliveryMinutes": 1, "startFrom": f"{first:%Y-%m-%d}", "containerUrl": url},
                headers={"Authorization": f"Bearer {keys.export_key}"})
            assert answer.status_code == 201, answer.text
        for name in PIPELINES:
            _wait(lambda name=name: pipeline(name).get("lastDeliveredPeriod") == f"{second:%Y-%m-%d}", 90,
                  f"the first runs of {name}")
        # Late: a minute after its day ended, hours after, and two days after.
        send("late", [second + dt.timedelta(hours=23, minutes=59), second + dt.timedelta(hours=10),
                      first + dt.timedelta(hours=1), first + dt.timedelta(hours=1)])
        for name, (_, layout) in PIPELINES.items():
            _wait(lambda name=name, layout=layout: delivered(name) == expected(layout), 150,
                  f"the late run of {name}")
        for name, (_, layout) in PIPELINES.items():
            assert delivered(name) == expected(layout)
            runs = session.get(f"{base}/exportPipelines/{name}/runs", timeout=30,
                               headers={"Authorization": f"Bearer {keys.export_key}"}).json()["value"]
            assert [(run["delivery"], run["state"]) for run in runs] == [("late", "Succeeded"),
                                                                         ("first", "Succeeded")], runs
            assert runs[0]["periods"] == [f"{first:%Y-%m-%d}", f"{second:%Y-%m-%d}"]
            assert runs[0]["recordCount"] == 4 and 0 < runs[0]["lagSeconds"] < 120
