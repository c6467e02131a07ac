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
not list; every poison message must belong to a Failed job.

Erasures are asked all along (by deviceIds, and by userIds of users still sending), at random moments and right
after kills. Every erasure task must succeed, and a record an erasure covers (of its ids, acknowledged before it
was asked) is in no export or run created after its 202; records of its ids acknowledged after the 202 are new
data, delivered as any other. Once every erasure has ended, every type is exported again, of both days. It prints
the figures and ends with `chaos: kills=K jobs=J pipelines=P lost=L doubled=D erasures=E leaked=X`; it exits 1 on
any loss, double, unexplained message, leak or erasure that did not succeed.
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
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
# A user owns this many consecutive batches (each a device of its own) of one client: a user erasure can meet
# records of the user that keep coming after it, which are new data and must be delivered.
USER_BATCHES = 3
# The export types whose rows an erasure by userId takes out: the stored records that carry the userId the soak
# sends (a session is computed from its activities). Device, tag and push records carry no userId and stay.
USER_TYPES = frozenset({"Activity", "Event", "Error", "Job", "Crash", "Session", "Token"})
ENDED = ("Succeeded", "Failed")
AFTER_ERASURES = "chaos: after every erasure ended"  # the description of the exports made once they all ended


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

    def wait_for_function(self, name: str, timeout: float = 60.0) -> None:
        """Returns once the host's log says it loaded function ``name``; RuntimeError if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, encoding="utf-8", errors="replace") as log_file:
                if any("Functions loaded:" in line and f"{name} (" in line for line in log_file):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not load the {name} function; see {self.log_path}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_host(self.process)


@dataclass(frozen=True)
class Batch:
    """One acknowledged batch: one device's (and one user's) records of one day, and when the client first sent it
    and when it was acknowledged (wall clock, as the service's own times)."""

    app: str
    device: str
    user: str
    first_sent: dt.datetime
    acked: dt.datetime


@dataclass(frozen=True)
class Erasure:
    """An erasure the soak asked for: its ids, when the request was first sent and when its 202 came back."""

    app: str
    task_id: str
    device_ids: frozenset[str]
    user_ids: frozenset[str]
    sent: dt.datetime
    answered: dt.datetime

    def names(self, batch: Batch, export_type: str) -> bool:
        """Whether the erasure's ids take out the batch's rows of ``export_type``."""
        return batch.app == self.app and (batch.device in self.device_ids
                                          or (batch.user in self.user_ids and export_type in USER_TYPES))

    def covers(self, batch: Batch, export_type: str) -> bool:
        """Whether it erases the batch's rows of ``export_type``: they are its ids' and were acknowledged before
        it was asked. A batch of its ids sent after its 202 is new data (the soak never sends one in between)."""
        if not self.names(batch, export_type):
            return False
        if batch.acked < self.sent:
            return True
        if batch.first_sent > self.answered:
            return False
        raise AssertionError(f"batch of {batch.device} was in flight while erasure {self.task_id} was asked")


class Gate:
    """One Collect client's turn: an erasure by userId waits for the client's batch in flight and holds its next
    one until the 202, so each batch of a user is acknowledged before the request or sent after its answer."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._busy = False
        self._paused = 0

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._paused)
            self._busy = True
        try:
            yield
        finally:
            with self._condition:
                self._busy = False
                self._condition.notify_all()

    @contextmanager
    def paused(self) -> Iterator[None]:
        with self._condition:
            self._paused += 1
            self._condition.wait_for(lambda: not self._busy)
        try:
            yield
        finally:
            with self._condition:
                self._paused -= 1
                self._condition.notify_all()


class Ledger:
    """What the clients were told: the acknowledged records, by app and export type, as identities, and the batch
    each identity came in."""

    def __init__(self) -> None:
        self.acked: dict[tuple[str, str], Counter] = defaultdict(Counter)
        # (app, export type) -> (day, identity): every acknowledged record of both days, for the pipelines
        self.by_day: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self.batch_of: dict[tuple[str, str, object], Batch] = {}  # (app, export type, identity) -> its batch
        self.batches: dict[str, list[Batch]] = defaultdict(list)  # app -> its acknowledged batches
        self.records = 0
        self.requests: Counter = Counter()
        self.lock = threading.Lock()

    def note(self, batch: Batch, identities: list[tuple[str, object]], day: dt.date, *, exported: bool) -> None:
        """Notes a batch's records as acknowledged: for the exports of the first day (``exported``) and for the
        pipelines, which deliver both days."""
        app = batch.app
        with self.lock:
            for export_type, identity in identities:
                if exported:
                    self.acked[(app, export_type)][identity] += 1
                self.by_day[(app, export_type)][(day.isoformat(), identity)] += 1
                self.batch_of[(app, export_type, identity)] = batch
            self.batches[app].append(batch)
            self.records += sum(1 for kind, _ in identities if kind not in ("Session",))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def user_of(app: str, client: int, number: int) -> str:
    return f"{app}-c{client}-u{number // USER_BATCHES}"


def make_batch(rng: random.Random, app: str, client: int, number: int, day: dt.date, *,
               snapshot: bool) -> tuple[list[dict], list[tuple[str, object]]]:
    """One device's batch on ``day``: a session of activities with events, an error, a job and a crash, and
    (on the first day) the device's snapshot records; with the identity each record exports under."""
    device = f"{app}-c{client}-d{number}"
    user = user_of(app, client, number)
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
        records.append({"type": "activity", "deviceId": device, "userId": user, "sessionId": session, "name": "screen",
                        "start": _iso(clock), "end": _iso(end), "extras": {"seq": key}})
        identities.append(("Activity", key))
        for kind, export_type in (("event", "Event"), ("event", "Event"), ("error", "Error")):
            key = seq()
            records.append({"type": kind, "deviceId": device, "userId": user, "sessionId": session, "name": kind,
                            "timestamp": _iso(clock + dt.timedelta(seconds=1)), "extras": {"seq": key}})
            identities.append((export_type, key))
        clock = end + dt.timedelta(seconds=1)
    identities.append(("Session", (session, activities)))
    key = seq()
    records.append({"type": "job", "deviceId": device, "userId": user, "name": "sync", "start": _iso(clock),
                    "end": _iso(clock + dt.timedelta(seconds=3)), "extras": {"seq": key}})
    identities.append(("Job", key))
    key = seq()
    records.append({"type": "crash", "deviceId": device, "userId": user, "timestamp": _iso(clock),
                    "crashType": "SIGSEGV", "message": key})
    identities.append(("Crash", key))
    if snapshot:
        records += [{"type": "device", "deviceId": device, "timestamp": _iso(clock), "info": {"locale": "fr_FR"}},
                    {"type": "tag", "deviceId": device, "name": "level", "value": number},
                    {"type": "token", "deviceId": device, "userId": user, "token": f"tok-{device}"},
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
        # Erasures: each Collect client's gate, its next batch number, the erasures answered 202, and a kill's
        # signal (an erasure is sometimes asked while a host is down).
        self.gates: dict[tuple[str, int], Gate] = defaultdict(Gate)
        self.next_number: dict[tuple[str, int], int] = defaultdict(int)
        self.erasures: list[Erasure] = []
        self.erasure_failures: list[str] = []  # an erasure that could not be asked stops the erasures
        self.host_killed = threading.Event()
        self.erasure_rng = random.Random(seed * 7919 + 34)

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
        for host in self.hosts:
            host.wait_for_function("EraseData")
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
            self.host_killed.set()
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
        gate = self.gates[(app, client)]
        number = 0
        while not self.stop_ingesting.is_set():
            with gate.batch():
                self._send_batch(rng, session, key, app, client, number)
            number += 1

    def _send_batch(self, rng: random.Random, session: requests.Session, key: str, app: str, client: int,
                    number: int) -> None:
        with self.first_day_settled:
            first_day = not self.first_day_done.is_set()
            self.first_day_pending += first_day
        self.next_number[(app, client)] = number + 1
        records, identities = make_batch(rng, app, client, number, self.day_one if first_day else self.day_two,
                                         snapshot=first_day)
        body = json.dumps({"records": records}).encode()
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                   "Idempotency-Key": str(uuid.uuid4())}
        first_sent = _now()
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
                acked = _now()
                answer = response.json()
                if answer["rejected"]:
                    raise RuntimeError(f"Collect refused chaos records: {answer['rejected'][:2]}")
                break
            time.sleep(min(2.0, float(response.headers.get("Retry-After", "0.5") or 0.5)) * rng.random())
        # The second day is not exported by tasks: it keeps ingestion running beside them, and the
        # pipelines deliver it.
        batch = Batch(app, f"{app}-c{client}-d{number}", user_of(app, client, number), first_sent, acked)
        self.ledger.note(batch, identities, self.day_one if first_day else self.day_two, exported=first_day)
        if first_day:
            with self.first_day_settled:
                self.first_day_pending -= 1
                self.first_day_settled.notify_all()

    # --- erasures -----------------------------------------------------------------------------------------

    def erase(self, until: float) -> None:
        """Asks for erasures until ``until``, every 2-6 s and at once after a kill (the killed host may have been
        erasing): two of three by deviceIds (1-3 devices whose batch was acknowledged), one by userIds (1-2
        users, some still sending)."""
        try:
            self._erase(until)
        except Exception as error:  # counted as an erasure that did not succeed, not lost in a dead thread
            log(f"the erasures stopped: {error!r}")
            self.erasure_failures.append(repr(error))

    def _erase(self, until: float) -> None:
        rng = self.erasure_rng
        while time.monotonic() < until:
            self.host_killed.wait(timeout=rng.uniform(2.0, 6.0))
            self.host_killed.clear()
            if time.monotonic() >= until:
                break
            app = rng.choice(sorted(self.keys))
            if rng.random() < 2 / 3:
                with self.ledger.lock:
                    devices = sorted({batch.device for batch in self.ledger.batches[app]})
                if devices:
                    self._ask_erasure(app, {"deviceIds": rng.sample(devices, min(len(devices), rng.randint(1, 3)))})
                continue
            clients = sorted({rng.randrange(self.clients) for _ in range(rng.randint(1, 2))})
            users = []
            for client in clients:  # the user now sending, or one of the few before
                newest = self.next_number[(app, client)] // USER_BATCHES
                users.append(user_of(app, client, USER_BATCHES * rng.randint(max(0, newest - 3), newest)))
            gates = [self.gates[(app, client)] for client in clients]
            with gates[0].paused(), (gates[1].paused() if len(gates) > 1 else _nothing()):
                self._ask_erasure(app, {"userIds": users})

    def _ask_erasure(self, app: str, body: dict[str, list[str]]) -> None:
        """Sends the request to a live host until it is answered 202 (through lost answers and 5xx: a try whose
        answer was lost may have made a task too, which must end as well)."""
        sent = _now()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                response = requests.post(f"{self.live_url()}{self._path(app)}/erasureTasks",
                                         params={"api-version": API_VERSION}, json=body, timeout=30,
                                         headers={"Authorization": f"Bearer {self._export_key(app)}"})
            except requests.RequestException:
                time.sleep(0.3)
                continue
            answered = _now()
            if response.status_code == 202:
                task = response.json()
                erasure = Erasure(app, task["id"], frozenset(body.get("deviceIds", ())),
                                  frozenset(body.get("userIds", ())), sent, answered)
                self.erasures.append(erasure)
                log(f"erasure {task['id']} of {app} asked: {body}")
                return
            if response.status_code < 500 and response.status_code != 429:
                raise RuntimeError(f"an erasure was refused: {response.status_code} {response.text[:300]}")
            time.sleep(0.3)
        raise RuntimeError(f"an erasure of {app} could not be asked in 120 s")

    def create_exports(self, *, after_erasures: bool = False) -> None:
        """The exports of the first day: every type and format for app0, two for each other app. After every
        erasure ended (``after_erasures``), the same types again in JsonBlob, of both days: they read the raw
        store as the erasures left it."""
        from shared.export import destination
        url = destination.container_sas_url(self.azurite.connection_string, "chaos-out", permission="rcwl",
                                            valid_for=dt.timedelta(hours=3))
        wanted: list[tuple[str, str, str]] = []
        for route in list(HISTORICAL_ROUTES) + list(SNAPSHOT_ROUTES):
            for export_format in FORMATS[:1] if after_erasures else FORMATS:
                wanted.append(("app0", route, export_format))
        for index in range(1, self.apps):
            wanted += [(f"app{index}", "events", "JsonBlob" if after_erasures else "CsvBlob"),
                       (f"app{index}", "tags", "JsonBlob" if after_erasures else "ParquetBlob")]
        last_day = self.day_two if after_erasures else self.day_one
        for app, route, export_format in wanted:
            body: dict[str, Any] = {"containerUrl": url, "exportFormat": export_format}
            if after_erasures:
                body["description"] = AFTER_ERASURES
            if route in HISTORICAL_ROUTES:
                body.update(startDate=self.day_one.isoformat(), endDate=last_day.isoformat())
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

    def _listed(self, app: str, resource: str) -> Iterator[dict]:
        """What the API lists of ``resource`` for ``app``, every page."""
        url: str | None = f"{self.live_url()}{self._path(app)}/{resource}?api-version={API_VERSION}"
        while url:
            page = self._get(url, app)
            yield from page["value"]
            url = page.get("nextLink")

    def all_jobs(self) -> dict[str, dict]:
        """Every job of every app, as the API lists them (a job whose creation answer was lost included)."""
        return {task["id"]: dict(task, app=app) for app in self.keys for task in self._listed(app, "exportTasks")}

    def all_erasures(self) -> dict[str, dict]:
        """Every erasure task of every app, as the API lists them (one whose answer was lost included)."""
        return {task["id"]: dict(task, app=app) for app in self.keys for task in self._listed(app, "erasureTasks")}

    def pipeline_runs(self, app: str, name: str) -> list[dict]:
        return list(self._listed(app, f"exportPipelines/{name}/runs"))

    def _get(self, url: str, app: str) -> dict:
        for _ in range(120):
            try:
                response = requests.get(url, timeout=30, headers={"Authorization": f"Bearer {self._export_key(app)}"})
                if response.status_code == 200:
                    return response.json()
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{url.partition('?')[0]} could not be read")

    def wait_for_jobs(self, timeout: float) -> dict[str, dict]:
        return _until_ended(self.all_jobs, timeout)

    def wait_for_erasures(self, timeout: float) -> dict[str, dict]:
        return _until_ended(self.all_erasures, timeout)


def _until_ended(listed: Callable[[], dict[str, dict]], timeout: float) -> dict[str, dict]:
    """``listed()`` once every task in it is Succeeded or Failed, or past ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = listed()
        if all(task["state"] in ENDED for task in tasks.values()) or time.monotonic() > deadline:
            return tasks
        time.sleep(1.0)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


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
    parser.add_argument("--keep", metavar="DIR", help="copy the run's folder (Azurite's data, the hosts' logs) to DIR "
                                                      "at the end, to look into a failure")
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ee-chaos-") as workdir:
        soak = Soak(arguments.seconds, arguments.apps, arguments.clients, arguments.busy, arguments.delayed,
                    workdir, arguments.seed)
        try:
            return run(soak)
        finally:
            soak.stop()
            if arguments.keep:
                shutil.copytree(workdir, arguments.keep, dirs_exist_ok=True)


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
    eraser = threading.Thread(target=soak.erase, args=(until,), daemon=True)
    eraser.start()
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
    eraser.join(180)
    for host in soak.hosts:
        if host.process is None or host.process.poll() is not None:
            host.start()
    last_acknowledged = dt.datetime.now(dt.UTC)
    log("chaos over; waiting for every pipeline's last late run and every job to end")
    pipelines = soak.wait_for_pipelines(last_acknowledged, timeout=max(240.0, soak.seconds))
    tasks = soak.wait_for_jobs(timeout=max(180.0, soak.seconds))
    erasures = soak.wait_for_erasures(timeout=max(240.0, soak.seconds))
    log("every erasure ended; exporting every type again, of both days")
    soak.create_exports(after_erasures=True)
    tasks = soak.wait_for_jobs(timeout=max(180.0, soak.seconds))
    return verify(soak, tasks, pipelines, erasures)


# A task's or run's dateCompleted is written when it ends, after its last read: an erasure asked this long after
# it cannot have taken rows out of it (the times have milliseconds; the margin is the clocks' rounding and more).
READ_BEFORE_MARGIN = dt.timedelta(seconds=1)


class Erased:
    """What the soak's erasures take out of the runs, and what it finds of it.

    A record an erasure covers (of its ids, acknowledged before it was asked) is in no export or pipeline run
    created after its 202 (``leaked`` counts those found there). A run that ran while it was asked may hold it or
    not. A run that ended before it was asked holds it as any other record: missing there it is lost. Records of
    its ids acknowledged after its 202 are new data, expected as any other."""

    def __init__(self, soak: Soak) -> None:
        self.soak = soak
        self.leaked = 0
        self.taken_out = 0  # covered records missing from a run that may have left them out

    def covering(self, app: str, export_type: str, identity: object) -> list[Erasure]:
        batch = self.soak.ledger.batch_of.get((app, export_type, identity))
        if batch is None:
            return []
        return [erasure for erasure in self.soak.erasures if erasure.covers(batch, export_type)]

    def explain(self, app: str, export_type: str, identity: object) -> str:
        """A missing record's batch and the erasures that name its ids, for the log."""
        batch = self.soak.ledger.batch_of.get((app, export_type, identity))
        if batch is None:
            return f"{identity!r} (no batch)"
        naming = [f"{e.task_id[:8]} sent {_iso(e.sent)} answered {_iso(e.answered)}" for e in self.soak.erasures
                  if e.names(batch, export_type)]
        return (f"{identity!r} of {batch.device}/{batch.user} sent {_iso(batch.first_sent)} acked {_iso(batch.acked)}"
                f"; erasures naming it: {naming}")

    def leak(self, what: str, identity: object, erasures: list[Erasure]) -> None:
        self.leaked += 1
        log(f"LEAK: {what} holds {identity!r}, erased by {[e.task_id for e in erasures]} asked before it started")


def _time(text: str | None) -> dt.datetime:
    from shared.platform.times import parse_iso
    moment = parse_iso(text)
    assert moment is not None
    return moment


def check_export(task: dict, identities: Counter, expected: Counter, erased: Erased) -> tuple[int, int, int]:
    """Lost, doubled and unexpected identities of a Succeeded export task (leaks are counted by ``erased``)."""
    app, export_type = task["app"], str(task["exportType"])
    created, completed = _time(task["dateCreated"]), _time(task["dateCompleted"])
    lost = doubled = unexpected = 0
    for identity in set(expected) | set(identities):
        present = identities[identity]
        doubled += max(0, present - 1)
        if identity not in expected:
            unexpected += 1
            continue
        erasures = erased.covering(app, export_type, identity)
        if any(erasure.answered < created for erasure in erasures):
            if present:
                erased.leak(f"export {task['id']} ({export_type}, created {task['dateCreated']})", identity, erasures)
            else:
                erased.taken_out += 1
        elif not present:
            if any(erasure.sent < completed + READ_BEFORE_MARGIN for erasure in erasures):
                erased.taken_out += 1
            else:
                lost += 1
                if lost <= 3:
                    log(f"export {task['id']} ({export_type}) lacks {erased.explain(app, export_type, identity)}")
    return lost, doubled, unexpected


def verify_pipelines(soak: Soak, pipelines: dict[str, dict], tasks: dict[str, dict],
                     erased: Erased) -> tuple[int, int, int, int]:
    """Lost, doubled and unexpected records of the pipelines' files against every acknowledged record, and their
    files that no Succeeded run lists; leaks (a record found in a run created after an erasure that covers it)
    are counted by ``erased``."""
    from azure.storage.blob import BlobServiceClient
    container = BlobServiceClient.from_connection_string(soak.azurite.connection_string).get_container_client(
        "chaos-pipes")
    lost = doubled = unexpected = unlisted = 0
    for app, shown in pipelines.items():
        name, export_type, *_ = PIPELINES[app]
        writer = {entry["name"]: task for task in tasks.values()
                  if task["app"] == app and task.get("pipeline", {}).get("name") == name
                  and task["state"] == "Succeeded" for entry in task.get("files", ())}
        # The first run of each day: it reads every record acknowledged before it was planned.
        first_runs = {day: run for run in soak.pipeline_runs(app, name)
                      if run["delivery"] == "first" and run["state"] == "Succeeded" for day in run["periods"]}
        delivered: dict[tuple[str, object], list[dict]] = defaultdict(list)
        for blob in container.list_blobs(name_starts_with=f"{name}/"):
            folder = blob.name[len(name) + 1:].split("/")[0]
            if folder.startswith("_"):
                continue
            task = writer.get(blob.name)
            if task is None:
                log(f"pipeline file {blob.name} is listed by no Succeeded run")
                unlisted += 1
            for row in _rows(blob.name, container.download_blob(blob.name).readall()):
                delivered[(folder.removeprefix("date="), _identity(export_type, row))].append(task or {})
        expected = soak.ledger.by_day[(app, export_type)]
        pipe_lost = pipe_doubled = pipe_unexpected = 0
        for key in set(expected) | set(delivered):
            day, identity = key
            runs = delivered.get(key, [])
            pipe_doubled += max(0, len(runs) - 1)
            if key not in expected:
                pipe_unexpected += 1
                continue
            erasures = erased.covering(app, export_type, identity)
            if erasures:
                answered = min(erasure.answered for erasure in erasures)
                for run in runs:
                    if not run or _time(run["dateCreated"]) > answered:
                        erased.leak(f"pipeline {name} run {run.get('id')} (created {run.get('dateCreated')})",
                                    identity, erasures)
            if runs:
                continue
            first = first_runs.get(day)
            batch = soak.ledger.batch_of[(app, export_type, identity)]
            if erasures and not (first is not None and _time(first["datePlanned"]) > batch.acked
                                 and _time(first["dateCompleted"]) + READ_BEFORE_MARGIN
                                 < min(erasure.sent for erasure in erasures)):
                erased.taken_out += 1
            else:
                pipe_lost += 1
                if pipe_lost <= 3:
                    log(f"pipeline {name} lacks {day} {erased.explain(app, export_type, identity)}")
        log(f"pipeline {name} of {app} ({shown['state']}, late records checked at {shown.get('lateCheckedAt')}): "
            f"{sum(len(runs) for runs in delivered.values())} rows delivered of {sum(expected.values())} "
            f"acknowledged; lost {pipe_lost}, doubled {pipe_doubled}, unexpected {pipe_unexpected}")
        lost, doubled, unexpected = lost + pipe_lost, doubled + pipe_doubled, unexpected + pipe_unexpected
    return lost, doubled, unexpected, unlisted


def verify(soak: Soak, tasks: dict[str, dict], pipelines: dict[str, dict], erasure_tasks: dict[str, dict]) -> int:
    from azure.storage.blob import BlobServiceClient
    container = BlobServiceClient.from_connection_string(soak.azurite.connection_string).get_container_client(
        "chaos-out")
    erased = Erased(soak)
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
        exported += sum(identities.values())
        strays += len(stray_names)
        expected = soak.ledger.acked[(task["app"], export_type)]
        if task.get("description") == AFTER_ERASURES and export_type in HISTORICAL_ROUTES.values():
            expected = Counter(identity for (_, identity) in soak.ledger.by_day[(task["app"], export_type)].elements())
        job_lost, job_doubled, job_unexpected = check_export(task, identities, expected, erased)
        if job_lost or job_doubled or job_unexpected or stray_names:
            log(f"job {task['id']} {export_type} {task.get('exportFormat')}: lost {job_lost}, doubled {job_doubled}, "
                f"unexpected {job_unexpected}, files not in its manifest {stray_names[:3]}")
        lost += job_lost
        doubled += job_doubled
        unexpected += job_unexpected
    pipe_lost, pipe_doubled, pipe_unexpected, unlisted = verify_pipelines(soak, pipelines, tasks, erased)
    lost, doubled, unexpected = lost + pipe_lost, doubled + pipe_doubled, unexpected + pipe_unexpected
    strays += unlisted
    unexplained = _unexplained_poison(soak, failed_ids)
    unended = _erasures_unended(soak, erasure_tasks)
    erasure_states = Counter(task["state"] for task in erasure_tasks.values())
    removed: Counter = Counter()
    for task in erasure_tasks.values():
        removed.update(task.get("erased", {}))
    print(f"kills: {soak.kills} (and Azurite restarted once)")
    print("storage requests through the proxies: " + ", ".join(
        f"{service} {dict(proxy.counts)}" for service, proxy in soak.proxies.items()))
    print(f"collect answers: {dict(soak.ledger.requests)}")
    print(f"records acked: {soak.ledger.records}; jobs: {dict(states)}; rows exported: {exported}")
    print(f"erasures asked: {len(soak.erasures)} ({sum(1 for e in soak.erasures if e.user_ids)} by userIds); "
          f"tasks: {dict(erasure_states)}; erased: {dict(removed)}; erased records left out of runs: "
          f"{erased.taken_out}")
    print(f"erasure tasks: {len(erasure_tasks)}, succeeded {erasure_states['Succeeded']}")
    print(f"lost: {lost}; doubled: {doubled}; unexpected rows: {unexpected}; files outside manifests: {strays}; "
          f"unexplained poison messages: {unexplained}; erased records in later runs: {erased.leaked}")
    print(f"chaos: kills={soak.kills} jobs={len(tasks)} pipelines={len(pipelines)} lost={lost} doubled={doubled} "
          f"erasures={len(soak.erasures)} leaked={erased.leaked}")
    return 1 if (lost or doubled or unexpected or strays or unexplained or erased.leaked or unended) else 0


def _erasures_unended(soak: Soak, erasure_tasks: dict[str, dict]) -> int:
    """Erasure tasks that did not succeed, or that the soak was answered for and the API does not list."""
    unended = len(soak.erasure_failures)
    for erasure in soak.erasures:
        if erasure.task_id not in erasure_tasks:
            log(f"erasure {erasure.task_id} of {erasure.app} is not listed")
            unended += 1
    for task in erasure_tasks.values():
        if task["state"] != "Succeeded":
            log(f"erasure {task['id']} of {task['app']} is {task['state']}: {task.get('errorDetails')}")
            unended += 1
    return unended


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
