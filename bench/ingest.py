"""`make bench-ingest` (or `.venv/bin/python -m bench.ingest`): Collect against the storage it writes to.

On a fresh Azurite and a local host in its own process, N concurrent clients (default 16) send gzip batches
of 50 realistic records (one device's recent session: activities, events, errors, jobs) to Collect for a
fixed time. The baseline runs the same way on the same Azurite: as many clients append the same batches,
encoded and gzip'd as the raw store writes them, straight to append blobs with azure-storage-blob. The
clients run in processes of their own, so neither side shares an interpreter with what it measures.

Collect then runs three more times on the same host: SDK-sized batches of which 30% are snapshot records
(device reports, tags and tokens of distinct devices), and backend-sized batches (500 records) without and
with that share.

It prints requests/s, records/s, p50 and p99 latency for each, the storage requests the host made per
request (from its /health), acked against stored (counted back from the raw store), `ratio collect/append=`
and `ratio collect_mixed/collect=` (records/s with 30% snapshot records over records/s without, the lower of
the two batch sizes'). `make bench` runs the same section after the export figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import http.client
import json
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter

API_VERSION = "2014-12-01"
COLLECTION, APP = "bench", "ingest"
BATCHES = 400  # distinct batches the clients cycle through


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def session_batch(rng: random.Random, now: dt.datetime, size: int) -> list[dict]:
    """One device's recent records, as a mobile SDK sends them: a session's activities with their events and
    the odd error or job, all within the last minutes."""
    from sampledata.generator import ACTIVITIES, ERRORS, EVENTS, JOBS, _extras

    device = f"{rng.getrandbits(128):032x}"
    common = {"deviceId": device, **({"userId": f"user-{rng.randrange(10**7):07d}"} if rng.random() < 0.7 else {})}
    session = f"s-{rng.getrandbits(64):016x}"
    clock = now - dt.timedelta(minutes=10)
    records: list[dict] = []
    while len(records) < size:
        name = rng.choice(ACTIVITIES)
        end = clock + dt.timedelta(seconds=rng.randint(5, 60), milliseconds=rng.randint(0, 999))
        records.append({"type": "activity", **common, "sessionId": session, "name": name, "start": _iso(clock),
                        "end": _iso(end), "extras": _extras(rng, name)})
        for _ in range(rng.randint(2, 6)):
            records.append({"type": "event", **common, "sessionId": session, "name": rng.choice(EVENTS),
                            "timestamp": _iso(clock + (end - clock) * rng.random()), "extras": _extras(rng, name)})
        if rng.random() < 0.1:
            records.append({"type": "error", **common, "sessionId": session, "name": rng.choice(ERRORS),
                            "timestamp": _iso(end), "extras": {"code": rng.randint(400, 599)}})
        if rng.random() < 0.05:
            records.append({"type": "job", **common, "name": rng.choice(JOBS), "start": _iso(clock),
                            "end": _iso(end), "extras": {"items": rng.randint(1, 50)}})
        clock = end
    return records[:size]


def mixed_batch(rng: random.Random, now: dt.datetime, size: int, share: float = 0.3) -> list[dict]:
    """A batch whose ``share`` of records are snapshot records of distinct devices, each reporting itself, a tag
    and its push token, as a backend forwarding its users' reports sends them; the rest a session's records."""
    from sampledata.generator import CARRIERS, MODELS, PLACES

    snapshot: list[dict] = []
    while len(snapshot) < round(size * share):
        device = f"{rng.getrandbits(128):032x}"
        model, maker, firmware, version, _ = rng.choice(MODELS)
        country, region, locality = rng.choice(PLACES)
        snapshot += [
            {"type": "device", "deviceId": device, "timestamp": _iso(now - dt.timedelta(seconds=rng.randint(0, 600))),
             "info": {"phoneModel": model, "phoneManufacturer": maker, "firmwareName": firmware,
                      "firmwareVersion": version, "carrierName": rng.choice(CARRIERS),
                      "applicationVersionCode": rng.randint(200, 299)},
             "location": {"countrycode": country, "region": region, "locality": locality},
             "nativePushEnabled": rng.random() < 0.7},
            {"type": "tag", "deviceId": device, "name": "coins", "value": rng.randint(0, 100_000)},
            {"type": "token", "deviceId": device, "token": f"tok-{rng.getrandbits(128):032x}", "platform": "fcm"}]
    snapshot = snapshot[:round(size * share)]
    return session_batch(rng, now, size - len(snapshot)) + snapshot


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_batches(count: int, size: int, seed: int = 7, *, mixed: bool = False) -> list[list[dict]]:
    rng = random.Random(seed)
    # A minute back from now: every batch stays within the hour it was made in for a short run, as an SDK's do.
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    make = mixed_batch if mixed else session_batch
    return [make(rng, now, size) for _ in range(count)]


def collect_bodies(batches: list[list[dict]]) -> list[tuple[bytes, int]]:
    return [(gzip.compress(json.dumps({"records": batch}).encode("utf-8"), 5), len(batch)) for batch in batches]


def raw_members(batches: list[list[dict]]) -> list[tuple[bytes, int]]:
    """Each batch as the raw store writes it: normalized rows, encoded, one gzip member."""
    from isal import igzip

    from shared.ingest.rawstore import GZIP_LEVEL
    from shared.ingest.records import encode_line, normalize

    now = dt.datetime.now(dt.UTC)
    return [(igzip.compress(b"".join(encode_line(normalize(r, now=now)) for r in batch), GZIP_LEVEL, mtime=0),
             len(batch)) for batch in batches]


# --- the clients: run in processes of their own ---------------------------------------------------------

def _client_process(kind: str, target: dict, payloads: list[tuple[bytes, int]], clients: int, start_at: float,
                    stop_at: float, first_client: int, results) -> None:
    latencies: list[float] = []
    statuses: Counter = Counter()  # HTTP status, or the client's error for a request that got no answer
    acked = [0]
    lock = threading.Lock()

    def run(client: int) -> None:
        send = _collect_sender(target) if kind == "collect" else _append_sender(target, client)
        mine: list[float] = []
        mine_statuses: Counter = Counter()
        mine_acked = 0
        index = client * 7919
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < stop_at:
            body, records = payloads[index % len(payloads)]
            index += 1
            began = time.perf_counter()
            status, accepted = send(body, records)
            mine.append(time.perf_counter() - began)
            mine_statuses[status] += 1
            mine_acked += accepted
        with lock:
            latencies.extend(mine)
            statuses.update(mine_statuses)
            acked[0] += mine_acked

    threads = [threading.Thread(target=run, args=(first_client + n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put({"latencies": latencies, "statuses": {str(k): v for k, v in statuses.items()}, "acked": acked[0]})


def _collect_sender(target: dict):
    connection = http.client.HTTPConnection("127.0.0.1", target["port"], timeout=60)
    headers = {"Authorization": f"Bearer {target['key']}", "Content-Type": "application/json",
               "Content-Encoding": "gzip"}

    def send(body: bytes, records: int) -> tuple[object, int]:
        try:
            connection.request("POST", target["path"], body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            return type(error).__name__, 0
        if response.status != 200:
            return response.status, 0
        return 200, json.loads(answer)["accepted"]
    return send


def _append_sender(target: dict, client: int):
    from azure.core.exceptions import AzureError
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(target["connection_string"])
    blob = service.get_blob_client("ingest-baseline", f"client-{client:03d}.jsonl.gz")
    blob.create_append_blob()

    def send(body: bytes, records: int) -> tuple[object, int]:
        try:
            blob.append_block(body)
        except AzureError as error:
            return type(error).__name__, 0
        return 201, records
    return send


def drive(kind: str, target: dict, payloads: list[tuple[bytes, int]], *, clients: int, seconds: float,
          processes: int = 2) -> dict:
    """Runs ``clients`` clients spread over ``processes`` processes for ``seconds``; returns their figures."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 3.0  # the processes start (spawn imports) before anyone sends
    stop_at = start_at + seconds
    workers = []
    share, extra = divmod(clients, processes)
    first = 0
    for index in range(processes):
        count = share + (1 if index < extra else 0)
        if not count:
            continue
        worker = context.Process(target=_client_process, args=(kind, target, payloads, count, start_at, stop_at,
                                                               first, results))
        worker.start()
        workers.append(worker)
        first += count
    gathered = [results.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join()
    latencies = sorted(x for g in gathered for x in g["latencies"])
    statuses: Counter = Counter()
    for g in gathered:
        statuses.update(g["statuses"])
    ok = statuses.get("200", 0) + statuses.get("201", 0)
    return {"requests": len(latencies), "ok": ok, "statuses": dict(statuses), "seconds": seconds,
            "acked": sum(g["acked"] for g in gathered), "requests_per_s": ok / seconds,
            "records_per_s": sum(g["acked"] for g in gathered) / seconds,
            "p50_ms": _percentile(latencies, 0.50) * 1000, "p99_ms": _percentile(latencies, 0.99) * 1000}


def _percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def stored_records(app_id: str) -> int:
    """Records in the app's raw store (historical partitions and the snapshot log, not the log's folded state,
    which the StartExport timer may have written meanwhile), counted back line by line."""
    from shared.ingest import rawstore, snapshots
    from shared.platform import storage

    container = storage.container(rawstore.RAW_CONTAINER)
    total = 0
    for blob in container.list_blobs(name_starts_with=f"{app_id}/"):
        if not blob.name.startswith(f"{app_id}/{snapshots.STATE_TYPE}/"):
            total += gzip.decompress(container.get_blob_client(blob.name).download_blob().readall()).count(b"\n")
    return total


def storage_requests(host_url: str) -> int:
    """The storage requests the host has made so far, as its /health counts them (less that check's own)."""
    import requests

    return requests.get(f"{host_url}/health", timeout=30).json()["storageRequests"] - 1


# Backend-sized batches (many devices each), beside the SDK-sized ones.
BACKEND_BATCH = 500
BACKEND_BATCHES = 60


def run(env: dict[str, str], *, clients: int, seconds: float, batch_size: int) -> dict:
    """The ingestion section on the Azurite of ``env``: the baseline, then Collect with SDK-sized batches of
    session records, then with batches of which 30% are snapshot records, then both backend-sized; returns the
    figures."""
    from bench.hostprocess import HostProcess
    from shared.platform import apps, storage

    app_name = f"{APP}-{int(time.time())}"
    keys = apps.register_app(COLLECTION, app_name)
    batches = make_batches(BATCHES, batch_size)
    storage.blob_service().get_container_client("ingest-baseline").create_container()
    log(f"ingestion baseline: {clients} clients appending {batch_size}-record gzip members for {seconds:.0f}s ...")
    append = drive("append", {"connection_string": env["AzureWebJobsStorage"]}, raw_members(batches),
                   clients=clients, seconds=seconds)
    host = HostProcess(env)
    try:
        path = (f"/subscriptions/bench/resourceGroups/bench/providers/Microsoft.MobileEngagement/appcollections/"
                f"{COLLECTION}/apps/{app_name}/devices/collect?api-version={API_VERSION}")
        target = {"port": host.port, "path": path, "key": keys.collect_key}
        log(f"collect: {clients} clients posting {batch_size}-record gzip batches for {seconds:.0f}s ...")
        before = storage_requests(host.url)
        collect = drive("collect", target, collect_bodies(batches), clients=clients, seconds=seconds)
        collect["storage_requests"] = storage_requests(host.url) - before
        runs = {}
        for label, size, count, mixed in (("mixed", batch_size, BATCHES, True),
                                          ("backend", BACKEND_BATCH, BACKEND_BATCHES, False),
                                          ("backend_mixed", BACKEND_BATCH, BACKEND_BATCHES, True)):
            log(f"collect: {clients} clients posting {size}-record gzip batches"
                f"{', 30% snapshot records' if mixed else ''} for {seconds:.0f}s ...")
            runs[label] = drive("collect", target, collect_bodies(make_batches(count, size, mixed=mixed)),
                                clients=clients, seconds=seconds)
    finally:
        host.stop()
    collect["stored"] = stored_records(apps.app_ref(COLLECTION, app_name).id)
    acked = collect["acked"] + sum(row["acked"] for row in runs.values())
    return {"append": append, "collect": collect, **runs, "clients": clients, "batch_size": batch_size,
            "acked_all": acked, "ratio_collect_over_append": collect["requests_per_s"] / append["requests_per_s"],
            "ratio_mixed_over_collect": runs["mixed"]["records_per_s"] / collect["records_per_s"],
            "ratio_backend_mixed_over_backend": (runs["backend_mixed"]["records_per_s"]
                                                 / runs["backend"]["records_per_s"])}


def report(figures: dict) -> None:
    append, collect = figures["append"], figures["collect"]
    print(f"{'ingestion':<24}{'requests/s':>12}{'records/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'not ok':>8}")
    size, backend = figures["batch_size"], BACKEND_BATCH
    rows = (("append (baseline)", append), ("collect", collect), ("collect 30% snapshot", figures["mixed"]),
            (f"collect x{backend}", figures["backend"]), (f"collect x{backend} 30% snap.", figures["backend_mixed"]))
    for label, row in rows:
        print(f"{label:<24}{row['requests_per_s']:>12,.0f}{row['records_per_s']:>12,.0f}{row['p50_ms']:>9.1f}"
              f"{row['p99_ms']:>9.1f}{row['requests'] - row['ok']:>8}")
    per_request = collect["storage_requests"] / max(1, collect["requests"])
    for label, row in rows:
        if row["requests"] != row["ok"]:
            print(f"ingest {label} answers: {row['statuses']}")
    print(f"ratio collect/append={figures['ratio_collect_over_append']:.2f}")
    # The lower of the two sizes' ratios: the target holds for both.
    mixed_ratio = min(figures["ratio_mixed_over_collect"], figures["ratio_backend_mixed_over_backend"])
    print(f"ratio collect_mixed/collect={mixed_ratio:.2f}")
    print(f"ingest mixed batch_{size}={figures['ratio_mixed_over_collect']:.2f} "
          f"batch_{backend}={figures['ratio_backend_mixed_over_backend']:.2f} "
          f"p99_ms_{size}={figures['mixed']['p99_ms']:.1f} p99_ms_{backend}={figures['backend_mixed']['p99_ms']:.1f}")
    print(f"ingest records_per_s={collect['records_per_s']:.0f} requests_per_s={collect['requests_per_s']:.0f} "
          f"p50_ms={collect['p50_ms']:.1f} p99_ms={collect['p99_ms']:.1f}")
    print(f"ingest storage_requests_per_request={per_request:.2f}")
    print(f"ingest acked={figures['acked_all']} stored={collect['stored']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--batch-size", type=int, default=50)
    arguments = parser.parse_args(argv)
    from bench.hostprocess import use_storage
    from devhost.azurite import Azurite

    with tempfile.TemporaryDirectory(prefix="ee-bench-ingest-") as workdir, \
            Azurite.on_free_ports(os.path.join(workdir, "azurite")) as azurite:
        env = use_storage(azurite.connection_string)
        figures = run(env, clients=arguments.clients, seconds=arguments.seconds, batch_size=arguments.batch_size)
    report(figures)
    return 0 if figures["acked_all"] == figures["collect"]["stored"] else 1


if __name__ == "__main__":
    sys.exit(main())
