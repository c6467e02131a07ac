"""`make demo`: the main job end to end on the embedded storage.

Starts Azurite (if not running) and the local host, registers an app, sends sample data through Collect
over HTTP as a backend would (gzip batches of 500 records, each with an Idempotency-Key), creates an
export task through the HTTP API like any client, follows it to Succeeded with a progress line, prints
the manifest and the first rows of the result file, and copies the task's files into a local folder
(demo-output/<task id>/) that outlives the demo's Azurite."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import sys
import time
import uuid

import requests
from azure.storage.blob import BlobServiceClient

from devhost.azurite import REPO_ROOT, port_open
from devhost.host import LocalHost
from sampledata import Plan, post
from sampledata.generator import BACKEND_BATCH
from shared.export import destination
from shared.platform import apps
from shared.platform.config import get_settings
from tools import localenv

API_VERSION = "2014-12-01"
OUTPUT_FOLDER = os.path.join(REPO_ROOT, "demo-output")


def connection_string() -> str:
    """The development account's connection string (localenv.prepare sets it)."""
    connection = get_settings().storage.connection_string
    if connection is None:
        raise SystemExit("the demo runs on Azurite: AzureWebJobsStorage must be a connection string")
    return connection


def destination_url(container: str) -> str:
    """A container of the development account, with a SAS that can write, read and list."""
    return destination.container_sas_url(connection_string(), container, permission="rcwl",
                                         valid_for=dt.timedelta(hours=4))


def main() -> int:
    localenv.prepare()
    port = int(os.environ.get("PORT", "7071"))
    if port_open("127.0.0.1", port):
        port = 0  # something already serves there (perhaps `make serve`): take a free port
    host = LocalHost(REPO_ROOT, port=port).start()
    try:
        return run(host.base_url)
    finally:
        host.stop()


def run(base_url: str) -> int:
    collection, app = "demo", f"game-{uuid.uuid4().hex[:6]}"
    keys = apps.register_app(collection, app)
    print(f"1. Registered app {collection}/{app} (export and collect keys issued)")
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    plan = Plan(devices=1000, days=2, last_day=yesterday)
    started = time.perf_counter()
    counts = post(base_url, collection, app, keys.collect_key, plan, batch_size=BACKEND_BATCH)
    sent = sum(counts.values())
    snapshot = sum(counts.get(kind, 0) for kind in ("device", "tag", "token", "push"))
    print(f"2. Sent {sent:,} sample records through Collect ({counts['event']:,} events, {snapshot:,} device, tag, "
          f"token and push records) dated {plan.day_list[0]} to {yesterday} (UTC days), in "
          f"{-(-sent // BACKEND_BATCH)} gzip batches of up to {BACKEND_BATCH} with an Idempotency-Key each, "
          f"in {time.perf_counter() - started:.1f}s")
    container_url = destination_url("demo-exports")
    tasks = (f"{base_url}/subscriptions/demo/resourceGroups/demo/providers/Microsoft.MobileEngagement/"
             f"appcollections/{collection}/apps/{app}/devices/exportTasks")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {keys.export_key}"
    response = session.post(f"{tasks}/events", params={"api-version": API_VERSION}, timeout=30, json={
        "containerUrl": container_url, "description": "demo: yesterday's events",
        "startDate": yesterday.isoformat(), "endDate": yesterday.isoformat(), "exportFormat": "CsvBlob"})
    if response.status_code != 202:
        print(f"the export was refused: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    task = response.json()
    print(f"3. POST exportTasks/events for {yesterday} (startDate = endDate = {yesterday}, CsvBlob) -> 202, "
          f"task {task['id']}, Location: {response.headers['Location']}")
    started = time.perf_counter()
    while task["state"] not in ("Succeeded", "Failed"):
        time.sleep(0.5)
        task = session.get(response.headers["Location"], timeout=30).json()
        progress = task["progress"]
        print(f"   {time.perf_counter() - started:5.1f}s  {task['state']:<9} parts "
              f"{progress['partsDone']}/{progress.get('partsTotal', '?')}", flush=True)
        if time.perf_counter() - started > 300:
            print("the export did not finish within 5 minutes", file=sys.stderr)
            return 1
    if task["state"] != "Succeeded":
        print(f"4. The export failed: {task['errorDetails']}", file=sys.stderr)
        return 1
    print(f"4. Succeeded: {task['recordCount']:,} records, {task['bytes']:,} bytes")
    container = BlobServiceClient.from_connection_string(connection_string()).get_container_client("demo-exports")
    manifest = container.download_blob(f"Event/{task['id']}/manifest.json").readall().decode()
    print(f"5. Manifest (Event/{task['id']}/manifest.json):\n{manifest}")
    first_file = json.loads(manifest)["files"][0]["name"]
    rows = gzip.decompress(container.download_blob(first_file).readall()).decode().splitlines()
    print(f"6. First rows of {first_file}:")
    for row in rows[:6]:
        print(f"   {row}")
    folder = copy_files(container, f"Event/{task['id']}/", os.path.join(OUTPUT_FOLDER, task["id"]))
    print(f"7. The task's files are copied to {folder} (the Azurite URL stops working when the demo ends)")
    return 0


def copy_files(container, prefix: str, folder: str) -> str:
    """Downloads every blob under ``prefix`` into ``folder``, keeping their names; returns the folder."""
    os.makedirs(folder, exist_ok=True)
    for blob in container.list_blobs(name_starts_with=prefix):
        with open(os.path.join(folder, blob.name[len(prefix):]), "wb") as handle:
            container.download_blob(blob.name).readinto(handle)
    return folder


if __name__ == "__main__":
    sys.exit(main())
