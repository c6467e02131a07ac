"""`make chaos [SECONDS=180]`: a bounded soak. Two local host processes share one Azurite, as Functions
instances share a storage account, reached through proxies that throttle (503 ServerBusy) and delay a share
of the storage requests. Several apps ingest through Collect (each batch with an Idempotency-Key, retried
until acknowledged) while exports of every type and format run. Every few seconds a random host is killed
with SIGKILL and started again, and Azurite is restarted once.

The first part of the run ingests one day (historical and snapshot records); the rest ingests the next day
while the exports of the first day run. Pipelines, made at the start for both days, deliver them while records
keep arriving: every record after a day's first run is a late one. At the end every job must be Succeeded with
exactly the acknowledged records of its range, each once, or Failed with an errorDetails; every pipeline's files
must hold every acknowledged record of its type once, under its day; no job may hold files its manifest does
not list; every poison message must belong to a Failed job. It prints the figures and ends with
`chaos: kills=K jobs=J pipelines=P lost=L doubled=D`; it exits 1 on any loss, double or unexplained message.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import requests

from devhost.azurite import SERVICES, Azurite, connection_string, free_port
from devhost.spawn import start_host, stop_host
from tools.stormproxy import StormProxy

API_VERSION = "2014-12-01"
CHAOS_KEY = "Y2hhb3Mtb25seS1rZXktbm90LWEtc2VjcmV0LTMyYiE="
FORMATS = ("JsonBlob", "CsvBlob", "ParquetBlob")
HISTORICAL_ROUTES = {"activities": "Activity", "events": "Event", "jobs": "Job", "errors": "Error",
                     "crashes": "Crash", "sessions": "Session"}
SNAPSHOT_ROUTES = {"tags": "Tag", "devices": "Device", "tokens": "Token", "feedbackByCampaign": "Push"}
POISON_QUEUES = ("export-work-poison", "export-poll-poison")
# app -> (pipeline name and route, its export type, format, layout): the pipelines the soak makes
PIPELINES = {"app0": ("events", "Event", "JsonBlob", "flat"), "app1": ("errors", "Error", "ParquetBlob", "hive")}
CAMPAIGN = 1


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Host:
    """One local host process on a fixed port, which can be killed and started again."""

    def __init__(self, name: str, env: dict[str, str], workdir: str) -> None:
        self.name, self.env, self.port = name, env, free_port()
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = start_host(self.env, self.port, self.log_path)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_host(self.process)


class Ledger:
    """What the clients were told: the acknowledged records, by app and export type, as identities."""

    def __init__(self) -> None:
        self.acked: dict[tuple[str, str], Counter] = defaultdict(Counter)
        # (app, export type) -> (day, identity): every acknowledged record of both days, for the pipelines
        self.by_day: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self.records = 0
        self.requests: Counter = Counter()
        self.lock = threading.Lock()

    def note(self, app: str, identities: list[tuple[str, object]], day: dt.date, *, exported: bool) -> None:
        """Notes a batch's records as acknowledged: for the exports of the first day (``exported``) and for the
        pipelines, which deliver both days."""
        with self.lock:
            for export_type, identity in identities:
                if exported:
                    self.acked[(app, export_type)][identity] += 1
                self.by_day[(app, export_type)][(day.isoformat(), identity)] += 1
            self.records += sum(1 for kind, _ in identities if kind not in ("Session",))


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_batch(rng: random.Random, app: str, client: int, number: int, day: dt.date, *,
               snapshot: bool) -> tuple[list[dict], list[tuple[str, object]]]:
    """One device's batch on ``day``: a session of activities with events, an error, a job and a crash, and
    (on the first day) the device's snapshot records; with the identity each record exports under."""
    device = f"{app}-c{client}-d{number}"
    session = f"s-{device}"
    clock = dt.datetime.combine(day, dt.time(rng.randint(1, 21), rng.randint(0, 59)), dt.UTC)
    records: list[dict] = []
    identities: list[tuple[str, object]] = []

    def seq() -> str:
        return f"{device}-{len(records)}-{day.isoformat()}"

    activities = rng.randint(1, 3)
    for _ in range(activities):
        end = clock + dt.timedelta(seconds=rng.randint(5, 120))
        key = seq()
        records.append({"type": "activity", "deviceId": device, "sessionId": session, "name": "screen",
                        "start": _iso(clock), "end": _iso(end), "extras": {"seq": key}})
        identities.append(("Activity", key))
        for kind, export_type in (("event", "Event"), ("event", "Event"), ("error", "Error")):
            key = seq()
            records.append({"type": kind, "deviceId": device, "sessionId": session, "name": kind,
                            "timestamp": _iso(clock + dt.timedelta(seconds=1)), "extras": {"seq": key}})
            identities.append((export_type, key))
        clock = end + dt.timedelta(seconds=1)
    identities.append(("Session", (session, activities)))
    key = seq()
    records.append({"type": "job", "deviceId": device, "name": "sync", "start": _iso(clock),
                    "end": _iso(clock + dt.timedelta(seconds=3)), "extras": {"seq": key}})
    identities.append(("Job", key))
    key = seq()
    records.append({"type": "crash", "deviceId": device, "timestamp": _iso(clock), "crashType": "SIGSEGV",
                    "message": key})
    identities.append(("Crash", key))
    if snapshot:
        records += [{"type": "device", "deviceId": device, "timestamp": _iso(clock), "info": {"locale": "fr_FR"}},
                    {"type": "tag", "deviceId": device, "name": "level", "value": number},
                    {"type": "token", "deviceId": device, "token": f"tok-{device}"},
                    {"type": "push", "deviceId": device, "campaignId": CAMPAIGN, "campaignType": "Announcement",
                     "action": "pushed", "timestamp": _iso(clock)}]
        identities += [("Device", device), ("Tag", (device, "level")), ("Token", device), ("Push", device)]
    return records, identities


