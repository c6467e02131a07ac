"""The pipelines' figures of `make bench`: how long a late record waits, and what a late run reads.

On the bench's Azurite and a local host in its own process (its RunPipelines timer running every 15 seconds),
an app holds RECORDS events of yesterday (from the generator). A daily pipeline (`lateDeliveryMinutes` at its
minimum, 1) delivers yesterday in its first run; then a backend sends late events of yesterday through Collect
over HTTP, in batches. It prints:

- `pipeline late_delivery_s=`: from the first late batch's acknowledgement to the manifest of the run that
  delivers it (its blob's creation time), and the last batch's beside;
- `pipeline late_read_ratio=`: the bytes of the raw store the late run read (the ranges its plan pins, which is
  what its work items download) over the bytes the late records added to the raw store. Near 1 however large
  the period: the late run reads none of the period's first RECORDS events.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import sys
import time

import requests

from bench.hostprocess import HostProcess
from shared.export import planning
from shared.ingest import rawstore
from shared.platform import apps, storage

API_VERSION = "2014-12-01"
COLLECTION, APP = "bench", "pipeline"
LATE_RECORDS = 5_000
BATCH = 500


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _wait_for_run(session: requests.Session, runs_url: str, delivery: str, count: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [run for run in session.get(runs_url, params={"api-version": API_VERSION}, timeout=30).json()["value"]
                 if run["delivery"] == delivery]
        if len(found) >= count and found[0]["state"] in ("Succeeded", "Failed"):
            if found[0]["state"] != "Succeeded":
                raise RuntimeError(f"the pipeline's {delivery} run failed: {found[0].get('errorDetails')}")
            return found[0]
        time.sleep(0.5)
    raise RuntimeError(f"no {delivery} run succeeded within {timeout:.0f}s")


def run(env: dict[str, str], container_url: str, storage_pid: int, records: int) -> dict:
    from sampledata import load_events

    keys = apps.register_app(COLLECTION, APP)
    app_id = f"{COLLECTION}~{APP}"
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    started = time.perf_counter()
    load_events(app_id, yesterday, records)
    log(f"generated {records:,} events of {yesterday} for {COLLECTION}/{APP} in {time.perf_counter() - started:.1f}s")
    host = HostProcess(env, storage_pid)
    try:
        base = (f"{host.url}/subscriptions/bench/resourceGroups/bench/providers/Microsoft.MobileEngagement/"
                f"appcollections/{COLLECTION}/apps/{APP}/devices")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {keys.export_key}"
        answer = session.put(f"{base}/exportPipelines/late", params={"api-version": API_VERSION}, timeout=60, json={
            "route": "events", "exportFormat": "JsonBlob", "cadence": "daily", "settleMinutes": 0,
            "lateDeliveryMinutes": 1, "startFrom": yesterday.isoformat(), "containerUrl": container_url})
        answer.raise_for_status()
        log("the pipeline's first run of yesterday ...")
        first = _wait_for_run(session, f"{base}/exportPipelines/late/runs", "first", 1, 900)
        log(f"  {first['recordCount']:,} records in {first['run']}")
        before = sum(blob.size for blob in rawstore.list_day(app_id, "event", yesterday))
        acknowledged = []
        for start in range(0, LATE_RECORDS, BATCH):
            batch = [{"type": "event", "deviceId": f"late-{n % 97}", "name": "late_purchase",
                      "timestamp": f"{yesterday}T{n % 24:02d}:30:00.000Z", "extras": {"n": n}}
                     for n in range(start, min(start + BATCH, LATE_RECORDS))]
            response = requests.post(f"{base}/collect", params={"api-version": API_VERSION}, timeout=60,
                                     data=gzip.compress(json.dumps({"records": batch}).encode()),
                                     headers={"Authorization": f"Bearer {keys.collect_key}",
                                              "Content-Type": "application/json", "Content-Encoding": "gzip"})
            response.raise_for_status()
            acknowledged.append(dt.datetime.now(dt.UTC))
        late_bytes = sum(blob.size for blob in rawstore.list_day(app_id, "event", yesterday)) - before
        log(f"sent {LATE_RECORDS:,} late events of {yesterday} ({late_bytes:,} bytes in the raw store); waiting for "
            f"the late run ...")
        late = _wait_for_run(session, f"{base}/exportPipelines/late/runs", "late", 1, 600)
        if late["recordCount"] != LATE_RECORDS:
            raise RuntimeError(f"the late run delivered {late['recordCount']} records, not {LATE_RECORDS}")
        manifest = storage.blob_service().get_container_client("bench-out").get_blob_client(
            f"late/_{late['run']}/manifest.json").get_blob_properties()
        read = sum(planning.source_bytes(source) for item in planning.read_plan(app_id, late["taskId"])
                   for source in item.sources)
        return {"late_delivery_s": (manifest.creation_time - acknowledged[0]).total_seconds(),
                "late_delivery_last_s": (manifest.creation_time - acknowledged[-1]).total_seconds(),
                "late_read_bytes": read, "late_record_bytes": late_bytes, "late_read_ratio": read / late_bytes,
                "period_records": records, "late_records": LATE_RECORDS}
    finally:
        host.stop()
