"""`make bench [RECORDS=2000000]`: export throughput and memory, side by side with baselines, in one run.

On a fresh Azurite (free loopback ports, temporary data), with one day of events from the project's
generator, it measures: a raw copy of the raw partitions' bytes blob to blob (no parsing); a JsonBlob and a
CsvBlob and a ParquetBlob export through the real API and engine (POST to Succeeded) on the local host, run
as its own process; DuckDB and polars converting the same gzip JSON Lines files (downloaded first, not
timed) to gzip CSV and to Parquet; the latency of a 10k-record export; the peak memory of the host
process with its conversion processes during CSV exports at two sizes and the Parquet export; a Device export
of DEVICES (200,000) devices from their compacted snapshot state plus a tail of later reports, and the
compaction itself; and then ingestion, Collect against plain appends to the same storage, and Collect with
30% snapshot records against without (bench/ingest.py, also runnable alone); and a pipeline's late run after a
large period (bench/pipeline.py).

Memory is the peak of the processes' summed PSS (each shared page counted once, split between the processes
that map it, as a container's memory limit counts it); the summed RSS, which counts the libraries every
process maps once per process, is printed beside it.
It prints a table, then the `ratio`/`latency`/`memory` lines, and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

import requests

from bench import erasure, ingest, pipeline
from bench.hostprocess import MIB, HostProcess, use_storage
from devhost.azurite import REPO_ROOT, Azurite
from shared.export import snapshotstate
from shared.ingest import rawstore
from shared.platform import apps, storage

API_VERSION = "2014-12-01"
DAY = dt.date(2026, 1, 15)


def cpu_seconds() -> float:
    """User plus system CPU seconds this process used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def export(host: HostProcess, collection: str, app: str, key: str, container_url: str, export_format: str, *,
           route: str = "events") -> dict:
    base = (f"{host.url}/subscriptions/bench/resourceGroups/bench/providers/Microsoft.MobileEngagement/"
            f"appcollections/{collection}/apps/{app}/devices/exportTasks")
    headers = {"Authorization": f"Bearer {key}"}
    body = {"containerUrl": container_url, "exportFormat": export_format}
    if route == "events":
        body.update(startDate=DAY.isoformat(), endDate=DAY.isoformat())
    posted_at = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    response = requests.post(f"{base}/{route}", params={"api-version": API_VERSION}, headers=headers, timeout=60,
                             json=body)
    response.raise_for_status()
    location = response.headers["Location"]
    while True:
        task = requests.get(location, headers=headers, timeout=60).json()
        if task["state"] in ("Succeeded", "Failed"):
            break
        time.sleep(0.2)  # a client polling harder would take CPU from the export it measures
    observed = time.perf_counter() - started
    if task["state"] != "Succeeded":
        raise RuntimeError(f"the {export_format} export failed: {task['errorDetails']}")
    # Timed to the moment the job became Succeeded (its dateCompleted, same clock), not to the poll that
    # saw it, which is up to one polling interval later.
    completed = dt.datetime.fromisoformat(task["dateCompleted"].replace("Z", "+00:00"))
    return {"seconds": (completed - posted_at).total_seconds(), "observed_seconds": observed,
            "records": task["recordCount"], "bytes": task["bytes"]}


# The big job is planned and its first parts are running by then.
SMALL_AFTER_BIG_SECONDS = 3.0


def fairness(env: dict[str, str], keys: dict, container_url: str, big: int, storage_pid: int) -> dict[str, dict]:
    """A 10k-record export of one app created while a big ParquetBlob export of another app runs: the small
    one's time to Succeeded, and the big one's time and peak memory (which includes the small one's)."""
    host = HostProcess(env, storage_pid)
    try:
        log(f"fairness: a 10k-record export while a ParquetBlob export of {big:,} records runs ...")
        sampler = host.sample()
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(
            export(host, "bench", "big", keys["big"].export_key, container_url, "ParquetBlob")))
        runner.start()
        time.sleep(SMALL_AFTER_BIG_SECONDS)
        small = export(host, "bench", "small", keys["small"].export_key, container_url, "JsonBlob")
        runner.join()
        if "seconds" not in outcome:
            raise RuntimeError("the big ParquetBlob export did not finish")
        return {"small_while_big": small, "big_parquet": dict(outcome, **host.stop_sampling(sampler))}
    finally:
        host.stop()