class Soak:
    def __init__(self, seconds: float, apps: int, clients: int, busy_share: float, delay_share: float,
                 workdir: str, seed: int) -> None:
        self.seconds, self.apps, self.clients, self.workdir = seconds, apps, clients, workdir
        self.rng = random.Random(seed)
        self.azurite = Azurite.on_free_ports(os.path.join(workdir, "azurite"))
        self.proxies = {service: StormProxy(self.azurite.ports[service], busy_share=busy_share,
                                            delay_share=delay_share, delay_seconds=0.2, seed=seed + index)
                        for index, service in enumerate(SERVICES)}
        self.ledger = Ledger()
        self.kills = 0
        self.stop_ingesting = threading.Event()
        self.first_day_done = threading.Event()
        today = dt.datetime.now(dt.UTC).date()
        self.day_one, self.day_two = today - dt.timedelta(days=2), today - dt.timedelta(days=1)
        self.hosts: list[Host] = []
        self.keys: dict[str, object] = {}
        self.jobs: dict[str, tuple[str, str, str]] = {}  # job id -> (app, route, format)
        self.host_lock = threading.Lock()
        self._saved_environ: dict[str, str] | None = None
        # First-day batches created and not yet acknowledged: the exports start once there are none.
        self.first_day_pending = 0
        self.first_day_settled = threading.Condition()

    # --- the cluster --------------------------------------------------------------------------------------

    def start(self) -> None:
        self.azurite.start()
        for proxy in self.proxies.values():
            proxy.start()
        through = connection_string("127.0.0.1", {s: p.port for s, p in self.proxies.items()})
        env = dict(os.environ, AzureWebJobsStorage=through, DestinationStorage=through,
                   EXPORT_SAS_ENCRYPTION_KEY=CHAOS_KEY, EXPORT_ALLOW_LOOPBACK_DESTINATIONS="true",
                   EXPORT_SCHEDULES="[]", EXPORT_PROBE_DESTINATION="false",
                   COLLECT_IDEMPOTENCY_LEASE_SECONDS="5")
        # The soak's own calls (keys, SAS) use these settings too; stop() puts the caller's back.
        self._saved_environ = dict(os.environ)
        os.environ.update(env)
        from shared.platform import config
        config.reset_settings()
        self.hosts = [Host(f"host{index}", env, self.workdir) for index in (1, 2)]
        for host in self.hosts:
            host.start()
        from shared.platform import apps
        for index in range(self.apps):
            # rotate=True: an upsert, so a try whose answer the proxy lost can be made again
            self.keys[f"app{index}"] = _retrying(lambda name=f"app{index}": apps.register_app("chaos", name,
                                                                                              rotate=True))

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()
        for proxy in self.proxies.values():
            proxy.stop()
        self.azurite.stop()
        if self._saved_environ is not None:
            os.environ.clear()
            os.environ.update(self._saved_environ)
            from shared.platform import config
            config.reset_settings()

    def live_url(self) -> str:
        with self.host_lock:
            alive = [host for host in self.hosts if host.process is not None and host.process.poll() is None]
        return self.rng.choice(alive or self.hosts).url

    def chaos(self, until: float) -> None:
        restarted_azurite = False
        while time.monotonic() < until:
            time.sleep(self.rng.uniform(2.0, 5.0))
            if time.monotonic() >= until:
                break
            if not restarted_azurite and time.monotonic() > until - self.seconds / 2:
                restarted_azurite = True
                log("restarting Azurite")
                self.azurite.stop()
                self.azurite.start()
                continue
            host = self.rng.choice(self.hosts)
            with self.host_lock:
                host.kill()
            self.kills += 1
            log(f"killed {host.name} (SIGKILL); starting it again")
            time.sleep(self.rng.uniform(0.2, 1.0))
            with self.host_lock:
                host.start()

    # --- load ---------------------------------------------------------------------------------------------

    def _path(self, app: str) -> str:
        return (f"/subscriptions/chaos/resourceGroups/chaos/providers/Microsoft.MobileEngagement/appcollections/"
                f"chaos/apps/{app}/devices")

    def ingest(self, app: str, client: int) -> None:
        rng = random.Random(f"{app}:{client}")
        session = requests.Session()
        key = self.keys[app].collect_key  # type: ignore[attr-defined]
        number = 0
        while not self.stop_ingesting.is_set():
            with self.first_day_settled:
                first_day = not self.first_day_done.is_set()
                self.first_day_pending += first_day
            records, identities = make_batch(rng, app, client, number, self.day_one if first_day else self.day_two,
                                             snapshot=first_day)
            number += 1
            body = json.dumps({"records": records}).encode()
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                       "Idempotency-Key": str(uuid.uuid4())}
            while True:  # the same batch and key until it is acknowledged: exactly once
                try:
                    response = session.post(f"{self.live_url()}{self._path(app)}/collect",
                                            params={"api-version": API_VERSION}, data=body, headers=headers,
                                            timeout=30)
                except requests.RequestException:
                    self.ledger.requests["no answer"] += 1
                    time.sleep(0.2)
                    continue
                self.ledger.requests[response.status_code] += 1
                if response.status_code == 200:
                    answer = response.json()
                    if answer["rejected"]:
                        raise RuntimeError(f"Collect refused chaos records: {answer['rejected'][:2]}")
                    break
                time.sleep(min(2.0, float(response.headers.get("Retry-After", "0.5") or 0.5)) * rng.random())
            # The second day is not exported by tasks: it keeps ingestion running beside them, and the
            # pipelines deliver it.
            self.ledger.note(app, identities, self.day_one if first_day else self.day_two, exported=first_day)
            if first_day:
                with self.first_day_settled:
                    self.first_day_pending -= 1
                    self.first_day_settled.notify_all()

    def create_exports(self) -> None:
        from shared.export import destination
        url = destination.container_sas_url(self.azurite.connection_string, "chaos-out", permission="rcwl",
                                            valid_for=dt.timedelta(hours=3))
        wanted: list[tuple[str, str, str]] = []
        for route in list(HISTORICAL_ROUTES) + list(SNAPSHOT_ROUTES):
            for export_format in FORMATS:
                wanted.append(("app0", route, export_format))
        for index in range(1, self.apps):
            wanted += [(f"app{index}", "events", "CsvBlob"), (f"app{index}", "tags", "ParquetBlob")]
        for app, route, export_format in wanted:
            body: dict[str, Any] = {"containerUrl": url, "exportFormat": export_format}
            if route in HISTORICAL_ROUTES:
                body.update(startDate=self.day_one.isoformat(), endDate=self.day_one.isoformat())
            elif route == "feedbackByCampaign":
                body.update(campaignIds=[CAMPAIGN], campaignType="Announcement")
            self._until_taken("POST", app, f"exportTasks/{route}", body, f"the {route} export")

    def _until_taken(self, method: str, app: str, resource: str, body: dict[str, Any], what: str) -> None:
        """Sends the request to a live host until it is taken (2xx), through lost answers and 5xx."""
        for _ in range(60):
            try:
                response = requests.request(method, f"{self.live_url()}{self._path(app)}/{resource}",
                                            params={"api-version": API_VERSION}, json=body, timeout=30,
                                            headers={"Authorization": f"Bearer {self._export_key(app)}"})
            except requests.RequestException:
                time.sleep(0.3)
                continue
            if response.status_code < 300:
                return
            if response.status_code < 500:
                raise RuntimeError(f"{what} was refused: {response.text[:300]}")
            time.sleep(0.3)
        raise RuntimeError(f"{what} could not be created")

    def create_pipelines(self) -> None:
        """A daily pipeline of both days for some apps, made before their records come: each record acknowledged
        after its day's first run is delivered by a late run."""
        from shared.export import destination
        url = destination.container_sas_url(self.azurite.connection_string, "chaos-pipes", permission="rcwl",
                                            valid_for=dt.timedelta(days=3))
        for app, (name, _, export_format, layout) in PIPELINES.items():
            if app not in self.keys:
                continue
            body: dict[str, Any] = {"route": name, "exportFormat": export_format, "layout": layout,
                                    "cadence": "daily", "settleMinutes": 0, "lateDeliveryMinutes": 1,
                                    "startFrom": self.day_one.isoformat(), "containerUrl": url}
            self._until_taken("PUT", app, f"exportPipelines/{name}", body, f"the {name} pipeline")

    def wait_for_pipelines(self, since: dt.datetime, timeout: float) -> dict[str, dict]:
        """Each pipeline once it has looked for late records after ``since`` (the last acknowledgement) and has
        no run in flight."""
        deadline = time.monotonic() + timeout
        shown: dict[str, dict] = {}
        for app, (name, *_) in PIPELINES.items():
            if app not in self.keys:
                continue
            while True:
                pipeline = self._get(f"{self.live_url()}{self._path(app)}/exportPipelines/{name}?api-version="
                                     f"{API_VERSION}", app)
                checked = pipeline.get("lateCheckedAt")
                if (checked and checked > _iso(since) and "runInFlight" not in pipeline) or \
                        time.monotonic() > deadline:
                    shown[app] = pipeline
                    break
                time.sleep(1.0)
        return shown

    def _export_key(self, app: str) -> str:
        return self.keys[app].export_key  # type: ignore[attr-defined]

    # --- the end ------------------------------------------------------------------------------------------

    def all_jobs(self) -> dict[str, dict]:
        """Every job of every app, as the API lists them (a job whose creation answer was lost included)."""
        found = {}
        for app in self.keys:
            url: str | None = f"{self.live_url()}{self._path(app)}/exportTasks?api-version={API_VERSION}"
            while url:
                page = self._get(url, app)
                for task in page["value"]:
                    found[task["id"]] = dict(task, app=app)
                url = page.get("nextLink")
        return found

    def _get(self, url: str, app: str) -> dict:
        for _ in range(120):
            try:
                response = requests.get(url, timeout=30, headers={"Authorization": f"Bearer {self._export_key(app)}"})
                if response.status_code == 200:
                    return response.json()
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the task list of {app} could not be read")

    def wait_for_jobs(self, timeout: float) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        while True:
            tasks = self.all_jobs()
            running = [t for t in tasks.values() if t["state"] not in ("Succeeded", "Failed")]
            if not running or time.monotonic() > deadline:
                return tasks
            time.sleep(1.0)


