"""The erasure figures of `make bench`: how fast an erasure rewrites the raw store, and what it costs Collect.

On the bench's Azurite and a local host in its own process (its EraseData queue function running), the app of the
bench's main exports holds a day of RECORDS events (2,000,000 by default; from the generator: 50 events a device
on average). Collect clients post batches to
another app of the host for a while alone; then an erasure of a few devices is asked over HTTP and runs alone;
then the clients post again while erasures of other devices run one after another, and once more alone. It
prints:

- `erasure rewrite_ratio=`: the bytes of raw store the first erasure rewrote per second (the blobs it replaced,
  from the request to the task's dateCompleted) over the raw copy's bytes per second (the same app's raw blobs
  moved blob to blob, measured in the same run). Its target is 0.5 or more.
- `erasure collect/append_during=` and `collect/append_alone=`: Collect's requests/s while erasures ran, and
  alone on the same host (the mean of the windows before and after), each over the ingestion baseline's
  appends/s (the measure of `ratio collect/append=`), with how much of Collect's window the erasures covered
  (`overlap=`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import sys
import threading
import time

import requests

from bench import ingest
from bench.hostprocess import HostProcess
from shared.erasure.rewrite import REWRITES
from shared.ingest import rawstore
from shared.platform import apps, storage

API_VERSION = "2014-12-01"
COLLECTION, APP = "bench", "erasure"
ERASED_DEVICES = 5
COLLECT_SECONDS = 10.0
APP_PATH = "/subscriptions/bench/resourceGroups/bench/providers/Microsoft.MobileEngagement/appcollections/"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _rewritten_bytes(app_id: str) -> tuple[int, int]:
    """(bytes of the app's raw blobs an erasure replaced, bytes of all its raw blobs)."""
    rewritten = total = 0
    for blob in storage.container(rawstore.RAW_CONTAINER).list_blobs(name_starts_with=f"{app_id}/",
                                                                     include=["metadata"]):
        total += blob.size
        if (blob.metadata or {}).get(REWRITES):
            rewritten += blob.size
    return rewritten, total


def _erase(host: HostProcess, app: str, export_key: str, devices: list[str]) -> tuple[dt.datetime, dict]:
    """Asks an erasure of ``devices`` over HTTP and waits for it: (when it was asked, the ended task)."""
    headers = {"Authorization": f"Bearer {export_key}"}
    asked = dt.datetime.now(dt.UTC)
    response = requests.post(f"{host.url}{APP_PATH}{COLLECTION}/apps/{app}/devices/erasureTasks",
                             params={"api-version": API_VERSION}, headers=headers, timeout=120,
                             json={"deviceIds": devices, "reason": "bench"})
    response.raise_for_status()
    while True:
        task = requests.get(response.headers["Location"], headers=headers, timeout=60).json()
        if task["state"] in ("Succeeded", "Failed"):
            break
        time.sleep(0.2)
    if task["state"] != "Succeeded":
        raise RuntimeError(f"the erasure failed: {task.get('errorDetails')}")
    return asked, task


def _ended(task: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(task["dateCompleted"].replace("Z", "+00:00"))


def run(env: dict[str, str], storage_pid: int, app: str, export_key: str, rawcopy: dict, append: dict, *,
        clients: int) -> dict:
    """The erasure section, on the app ``bench/{app}``, which holds the generator's events of one day: ``rawcopy``
    is the raw copy baseline of its raw blobs (seconds, bytes), ``append`` the ingestion section's append
    baseline (requests_per_s).

    A first erasure runs alone (the rewrite figures); then Collect clients post to another app of the same host
    while erasures of other devices run one after another."""
    from sampledata.generator import _device_id

    app_id = f"{COLLECTION}~{app}"
    collect_app = f"{app}-collect"
    collect_keys = apps.register_app(COLLECTION, collect_app)
    devices = (_device_id(1, index) for index in itertools.count())
    host = HostProcess(env, storage_pid)
    target = {"port": host.port, "key": collect_keys.collect_key,
              "path": f"{APP_PATH}{COLLECTION}/apps/{collect_app}/devices/collect?api-version={API_VERSION}"}
    bodies = ingest.collect_bodies(ingest.make_batches(ingest.BATCHES, 50))
    try:
        log(f"Collect alone for {COLLECT_SECONDS:.0f}s, on the host the erasures will run in ...")
        alone = ingest.drive("collect", target, bodies, clients=clients, seconds=COLLECT_SECONDS)
        asked, first = _erase(host, app, export_key, list(itertools.islice(devices, ERASED_DEVICES)))
        seconds = (_ended(first) - asked).total_seconds()
        rewritten, total = _rewritten_bytes(app_id)
        log(f"erasure of {ERASED_DEVICES} devices: {seconds:.1f}s; then Collect posts to another app while "
            f"erasures run ...")
        spans: list[tuple[dt.datetime, dt.datetime]] = []
        stop = threading.Event()

        def erase_meanwhile() -> None:
            while not stop.is_set():
                started, task = _erase(host, app, export_key, list(itertools.islice(devices, ERASED_DEVICES)))
                spans.append((started, _ended(task)))

        eraser = threading.Thread(target=erase_meanwhile)
        eraser.start()
        window_start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)  # drive's clients start 3 s from now
        try:
            collect = ingest.drive("collect", target, bodies, clients=clients, seconds=COLLECT_SECONDS)
        finally:
            stop.set()
            eraser.join()
        # Collect alone again: a host's rate grows from one window to the next as it warms, so "alone" is the mean
        # of the windows before and after the one with erasures.
        log(f"Collect alone again for {COLLECT_SECONDS:.0f}s ...")
        after = ingest.drive("collect", target, bodies, clients=clients, seconds=COLLECT_SECONDS)
    finally:
        host.stop()
    window_end = window_start + dt.timedelta(seconds=COLLECT_SECONDS)
    covered = sum(max(0.0, (min(end, window_end) - max(start, window_start)).total_seconds()) for start, end in spans)
    return {"seconds": seconds, "rewritten_bytes": rewritten, "covered_bytes": total,
            "erased_records": first["erased"]["rawRecords"],
            "rewrite_ratio": (rewritten / seconds) / (rawcopy["bytes"] / rawcopy["seconds"]),
            "collect": collect, "collect_over_append_during": collect["requests_per_s"] / append["requests_per_s"],
            "collect_over_append_alone": (alone["requests_per_s"] + after["requests_per_s"]) / 2
            / append["requests_per_s"],
            "collect_overlap": min(1.0, covered / COLLECT_SECONDS), "erasures_during": len(spans)}


def report(figures: dict) -> None:
    print(f"erasure rewrite_ratio={figures['rewrite_ratio']:.2f} "
          f"rewritten_mib={figures['rewritten_bytes'] / 2**20:.1f} raw_mib={figures['covered_bytes'] / 2**20:.1f} "
          f"seconds={figures['seconds']:.1f} "
          f"erased_records={figures['erased_records']}")
    print(f"erasure collect/append_during={figures['collect_over_append_during']:.2f} "
          f"collect/append_alone={figures['collect_over_append_alone']:.2f} overlap={figures['collect_overlap']:.2f} "
          f"erasures={figures['erasures_during']}")


def main(argv=None) -> int:
    """`python -m bench.erasure`: the section alone, with its own baselines, on a fresh Azurite."""
    import argparse
    import os
    import tempfile

    from bench.__main__ import DAY, raw_copy
    from bench.hostprocess import use_storage
    from devhost.azurite import Azurite
    from sampledata import load_events

    parser = argparse.ArgumentParser(prog="python -m bench.erasure", description=__doc__)
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--clients", type=int, default=16)
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ee-bench-") as workdir, \
            Azurite.on_free_ports(os.path.join(workdir, "azurite")) as azurite:
        env = use_storage(azurite.connection_string)
        load_events(f"{COLLECTION}~{APP}", DAY, arguments.records)
        destination = storage.blob_service().get_container_client("bench-out")
        destination.create_container()
        rawcopy = raw_copy(f"{COLLECTION}~{APP}", destination)
        storage.blob_service().get_container_client("ingest-baseline").create_container()
        batches = ingest.make_batches(ingest.BATCHES, 50)
        append = ingest.drive("append", {"connection_string": azurite.connection_string}, ingest.raw_members(batches),
                              clients=arguments.clients, seconds=COLLECT_SECONDS)
        keys = apps.register_app(COLLECTION, APP)
        figures = run(env, azurite.pid, APP, keys.export_key, rawcopy, append, clients=arguments.clients)
        report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
