"""The erasure figures of `make bench`: how fast an erasure rewrites the raw store, and what it costs Collect.

On the bench's Azurite and a local host in its own process (its EraseData queue function running), an app holds
RECORDS events of one day (from the generator: 50 events a device on average). An erasure of a few devices is
asked over HTTP, and while it runs, Collect clients post batches to another app of the same host, as the
ingestion section does. It prints:

- `erasure rewrite_ratio=`: the bytes of raw store the erasure rewrote per second (the blobs it replaced, from
  the 202 to the task's dateCompleted) over the raw copy's bytes per second (the same app's raw blobs moved blob
  to blob, measured in the same run). Its target is 0.5 or more.
- `erasure collect/append_during=`: Collect's requests/s while the erasure ran over the ingestion section's
  append baseline (the same measure as `ratio collect/append=`, printed beside for comparison), and how much of
  Collect's window the erasure covered.
"""

from __future__ import annotations

import datetime as dt
import sys
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


def run(env: dict[str, str], storage_pid: int, rawcopy: dict, append: dict, *, clients: int) -> dict:
    """The erasure section, on the app ``bench/erasure`` the caller loaded: ``rawcopy`` is the raw copy baseline
    of its raw blobs (seconds, bytes), ``append`` the ingestion section's append baseline (requests_per_s)."""
    from sampledata.generator import _device_id

    app_id = f"{COLLECTION}~{APP}"
    keys = apps.register_app(COLLECTION, APP)
    collect_app = f"{APP}-collect"
    collect_keys = apps.register_app(COLLECTION, collect_app)
    host = HostProcess(env, storage_pid)
    try:
        app_path = "/subscriptions/bench/resourceGroups/bench/providers/Microsoft.MobileEngagement/appcollections/"
        headers = {"Authorization": f"Bearer {keys.export_key}"}
        devices = [_device_id(1, index) for index in range(ERASED_DEVICES)]
        asked = dt.datetime.now(dt.UTC)
        response = requests.post(f"{host.url}{app_path}{COLLECTION}/apps/{APP}/devices/erasureTasks",
                                 params={"api-version": API_VERSION}, headers=headers, timeout=120,
                                 json={"deviceIds": devices, "reason": "bench"})
        response.raise_for_status()
        location = response.headers["Location"]
        log(f"erasure of {ERASED_DEVICES} devices asked; Collect posts to another app meanwhile ...")
        target = {"port": host.port, "key": collect_keys.collect_key,
                  "path": f"{app_path}{COLLECTION}/apps/{collect_app}/devices/collect?api-version={API_VERSION}"}
        collect_started = dt.datetime.now(dt.UTC)
        collect = ingest.drive("collect", target, ingest.collect_bodies(ingest.make_batches(ingest.BATCHES, 50)),
                               clients=clients, seconds=COLLECT_SECONDS)
        collect_window = (collect_started + dt.timedelta(seconds=3),
                          collect_started + dt.timedelta(seconds=3 + COLLECT_SECONDS))
        while True:
            task = requests.get(location, headers=headers, timeout=60).json()
            if task["state"] in ("Succeeded", "Failed"):
                break
            time.sleep(0.5)
    finally:
        host.stop()
    if task["state"] != "Succeeded":
        raise RuntimeError(f"the erasure failed: {task.get('errorDetails')}")
    completed = dt.datetime.fromisoformat(task["dateCompleted"].replace("Z", "+00:00"))
    seconds = (completed - asked).total_seconds()
    rewritten, total = _rewritten_bytes(app_id)
    overlap = max(0.0, (min(completed, collect_window[1]) - collect_window[0]).total_seconds()) / COLLECT_SECONDS
    return {"seconds": seconds, "rewritten_bytes": rewritten, "covered_bytes": total,
            "erased_records": task["erased"]["rawRecords"],
            "rewrite_ratio": (rewritten / seconds) / (rawcopy["bytes"] / rawcopy["seconds"]),
            "collect": collect, "collect_over_append_during": collect["requests_per_s"] / append["requests_per_s"],
            "collect_overlap": min(1.0, overlap)}


def report(figures: dict, collect_over_append: float) -> None:
    print(f"erasure rewrite_ratio={figures['rewrite_ratio']:.2f} "
          f"rewritten_mib={figures['rewritten_bytes'] / 2**20:.1f} raw_mib={figures['covered_bytes'] / 2**20:.1f} "
          f"seconds={figures['seconds']:.1f} "
          f"erased_records={figures['erased_records']}")
    print(f"erasure collect/append_during={figures['collect_over_append_during']:.2f} "
          f"collect/append={collect_over_append:.2f} overlap={figures['collect_overlap']:.2f}")


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
    parser.add_argument("--records", type=int, default=1_000_000)
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
        figures = run(env, azurite.pid, rawcopy, append, clients=arguments.clients)
        report(figures, float("nan"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