def _retrying(call: Callable, tries: int = 30):
    for attempt in range(tries):
        try:
            return call()
        except Exception:  # storage throttled or restarting: the soak's own setup rides it out too
            if attempt + 1 == tries:
                raise
            time.sleep(0.3)


def exported_identities(task: dict, container) -> tuple[Counter, list[str]]:
    """The identities of the rows in a Succeeded job's files, and the job's blobs its manifest does not list."""
    export_type = task["exportType"]
    prefix = f"{export_type}/{task['id']}/"
    names = sorted(blob.name for blob in container.list_blobs(name_starts_with=prefix))
    manifest = json.loads(container.download_blob(prefix + "manifest.json").readall())
    listed = {entry["name"] if "/" in entry["name"] else prefix + entry["name"] for entry in manifest["files"]}
    known = listed | {prefix + "manifest.json", prefix + "schema.json", prefix + "_SUCCESS"}
    strays = [name for name in names if name not in known]
    identities: Counter = Counter()
    for name in sorted(listed):
        for row in _rows(name, container.download_blob(name).readall()):
            identities[_identity(export_type, row)] += 1
    return identities, strays


def _rows(name: str, data: bytes) -> list[dict]:
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq
        return pq.read_table(io.BytesIO(data)).to_pylist()
    text = gzip.decompress(data).decode("utf-8")
    if name.endswith(".csv.gz"):
        return list(csv.DictReader(io.StringIO(text)))
    return [json.loads(line) for line in text.splitlines() if line]


