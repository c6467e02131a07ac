"""Erasure and pipelines: a rewritten raw blob keeps every pipeline's marks true (no late run delivers a record
twice or skips one because a blob was rewritten), runs that start after the request hold no erased record, the
task lists the runs that delivered the ids before, and an erasure.completed event goes out. Then the whole race:
Collect appending to the same partitions, a pipeline run reading them and a worker killed mid-rewrite."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from collections import Counter

import pytest
from azure.storage.queue import QueueClient
from erasing import crank_erasures, erasure_api, everything_stored
from pipelining import PipelineApp, event

from shared.erasure import rewrite, service
from shared.platform import config
from shared.platform.config import get_settings

UTC = dt.UTC


@pytest.fixture
def lake(app_env, names):
    return PipelineApp(app_env, names)


def _day(moment: dt.datetime) -> dt.datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _erase(lake: PipelineApp, body: dict) -> dict:
    status, task, _ = erasure_api(lake.collection, lake.name, lake.keys.export_key, "POST", body=body)
    assert status == 202, task
    return task


def _events(azurite, queue_name: str) -> list[dict]:
    client = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    return [json.loads(base64.b64decode(message.content)) for message in client.peek_messages(max_messages=32)]


@pytest.mark.parametrize("export_format,layout", [("JsonBlob", "flat"), ("ParquetBlob", "hive")])
def test_a_late_run_after_a_rewrite_delivers_each_kept_record_once_and_no_erased_one(
        lake, app_env, names, settings_override, export_format, layout):
    events_queue = names.queue("events")
    settings_override(**{config.FORWARD_DEFAULT_QUEUE: events_queue})
    now = dt.datetime.now(UTC)
    days = [_day(now) - dt.timedelta(days=n) for n in (2, 1)]
    folder = (lambda d: f"date={d:%Y-%m-%d}") if layout == "hive" else (lambda d: f"{d:%Y-%m-%d}")
    sent: Counter = Counter()
    gone, kept = f"gone-{names.token}", f"keep-{names.token}"

    def send(tag: str, device: str, moments: list[dt.datetime]) -> None:
        records = [event(f"{tag}-{device}-{i}", moment, device) for i, moment in enumerate(moments)]
        lake.send(records)
        for record, moment in zip(records, moments):
            sent[(folder(_day(moment)), record["name"])] += 1

    for device in (gone, kept):
        send("on-time", device, [day + dt.timedelta(hours=h, minutes=7) for day in days for h in (1, 9)])
    status, body = lake.api("PUT", "daily", {
        "route": "events", "exportFormat": export_format, "layout": layout, "cadence": "daily",
        "settleMinutes": 0, "lateDeliveryMinutes": 1, "startFrom": f"{days[0]:%Y-%m-%d}",
        "containerUrl": lake.container_url()})
    assert status == 201, body
    lake.run_pipelines(now)
    assert lake.delivered("daily") == sent  # the first run delivered the erased device's records too
    first_runs = {m["pipeline"]["run"] for m in lake.manifests("daily")}

    # Late records of both devices grow the blobs past the pipeline's marks; then the erasure is asked.
    send("late1", kept, [days[0] + dt.timedelta(hours=1, minutes=30)])
    late_gone = [event(f"late1-{gone}-{i}", days[0] + dt.timedelta(hours=1, minutes=40 + i), gone) for i in range(2)]
    lake.send(late_gone)
    task = _erase(lake, {"deviceIds": [gone]})
    crank_erasures(lake.app.id, task["id"])
    # After the request: a late record of the kept device, and new data of the erased one, both delivered.
    send("late2", kept, [days[0] + dt.timedelta(hours=1, minutes=50)])
    send("after", gone, [days[1] + dt.timedelta(hours=1, minutes=55)])

    lake.run_pipelines(now + dt.timedelta(minutes=2))
    assert lake.delivered("daily") == sent, "every kept record once, no erased one, none twice"
    late_manifests = [m for m in lake.manifests("daily") if m["pipeline"]["late"]]
    assert late_manifests

    status, done, _ = erasure_api(lake.collection, lake.name, lake.keys.export_key, "GET", task["id"])
    assert done["state"] == "Succeeded" and done["erased"]["rawRecords"] == 4 + 2
    assert {run["run"] for run in done["deliveredBy"]["pipelineRuns"]} == first_runs
    assert all(run["pipeline"] == "daily" and run["exportFormat"] == export_format
               for run in done["deliveredBy"]["pipelineRuns"])
    assert done["deliveredBy"]["exportTasks"] == []
    (completed,) = [e for e in _events(app_env, events_queue) if e.get("event") == "erasure.completed"]
    assert completed["erasureTaskId"] == task["id"] and completed["state"] == "Succeeded"
    assert completed["deliveredBy"] == done["deliveredBy"]
    assert gone not in json.dumps(completed) and gone not in json.dumps(done)


def test_an_erasure_racing_collect_and_a_pipeline_run_with_a_worker_killed_loses_and_doubles_nothing(
        lake, app_env, names, monkeypatch):
    now = dt.datetime.now(UTC)
    day = _day(now) - dt.timedelta(days=1)
    gone = [f"gone{n}-{names.token}" for n in range(3)]
    kept = [f"keep{n}-{names.token}" for n in range(3)]
    sent: list[tuple[dict, float, float]] = []  # (record, sent at, acknowledged at), time.monotonic()
    counter = iter(range(10**6))

    def batch() -> list[dict]:
        # Every batch lands in the same few hour partitions: the blobs the erasure rewrites.
        return [event(f"r{next(counter)}", day + dt.timedelta(hours=h % 3 + 1, minutes=h), device)
                for h, device in enumerate(gone + kept)]

    lake.send(batch())
    status, body = lake.api("PUT", "hourly", {
        "route": "events", "exportFormat": "JsonBlob", "cadence": "daily", "settleMinutes": 0,
        "lateDeliveryMinutes": 1, "startFrom": f"{day:%Y-%m-%d}", "containerUrl": lake.container_url()})
    assert status == 201, body
    first = batch()
    lake.send(first)
    sent += [(record, 0.0, 0.0) for record in first]
    lake.run_pipelines(now)

    stop = threading.Event()
    failures: list[BaseException] = []

    def collect() -> None:
        try:
            while not stop.is_set():
                records, started = batch(), time.monotonic()
                lake.send(records)
                sent.extend((record, started, time.monotonic()) for record in records)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            failures.append(error)

    def pipeline() -> None:
        try:
            for minute in range(1, 4):
                lake.run_pipelines(now + dt.timedelta(minutes=2 * minute))
        except BaseException as error:  # noqa: BLE001
            failures.append(error)

    writers = [threading.Thread(target=collect) for _ in range(2)]
    for thread in writers:
        thread.start()
    time.sleep(1.0)
    asked_from = time.monotonic()
    task = _erase(lake, {"deviceIds": gone})
    asked_at = time.monotonic()
    reader = threading.Thread(target=pipeline)
    reader.start()

    # A worker dies mid-rewrite, after its temporary blob and before the copy; the next one finishes the task.
    # (A lease a killed worker leaves until it runs out: tests/test_erasure.py.)
    monkeypatch.setattr(service, "ERASE_IN_PROCESS", True)  # the rewrite's code is changed in this process
    real_replace = rewrite._replace
    kills = [1]

    class Killed(BaseException):
        pass

    def replace_or_die(client, temporary, properties, lease, renew):
        if kills:
            kills.pop()
            raise Killed()
        real_replace(client, temporary, properties, lease, renew)

    monkeypatch.setattr(rewrite, "_replace", replace_or_die)
    with pytest.raises(Killed):
        service.work(service.EraseMessage(lake.app.id, task["id"]))
    crank_erasures(lake.app.id, task["id"], redeliver_failures=True, timeout=240)
    time.sleep(1.0)
    stop.set()
    for thread in [*writers, reader]:
        thread.join()
    assert not failures, failures
    lake.run_pipelines(now + dt.timedelta(minutes=20))

    delivered: Counter = lake.delivered("hourly")
    by_name = Counter({name: count for (_, name), count in delivered.items()})
    runs_after = [m for m in lake.manifests("hourly") if m["pipeline"]["run"] not in
                  {r["run"] for r in erasure_api(lake.collection, lake.name, lake.keys.export_key, "GET",
                                                 task["id"])[1]["deliveredBy"]["pipelineRuns"]}]
    assert runs_after, "runs started after the request"
    for record, started, acknowledged in sent:
        count = by_name[record["name"]]
        if record["deviceId"] in kept:
            assert count == 1, record
        elif acknowledged and acknowledged < asked_from:
            # acknowledged before the request: delivered only by a run that read before it (listed by the task)
            assert count <= 1, record
        elif started > asked_at:
            assert count == 1, ("new data after the request", record)
        else:
            assert count <= 1, record
    # The app's own storage holds no erased record acknowledged before the request.
    stored = everything_stored(get_settings().storage.connection_string, skip_containers=(lake.container,))
    before = [r for r, _, acknowledged in sent if r["deviceId"] in gone and acknowledged < asked_from]
    assert before and not [r for r in before if f'"name":"{r["name"]}"'.encode() in stored]
    done = service.get_erasure(lake.app, task["id"])
    assert done.state == "Succeeded" and done.counts["rawRecords"] >= len(before)