def raw_copy(app_id: str, destination) -> dict:
    """The baseline: the raw partitions' bytes moved blob to blob with azure-storage-blob, no parsing."""
    blobs = rawstore.list_day(app_id, "event", DAY)
    target = destination.get_blob_client(f"rawcopy/{app_id}.jsonl.gz")
    source = storage.container(rawstore.RAW_CONTAINER)
    started = time.perf_counter()
    from azure.storage.blob import BlobBlock
    blocks: list[BlobBlock] = []
    for blob in blobs:
        for chunk in source.get_blob_client(blob.name).download_blob(max_concurrency=2).chunks():
            block_id = f"{len(blocks):08d}"
            target.stage_block(block_id, chunk)
            blocks.append(BlobBlock(block_id=block_id))
    target.commit_block_list(blocks)
    return {"seconds": time.perf_counter() - started, "bytes": sum(b.size for b in blobs)}


def raw_files(app_id: str, workdir: str) -> list[str]:
    """The day's raw partitions on local disk, for the peers that read files (no storage I/O for them)."""
    source = storage.container(rawstore.RAW_CONTAINER)
    files = []
    for index, blob in enumerate(rawstore.list_day(app_id, "event", DAY)):
        path = os.path.join(workdir, f"part-{index:04d}.jsonl.gz")
        with open(path, "wb") as handle:
            source.get_blob_client(blob.name).download_blob().readinto(handle)
        files.append(path)
    return files


def duckdb_parquet_baseline(files: list[str], workdir: str) -> dict:
    import duckdb

    output = os.path.join(workdir, "out.parquet")
    started, cpu_at_start = time.perf_counter(), cpu_seconds()
    connection = duckdb.connect()
    connection.execute("SET threads = 2")
    connection.execute(f"COPY (SELECT * FROM read_json({files!r}, format='newline_delimited')) "
                       f"TO '{output}' (FORMAT parquet, COMPRESSION zstd)")
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_at_start
    return {"seconds": seconds, "cpu_s": cpu,
            "records": _one(connection, f"SELECT count(*) FROM read_parquet('{output}')")}


def polars_baseline(files: list[str], workdir: str, target: str) -> dict:
    """polars on the machine's 2 threads: read_ndjson of each gzip file, then write_parquet (zstd) or write_csv
    into a gzip file, the output CsvBlob and the DuckDB baseline write (polars' write_csv does not compress, so
    it writes through Python's gzip at zlib's default level, 6; gzip.open's own default, 9, is 3x slower)."""
    code = (
        "import gzip, resource, sys, time, polars as pl\n"
        "def cpu():\n"
        "    usage = resource.getrusage(resource.RUSAGE_SELF)\n"
        "    return usage.ru_utime + usage.ru_stime\n"
        "files, target, out = sys.argv[1:-2], sys.argv[-2], sys.argv[-1]\n"
        "started, cpu_at_start = time.perf_counter(), cpu()\n"
        "frame = pl.concat([pl.read_ndjson(f) for f in files], how='diagonal_relaxed')\n"
        "if target == 'parquet':\n"
        "    frame.write_parquet(out, compression='zstd')\n"
        "else:  # nested values as JSON text, as CsvBlob writes them\n"
        "    with gzip.open(out, 'wb', compresslevel=6) as handle:\n"
        "        frame.with_columns([pl.col(n).struct.json_encode() for n, t in frame.schema.items()"
        " if isinstance(t, pl.Struct)]).write_csv(handle)\n"
        "print(time.perf_counter() - started, frame.height, cpu() - cpu_at_start)\n")
    output = os.path.join(workdir, "polars.parquet" if target == "parquet" else "polars.csv.gz")
    # Its own process, so POLARS_MAX_THREADS holds from its start.
    answer = subprocess.run([sys.executable, "-c", code, *files, target, output], check=True, capture_output=True,
                            text=True, env=dict(os.environ, POLARS_MAX_THREADS="2")).stdout.split()
    return {"seconds": float(answer[0]), "records": int(answer[1]), "cpu_s": float(answer[2])}