def _identity(export_type: str, row: dict) -> object:
    if export_type in ("Activity", "Event", "Job", "Error"):
        extras = row["extras"]
        return (json.loads(extras) if isinstance(extras, str) else extras)["seq"]
    if export_type == "Crash":
        return row["message"]
    if export_type == "Session":
        return (row["sessionId"], int(row["activityCount"]))
    if export_type == "Tag":
        return (row["deviceId"], row["name"])
    return row["deviceId"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="how long the chaos lasts")
    parser.add_argument("--apps", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2, help="Collect clients per app")
    parser.add_argument("--busy", type=float, default=0.03, help="share of storage requests answered 503")
    parser.add_argument("--delayed", type=float, default=0.03, help="share of storage requests delayed 0.2 s")
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ee-chaos-") as workdir:
        soak = Soak(arguments.seconds, arguments.apps, arguments.clients, arguments.busy, arguments.delayed,
                    workdir, arguments.seed)
        try:
            return run(soak)
        finally:
            soak.stop()


def run(soak: Soak) -> int:
    started = time.monotonic()
    soak.start()
    log(f"2 hosts on one Azurite behind storm proxies; {soak.apps} apps x {soak.clients} Collect clients; "
        f"{soak.seconds:.0f}s of chaos")
    soak.create_pipelines()
    until = started + soak.seconds
    clients = [threading.Thread(target=soak.ingest, args=(app, client), daemon=True)
               for app in soak.keys for client in range(soak.clients)]
    for client in clients:
        client.start()
    chaos = threading.Thread(target=soak.chaos, args=(until,), daemon=True)
    chaos.start()
    time.sleep(max(1.0, soak.seconds * 0.3))
    with soak.first_day_settled:
        soak.first_day_done.set()
        if not soak.first_day_settled.wait_for(lambda: soak.first_day_pending == 0, timeout=180):
            raise RuntimeError("batches of the first day were still not acknowledged after 180 s")
    log("first day ingested; creating the exports of every type and format")
    soak.create_exports()
    while time.monotonic() < until:
        time.sleep(0.5)
    soak.stop_ingesting.set()
    for client in clients:
        client.join(120)
    chaos.join(60)
    for host in soak.hosts:
        if host.process is None or host.process.poll() is not None:
            host.start()
    last_acknowledged = dt.datetime.now(dt.UTC)
    log("chaos over; waiting for every pipeline's last late run and every job to end")
    pipelines = soak.wait_for_pipelines(last_acknowledged, timeout=max(240.0, soak.seconds))
    tasks = soak.wait_for_jobs(timeout=max(180.0, soak.seconds))
    return verify(soak, tasks, pipelines)


def delivered_identities(container, name: str, export_type: str) -> Counter:
    """(day, identity) of every row of a pipeline's data files: the folder is the day (flat or date=)."""
    found: Counter = Counter()
    for blob in container.list_blobs(name_starts_with=f"{name}/"):
        folder = blob.name[len(name) + 1:].split("/")[0]
        if folder.startswith("_"):
            continue
        for row in _rows(blob.name, container.download_blob(blob.name).readall()):
            found[(folder.removeprefix("date="), _identity(export_type, row))] += 1
    return found


def verify_pipelines(soak: Soak, pipelines: dict[str, dict]) -> tuple[int, int, int]:
    """Lost, doubled and unexpected records of the pipelines' files against every acknowledged record."""
    from azure.storage.blob import BlobServiceClient
    container = BlobServiceClient.from_connection_string(soak.azurite.connection_string).get_container_client(
        "chaos-pipes")
    lost = doubled = unexpected = 0
    for app, shown in pipelines.items():
        name, export_type, *_ = PIPELINES[app]
        delivered = delivered_identities(container, name, export_type)
        expected = soak.ledger.by_day[(app, export_type)]
        pipe_lost = sum((expected - delivered).values())
        pipe_doubled = sum(count - 1 for count in delivered.values() if count > 1)
        pipe_unexpected = sum(1 for identity in delivered if identity not in expected)
        log(f"pipeline {name} of {app} ({shown['state']}, late records checked at {shown.get('lateCheckedAt')}): "
            f"{sum(delivered.values())} rows delivered of {sum(expected.values())} acknowledged; lost {pipe_lost}, "
            f"doubled {pipe_doubled}, unexpected {pipe_unexpected}")
        lost, doubled, unexpected = lost + pipe_lost, doubled + pipe_doubled, unexpected + pipe_unexpected
    return lost, doubled, unexpected