def duckdb_baseline(files: list[str], workdir: str) -> dict:
    import duckdb

    output = os.path.join(workdir, "out.csv.gz")
    started, cpu_at_start = time.perf_counter(), cpu_seconds()
    connection = duckdb.connect()
    connection.execute(f"COPY (SELECT * FROM read_json({files!r}, format='newline_delimited')) "
                       f"TO '{output}' (HEADER, COMPRESSION gzip)")
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_at_start
    return {"seconds": seconds, "cpu_s": cpu, "records": _one(connection, f"SELECT count(*) FROM read_csv('{output}')"),
            "bytes": os.path.getsize(output), "threads": _one(connection, "SELECT current_setting('threads')")}


def _one(connection, query: str):
    """The single value a query answers."""
    row = connection.execute(query).fetchone()
    if row is None:
        raise RuntimeError(f"DuckDB answered nothing to {query}")
    return row[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--records", type=int, default=int(os.environ.get("RECORDS") or 2_000_000))
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "bench", "results", "latest.json"))
    parser.add_argument("--clients", type=int, default=16, help="concurrent Collect clients (ingestion section)")
    parser.add_argument("--ingest-seconds", type=float, default=15.0, help="how long each ingestion run sends")
    parser.add_argument("--big-records", type=int, default=int(os.environ.get("BIG_RECORDS") or 10_000_000),
                        help="events of the big ParquetBlob export that the fairness run starts first")
    parser.add_argument("--devices", type=int, default=int(os.environ.get("DEVICES") or 200_000),
                        help="devices of the app whose Device export is measured")
    arguments = parser.parse_args(argv)
    records = arguments.records
    from sampledata import load_devices, load_events

    with tempfile.TemporaryDirectory(prefix="ee-bench-") as workdir, \
            Azurite.on_free_ports(os.path.join(workdir, "azurite")) as azurite:
        env = use_storage(azurite.connection_string)
        sizes = {"small": 10_000, "half": records // 2, "full": records, "big": arguments.big_records}
        keys = {}
        for name, count in sizes.items():
            keys[name] = apps.register_app("bench", name)
            started = time.perf_counter()
            load_events(f"bench~{name}", DAY, count)
            log(f"generated {count:,} events for bench/{name} in {time.perf_counter() - started:.1f}s")
        from tools.demo import destination_url
        container_url = destination_url("bench-out")
        destination = storage.blob_service().get_container_client("bench-out")
        raw_bytes = sum(b.size for b in rawstore.list_day("bench~full", "event", DAY))
        results: dict[str, dict] = {}

        log("raw copy baseline ...")
        results["rawcopy"] = dict(raw_copy("bench~full", destination), records=records)
        files = raw_files("bench~full", workdir)
        log("duckdb baseline ...")
        results["duckdb"] = duckdb_baseline(files, workdir)
        log("duckdb parquet baseline ...")
        results["duckdb_parquet"] = duckdb_parquet_baseline(files, workdir)
        log("polars baselines ...")
        results["polars_parquet"] = polars_baseline(files, workdir, "parquet")
        results["polars_csv"] = polars_baseline(files, workdir, "csv")

        def warm_up(host: HostProcess, export_format: str) -> None:
            """One small export first, as a running service has served: a host's first export also loads the
            export's modules and starts the conversion processes, once per host. Its time is kept beside."""
            first = export(host, "bench", "small", keys["small"].export_key, container_url, export_format)
            results.setdefault("warm_up", {})[export_format] = first["seconds"]
            log(f"  warm-up: a {first['records']:,}-record {export_format} export on the new host took "
                f"{first['seconds']:.2f}s")

        host = HostProcess(env)
        try:
            log("JsonBlob export ...")
            warm_up(host, "JsonBlob")
            results["json"] = export(host, "bench", "full", keys["full"].export_key, container_url, "JsonBlob")
            log("small export latency ...")
            results["latency"] = export(host, "bench", "small", keys["small"].export_key, container_url, "JsonBlob")
        finally:
            host.stop()
        for size, label, export_format in (("half", "csv_half", "CsvBlob"), ("full", "csv", "CsvBlob"),
                                           ("full", "parquet", "ParquetBlob"), ("full", "delta", "DeltaLake"),
                                           ("big", "delta_big", "DeltaLake")):
            host = HostProcess(env, azurite.pid)
            try:
                log(f"{export_format} export of {sizes[size]:,} records ...")
                warm_up(host, export_format)
                sampler = host.sample()
                results[label] = export(host, "bench", size, keys[size].export_key, container_url, export_format)
                results[label].update(host.stop_sampling(sampler))
            finally:
                host.stop()
        results.update(fairness(env, keys, container_url, sizes["big"], azurite.pid))
        keys["devices"] = apps.register_app("bench", "devices")
        started = time.perf_counter()
        logged = load_devices("bench~devices", arguments.devices)
        log(f"generated {arguments.devices:,} devices ({logged:,} device, tag, token and push records) for "
            f"bench/devices in {time.perf_counter() - started:.1f}s")
        log("folding its snapshot log into its state, as the StartExport timer's compaction does ...")
        started, cpu_at_start = time.perf_counter(), cpu_seconds()
        snapshotstate.compact("bench~devices")
        results["compaction"] = {"seconds": time.perf_counter() - started, "cpu_s": cpu_seconds() - cpu_at_start,
                                 "records": logged}
        # Reports that came after the compaction, which the export folds on top of the state: 1% of the devices.
        recent = load_devices("bench~devices", arguments.devices // 100, seed=2)
        log(f"  then {recent:,} records of {arguments.devices // 100:,} other devices, after the state")
        host = HostProcess(env, azurite.pid)
        try:
            log(f"Device export of {arguments.devices:,} devices (CsvBlob) ...")
            warm_up(host, "CsvBlob")
            sampler = host.sample()
            results["devices"] = export(host, "bench", "devices", keys["devices"].export_key, container_url,
                                        "CsvBlob", route="devices")
            results["devices"].update(host.stop_sampling(sampler))
        finally:
            host.stop()
        log("pipelines: a late wave after a large period ...")
        results["pipeline"] = pipeline.run(env, container_url, azurite.pid, sizes["half"])
        ingestion = ingest.run(env, clients=arguments.clients, seconds=arguments.ingest_seconds, batch_size=50)
        log(f"erasure: a few devices of the app holding a day of {records:,} events ...")
        results["erasure"] = erasure.run(env, azurite.pid, "full", keys["full"].export_key, results["rawcopy"],
                                         ingestion["append"], clients=arguments.clients)

    print(f"{'measure':<22}{'records':>12}{'seconds':>10}{'records/s':>14}{'MB/s (raw in)':>15}{'peak MiB':>10}"
          f"{'(RSS sum)':>11}")
    for label, key, count in (("raw copy", "rawcopy", records), ("JsonBlob export", "json", records),
                              ("CsvBlob export", "csv", records), ("DuckDB json->csv", "duckdb", records),
                              ("polars json->csv", "polars_csv", records),
                              ("ParquetBlob export", "parquet", records),
                              ("DuckDB json->parquet", "duckdb_parquet", records),
                              ("polars json->parquet", "polars_parquet", records),
                              ("DeltaLake export", "delta", records),
                              ("DeltaLake export (big)", "delta_big", sizes["big"]),
                              ("CsvBlob export (1/2)", "csv_half", sizes["half"]),
                              ("small export latency", "latency", sizes["small"]),
                              ("ParquetBlob export (big)", "big_parquet", sizes["big"]),
                              ("small while big runs", "small_while_big", sizes["small"]),
                              ("Device export (CSV)", "devices", results["devices"]["records"])):
        figures = results[key]
        input_bytes = raw_bytes * count / records
        pss = f"{figures['peak_pss_mib']:.0f}" if "peak_pss_mib" in figures else "-"
        rss = f"{figures['peak_rss_mib']:.0f}" if "peak_rss_mib" in figures else "-"
        throughput = f"{input_bytes / MIB / figures['seconds']:.1f}" if key != "devices" else "-"
        print(f"{label:<22}{count:>12,}{figures['seconds']:>10.2f}{count / figures['seconds']:>14,.0f}"
              f"{throughput:>15}{pss:>10}{rss:>11}")
    ratios = {
        "json_over_rawcopy": results["rawcopy"]["seconds"] / results["json"]["seconds"],
        "csv_over_duckdb": results["duckdb"]["seconds"] / results["csv"]["seconds"],
        "parquet_over_duckdb": results["duckdb_parquet"]["seconds"] / results["parquet"]["seconds"],
        "parquet_over_polars": results["polars_parquet"]["seconds"] / results["parquet"]["seconds"],
        "csv_over_polars": results["polars_csv"]["seconds"] / results["csv"]["seconds"],
        "small_export_s": results["latency"]["seconds"],
        "peak_mib_1": results["csv_half"]["peak_pss_mib"],
        "peak_mib_2": results["csv"]["peak_pss_mib"],
        "parquet_peak_mib": results["parquet"]["peak_pss_mib"],
        "parquet_big_peak_mib": results["big_parquet"]["peak_pss_mib"],
        "small_while_big_s": results["small_while_big"]["seconds"],
        "devices_export_s": results["devices"]["seconds"],
        "compaction_s": results["compaction"]["seconds"],
        "devices_peak_mib": results["devices"]["peak_pss_mib"],
        # records/s of the Device export over the CsvBlob export's
        "snapshot_over_csv": (results["devices"]["records"] / results["devices"]["seconds"])
        / (results["csv"]["records"] / results["csv"]["seconds"]),
    }
    print(f"ratio json/rawcopy={ratios['json_over_rawcopy']:.2f}")
    print(f"ratio csv/duckdb={ratios['csv_over_duckdb']:.2f}")
    print(f"ratio csv/polars={ratios['csv_over_polars']:.2f}")
    print(f"ratio parquet/duckdb={ratios['parquet_over_duckdb']:.2f}")
    print(f"ratio parquet/polars={ratios['parquet_over_polars']:.2f}")
    print(f"latency small_export_s={ratios['small_export_s']:.2f}")
    print(f"memory peak_mib_1={ratios['peak_mib_1']:.0f} peak_mib_2={ratios['peak_mib_2']:.0f}")
    print(f"memory parquet_peak_mib={ratios['parquet_peak_mib']:.0f}")
    print(f"memory parquet_big_peak_mib={ratios['parquet_big_peak_mib']:.0f} big_records={sizes['big']}")
    print(f"fairness small_while_big_s={ratios['small_while_big_s']:.2f}")
    print(f"snapshot devices_export_s={ratios['devices_export_s']:.2f} devices={results['devices']['records']} "
          f"peak_mib={ratios['devices_peak_mib']:.0f}")
    print(f"snapshot compaction_s={ratios['compaction_s']:.2f} records={results['compaction']['records']}")
    print(f"ratio snapshot/csv={ratios['snapshot_over_csv']:.2f}")
    print(f"ratio delta/parquet={results['parquet']['seconds'] / results['delta']['seconds']:.2f}")
    print(f"memory delta_big_peak_mib={results['delta_big']['peak_pss_mib']:.0f} big_records={sizes['big']}")
    late = results["pipeline"]
    print(f"pipeline late_delivery_s={late['late_delivery_s']:.1f} last_batch_s={late['late_delivery_last_s']:.1f} "
          f"late_delivery_minutes=1")
    print(f"pipeline late_read_ratio={late['late_read_ratio']:.2f} read_bytes={late['late_read_bytes']} "
          f"late_bytes={late['late_record_bytes']} period_records={late['period_records']}")
    for label, duckdb_key in (("parquet", "duckdb_parquet"), ("csv", "duckdb")):
        # CPU seconds, for what the wall-clock ratios cannot show on a machine whose cores the storage emulator
        # shares: how much work the export itself did, against the peers' work on the same rows.
        host_cpu, polars_cpu = results[label]["cpu_s"], results[f"polars_{label}"]["cpu_s"]
        duckdb_cpu = results[duckdb_key]["cpu_s"]
        print(f"cpu {label}_s={host_cpu:.2f} storage_s={results[label]['storage_cpu_s']:.2f} "
              f"polars_{label}_s={polars_cpu:.2f} duckdb_{label}_s={duckdb_cpu:.2f}")
        print(f"cpu {label}_over_polars={polars_cpu / host_cpu:.2f} {label}_over_duckdb={duckdb_cpu / host_cpu:.2f}")
    ingest.report(ingestion)
    erasure.report(results["erasure"])
    os.makedirs(os.path.dirname(arguments.output), exist_ok=True)
    with open(arguments.output, "w", encoding="utf-8") as handle:
        json.dump({"records": records, "raw_bytes": raw_bytes, "cpus": os.cpu_count(), "results": results,
                   "ratios": ratios, "ingestion": ingestion,
                   "measured_at": dt.datetime.now(dt.UTC).isoformat()}, handle, indent=2)
    log(f"figures written to {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