def verify(soak: Soak, tasks: dict[str, dict], pipelines: dict[str, dict]) -> int:
    from azure.storage.blob import BlobServiceClient
    container = BlobServiceClient.from_connection_string(soak.azurite.connection_string).get_container_client(
        "chaos-out")
    lost = doubled = unexpected = strays = exported = 0
    states: Counter = Counter()
    failed_ids: set[str] = set()
    for task in tasks.values():
        states[task["state"]] += 1
        if task["state"] == "Failed":
            failed_ids.add(task["id"])
            if not task.get("errorDetails"):
                log(f"job {task['id']} Failed without errorDetails")
                unexpected += 1
            else:
                log(f"job {task['id']} ({task['app']}) Failed: {task['errorDetails']}")
            continue
        if task["state"] != "Succeeded":
            log(f"job {task['id']} did not end: {task['state']}")
            unexpected += 1
            continue
        if "pipeline" in task:
            continue  # a pipeline's run holds part of its periods: the pipelines are checked whole below
        export_type = str(task["exportType"])
        identities, stray_names = exported_identities(task, container)
        expected = soak.ledger.acked[(task["app"], export_type)]
        exported += sum(identities.values())
        strays += len(stray_names)
        job_lost = sum((expected - identities).values())
        job_doubled = sum(count - 1 for count in identities.values() if count > 1)
        job_unexpected = sum(1 for identity in identities if identity not in expected)
        if job_lost or job_doubled or job_unexpected or stray_names:
            log(f"job {task['id']} {export_type} {task.get('exportFormat')}: lost {job_lost}, doubled {job_doubled}, "
                f"unexpected {job_unexpected}, files not in its manifest {stray_names[:3]}")
        lost += job_lost
        doubled += job_doubled
        unexpected += job_unexpected
    pipe_lost, pipe_doubled, pipe_unexpected = verify_pipelines(soak, pipelines)
    lost, doubled, unexpected = lost + pipe_lost, doubled + pipe_doubled, unexpected + pipe_unexpected
    unexplained = _unexplained_poison(soak, failed_ids)
    print(f"kills: {soak.kills} (and Azurite restarted once)")
    print("storage requests through the proxies: " + ", ".join(
        f"{service} {dict(proxy.counts)}" for service, proxy in soak.proxies.items()))
    print(f"collect answers: {dict(soak.ledger.requests)}")
    print(f"records acked: {soak.ledger.records}; jobs: {dict(states)}; rows exported: {exported}")
    print(f"lost: {lost}; doubled: {doubled}; unexpected rows: {unexpected}; files outside manifests: {strays}; "
          f"unexplained poison messages: {unexplained}")
    print(f"chaos: kills={soak.kills} jobs={len(tasks)} pipelines={len(pipelines)} lost={lost} doubled={doubled}")
    return 1 if (lost or doubled or unexpected or strays or unexplained) else 0


def _unexplained_poison(soak: Soak, failed_ids: set[str]) -> int:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient
    unexplained = 0
    for name in POISON_QUEUES:
        queue = QueueClient.from_connection_string(soak.azurite.connection_string, name)
        try:
            messages = list(queue.peek_messages(max_messages=32))
        except ResourceNotFoundError:
            continue
        for message in messages:
            text = message.content
            try:
                import base64
                text = base64.b64decode(text).decode()
            except ValueError:
                pass
            job = json.loads(text).get("job") if text.startswith("{") else None
            if job in failed_ids:
                log(f"poison message of Failed job {job} in {name}: explained")
            else:
                log(f"poison message in {name} not explained by a Failed job: {text[:200]}")
                unexplained += 1
    return unexplained


if __name__ == "__main__":
    sys.exit(main())
