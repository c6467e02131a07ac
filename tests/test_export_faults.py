"""Faults in a job's life, driven through the function entry points with func.QueueMessage: a worker that
dies half-way, duplicate deliveries, racing monitors and starters, an expired SAS, a deleted container, a
part that always fails. Each ends in the right state and, when Succeeded, an exact file."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import json
import os
import threading
import time

import expected
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient
from helpers import container_sas_url

import ExportWorker
import PollExport
import StartExport
from sampledata import Plan, load, records
from shared.api.errors import status_of
from shared.export import engine, exportformats, planning
from shared.export.export_request import parse_request
from shared.export.registry import ROUTES
from shared.platform import apps, storage
from shared.platform.errors import UnusableDestination
from shared.tasks import jobs, orchestration, parts
from shared.tasks.service import submit_export

DAY = dt.date(2026, 5, 4)
PLAN = Plan(devices=30, days=1, last_day=DAY, seed=11)


class Driver:
    """One app with data, a destination, and hand-cranked queues."""

    def __init__(self, azurite, names):
        self.azurite = azurite
        self.collection = f"f{names.token}"
        apps.register_app(self.collection, "app")
        self.app = apps.AppRef(self.collection, "app")
        load(self.app.id, PLAN)
        self.container = names.container("out")
        self.queues = {name: QueueClient.from_connection_string(azurite.connection_string, name)
                       for name in (orchestration.POLL_QUEUE, orchestration.WORK_QUEUE)}
        for queue in self.queues.values():
            try:
                queue.create_queue()
            except ResourceExistsError:
                queue.clear_messages()

    def create(self, export_format="CsvBlob", *, expiry=None, route="events", through=None):
        """A job of the app to the driver's container, reached directly or ``through`` another base URL."""
        url = container_sas_url(self.azurite, self.container, expiry=expiry,
                                create=not self.container_exists())
        if through is not None:
            url = through + "/" + url.split("/", 3)[3]
        body = {"containerUrl": url, "exportFormat": export_format}
        if ROUTES[route].kind == "historical":
            body.update(startDate=DAY.isoformat(), endDate=DAY.isoformat())
        return submit_export(self.app, parse_request(ROUTES[route], body, max_range_days=366, today=DAY))

    def container_exists(self):
        return BlobServiceClient.from_connection_string(self.azurite.connection_string).get_container_client(
            self.container).exists()

    def take(self, queue_name, *, wait=True):
        """Receives the visible messages of a queue as func.QueueMessage objects (with their raw receipts)."""
        queue = self.queues[queue_name]
        deadline = time.monotonic() + (5 if wait else 0)
        while True:
            received = list(queue.receive_messages(max_messages=32, visibility_timeout=60))
            if received or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        # All of them, not the first 32: the session's queues may hold other tests' messages (restarted jobs).
        while more := list(queue.receive_messages(max_messages=32, visibility_timeout=60)):
            received += more
        return [(QueueMessage(id=m.id, body=base64.b64decode(m.content), dequeue_count=m.dequeue_count), m)
                for m in received]

    def deliver(self, queue_name, function, pair):
        message, raw = pair
        function(message)
        self.queues[queue_name].delete_message(raw)

    def run_work_only(self):
        """Delivers the work items waiting now, and not the monitor's messages."""
        for pair in self.take(orchestration.WORK_QUEUE):
            self.deliver(orchestration.WORK_QUEUE, ExportWorker.main, pair)

    def run(self, job, *, max_rounds=60):
        """Cranks both queues until the job is finished."""
        for _ in range(max_rounds):
            for pair in self.take(orchestration.WORK_QUEUE, wait=False):
                self.deliver(orchestration.WORK_QUEUE, ExportWorker.main, pair)
            for pair in self.take(orchestration.POLL_QUEUE, wait=False):
                self.deliver(orchestration.POLL_QUEUE, PollExport.main, pair)
            current = jobs.get_job(job.app_id, job.id)
            if current.finished:
                return current
            time.sleep(0.3)
        raise AssertionError("the job did not finish")

    def blobs(self):
        container = BlobServiceClient.from_connection_string(self.azurite.connection_string).get_container_client(
            self.container)
        return {blob.name: container.download_blob(blob.name).readall() for blob in container.list_blobs()}

    def csv_rows(self, job):
        import csv
        import io
        files = {name: data for name, data in self.blobs().items()
                 if name.startswith(f"{job.export_type}/{job.id}/") and name.endswith(".csv.gz")}
        rows = []
        for name in sorted(files):
            rows += list(csv.DictReader(io.StringIO(gzip.decompress(files[name]).decode(), newline="")))
        return rows


@pytest.fixture
def driver(app_env, names):
    return Driver(app_env, names)


def expected_events():
    return expected.canonical(expected.parse_nested(expected.as_csv_rows(
        expected.historical(list(records(PLAN)), "event", DAY, DAY), "Event")))


def assert_exact(driver, job):
    assert job.state == jobs.SUCCEEDED, job.error_details
    assert expected.canonical(expected.parse_nested(driver.csv_rows(job))) == expected_events()
    manifest = json.loads(driver.blobs()[f"Event/{job.id}/manifest.json"])
    assert manifest["recordCount"] == job.record_count == len(expected_events())


def test_a_worker_killed_after_staging_half_its_blocks_is_redelivered_and_the_file_is_exact(driver, monkeypatch):
    monkeypatch.setattr(exportformats, "BLOCK_BYTES", 512)  # several blocks per part
    job = driver.create()
    driver.deliver(orchestration.POLL_QUEUE, PollExport.main, driver.take(orchestration.POLL_QUEUE)[0])
    (work,) = driver.take(orchestration.WORK_QUEUE)
    staged, attempts, lock = [], [], threading.Lock()
    real_stage = engine.stage_to

    def dying_stage(job_, item, still_running):
        stage = real_stage(job_, item, still_running)

        def stage_some(identifier, data):
            with lock:
                attempts.append(identifier)
                dead = len(attempts) > 2
            if dead:
                raise SystemExit("worker killed")  # the process dies: no part row, no cleanup
            stage(identifier, data)
            staged.append(identifier)
        return stage_some

    monkeypatch.setattr(engine, "stage_to", dying_stage)
    with pytest.raises(SystemExit):
        ExportWorker.main(work[0])
    assert len(staged) == 2, "two blocks were staged before the worker died"
    assert parts.list_parts(job.id) == []
    assert not any(name.endswith(".csv.gz") for name in driver.blobs()), "no partial file may be visible"
    monkeypatch.setattr(engine, "stage_to", real_stage)
    redelivered = QueueMessage(id=work[0].id, body=work[0].get_body(), dequeue_count=2)
    ExportWorker.main(redelivered)
    driver.queues[orchestration.WORK_QUEUE].delete_message(work[1])
    assert_exact(driver, driver.run(job))


def test_the_same_work_item_delivered_twice_gives_one_exact_file(driver):
    job = driver.create()
    driver.deliver(orchestration.POLL_QUEUE, PollExport.main, driver.take(orchestration.POLL_QUEUE)[0])
    (work,) = driver.take(orchestration.WORK_QUEUE)
    ExportWorker.main(work[0])
    ExportWorker.main(QueueMessage(id=work[0].id, body=work[0].get_body(), dequeue_count=2))
    driver.queues[orchestration.WORK_QUEUE].delete_message(work[1])
    assert_exact(driver, driver.run(job))


def test_two_poll_messages_for_one_job_at_once_finish_it_once(driver):
    job = driver.create()
    driver.deliver(orchestration.POLL_QUEUE, PollExport.main, driver.take(orchestration.POLL_QUEUE)[0])
    for pair in driver.take(orchestration.WORK_QUEUE):
        driver.deliver(orchestration.WORK_QUEUE, ExportWorker.main, pair)
    message = QueueMessage(id="dup", body=orchestration.PollMessage(job.app_id, job.id).to_json().encode(),
                           dequeue_count=1)
    errors = []

    def poll():
        try:
            PollExport.main(message)
        except Exception as error:  # a failed monitor must show up in the assertion below
            errors.append(error)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    final = jobs.get_job(job.app_id, job.id)
    assert_exact(driver, final)
    assert sorted(driver.blobs()) == [f"Event/{job.id}/manifest.json", f"Event/{job.id}/part-00000.csv.gz",
                                      f"Event/{job.id}/schema.json"]


def test_start_export_racing_the_api_start_changes_nothing(driver):
    job = driver.create()
    # the timer fires while the API's start message is still waiting: both start the job
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    restarted = orchestration.restart_stranded_jobs(later)
    assert restarted >= 1
    StartExport.main(TimerRequest(past_due=False))
    starts = driver.take(orchestration.POLL_QUEUE)
    assert len([m for m, _ in starts if json.loads(m.get_body())["job"] == job.id]) >= 2
    threads = [threading.Thread(target=driver.deliver, args=(orchestration.POLL_QUEUE, PollExport.main, pair))
               for pair in starts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = driver.run(job)
    assert final.parts_total == 1
    assert_exact(driver, final)
    assert list(jobs.queued_jobs(later)) == [] or all(j != job.id for _, j in jobs.queued_jobs(later))


def test_an_expired_sas_fails_the_job_with_the_time_and_no_file(driver, settings_override):
    settings_override(EXPORT_SAS_EXPIRY_MARGIN_MINUTES=0)  # a SAS this short is refused at creation otherwise
    job = driver.create(expiry=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3))
    time.sleep(3.5)
    final = driver.run(job)
    assert final.state == jobs.FAILED
    assert final.error_details.startswith("the SAS token of the destination container expired at ")
    assert jobs.iso(job.sas_expires) in final.error_details
    assert "sig=" not in final.error_details
    assert driver.blobs() == {}


def test_a_sas_expiring_while_a_part_runs_fails_the_part_and_the_job(driver, settings_override):
    settings_override(EXPORT_SAS_EXPIRY_MARGIN_MINUTES=0)
    job = driver.create(expiry=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4))
    driver.deliver(orchestration.POLL_QUEUE, PollExport.main, driver.take(orchestration.POLL_QUEUE)[0])
    time.sleep(max(0.0, (job.sas_expires - dt.datetime.now(dt.UTC)).total_seconds()) + 0.5)
    for pair in driver.take(orchestration.WORK_QUEUE):
        driver.deliver(orchestration.WORK_QUEUE, ExportWorker.main, pair)  # Azurite now refuses the SAS
    (part,) = parts.list_parts(job.id)
    assert part.state is parts.PartState.FAILED
    assert part.reason.startswith("the SAS token of the destination container expired at ")
    final = driver.run(job)
    assert final.state == jobs.FAILED and "expired" in final.error_details
    assert not any(name.endswith(".csv.gz") for name in driver.blobs())


@pytest.mark.parametrize("margin, valid_for, refused", [(None, dt.timedelta(minutes=59), True),
                                                       (None, dt.timedelta(minutes=61), False),
                                                       (5, dt.timedelta(minutes=4), True),
                                                       (5, dt.timedelta(minutes=6), False)])
def test_a_sas_expiring_within_the_margin_is_refused_at_creation_with_its_expiry(driver, settings_override, margin,
                                                                                 valid_for, refused):
    if margin is not None:
        settings_override(EXPORT_SAS_EXPIRY_MARGIN_MINUTES=margin)
    expiry = (dt.datetime.now(dt.UTC) + valid_for).replace(microsecond=0)
    if not refused:
        assert driver.create(expiry=expiry).state == jobs.QUEUED
        return
    with pytest.raises(UnusableDestination) as refusal:
        driver.create(expiry=expiry)
    message = refusal.value.message
    assert status_of(refusal.value) == 400 and message.startswith("containerUrl has a SAS that expires at ")
    assert expiry.isoformat().replace("+00:00", "Z") in message and f"less than {margin or 60} minutes" in message
    assert driver.blobs() == {}


def test_a_deleted_container_fails_the_job_saying_so(driver):
    job = driver.create()
    BlobServiceClient.from_connection_string(driver.azurite.connection_string).delete_container(driver.container)
    final = driver.run(job)
    assert final.state == jobs.FAILED
    assert final.error_details == (f"the destination container {job.container_url} does not exist (was it deleted?); "
                                   f"create it and export again")


def test_a_part_failing_max_dequeue_count_times_fails_the_job(driver, monkeypatch):
    job = driver.create()
    driver.deliver(orchestration.POLL_QUEUE, PollExport.main, driver.take(orchestration.POLL_QUEUE)[0])
    (work,) = driver.take(orchestration.WORK_QUEUE)

    def broken(job_, item, stage):
        raise ConnectionError("storage kept timing out")

    monkeypatch.setattr(engine, "produce", broken)
    for attempt in range(1, orchestration.MAX_DEQUEUE_COUNT + 1):
        with pytest.raises(ConnectionError):
            ExportWorker.main(QueueMessage(id=work[0].id, body=work[0].get_body(), dequeue_count=attempt))
        failed = [p for p in parts.list_parts(job.id) if p.state is parts.PartState.FAILED]
        assert bool(failed) == (attempt == orchestration.MAX_DEQUEUE_COUNT)
    driver.queues[orchestration.WORK_QUEUE].delete_message(work[1])
    final = driver.run(job)
    assert final.state == jobs.FAILED
    assert final.error_details == ("part 0 failed on every try (ConnectionError); the export service could not "
                                   "read the data or write the file")
    assert driver.blobs() == {}


def test_an_empty_range_succeeds_with_an_empty_file_and_a_zero_manifest(driver):
    job = driver.create("JsonBlob", route="crashes")
    job_empty = submit_export(driver.app, parse_request(ROUTES["errors"], {
        "containerUrl": container_sas_url(driver.azurite, driver.container, create=False),
        "startDate": "2020-01-01", "endDate": "2020-01-02"}, max_range_days=366, today=DAY))
    driver.run(job)
    final = driver.run(job_empty)
    assert final.state == jobs.SUCCEEDED and final.record_count == 0
    blobs = driver.blobs()
    assert gzip.decompress(blobs[f"Error/{job_empty.id}/part-00000.jsonl.gz"]) == b""
    manifest = json.loads(blobs[f"Error/{job_empty.id}/manifest.json"])
    assert manifest["recordCount"] == 0 and manifest["files"][0]["records"] == 0


def test_max_dequeue_count_matches_host_json():
    from conftest import REPO_ROOT

    from devhost.appmodel import load_host_config
    assert load_host_config(REPO_ROOT).queues.max_dequeue_count == orchestration.MAX_DEQUEUE_COUNT


def test_a_job_keeps_at_most_its_window_of_items_on_the_work_queue(driver, settings_override):
    settings_override(EXPORT_PART_MAX_BYTES="1", EXPORT_JOB_ITEMS_IN_FLIGHT="2")
    job = driver.create("JsonBlob")
    driver.deliver(orchestration.POLL_QUEUE, PollExport.main, driver.take(orchestration.POLL_QUEUE)[0])
    total = len(planning.read_plan(job.app_id, job.id))
    assert total > 3
    def item(pair):
        return json.loads(pair[0].get_body())["item"]

    held = driver.take(orchestration.WORK_QUEUE)
    assert sorted(map(item, held)) == [0, 1]
    delivered = []
    while held:
        first = min(held, key=item)
        held.remove(first)
        driver.deliver(orchestration.WORK_QUEUE, ExportWorker.main, first)
        delivered.append(item(first))
        held += driver.take(orchestration.WORK_QUEUE, wait=False)  # what the delivered item sent
        assert len(held) <= 2
    assert delivered == list(range(total))  # each item went out once, two at a time
    final = driver.run(job)
    assert final.state == jobs.SUCCEEDED and final.record_count == len(expected_events())


def test_files_split_into_parts_past_the_size_cap_keep_every_record_once(driver, settings_override):
    settings_override(EXPORT_PART_MAX_BYTES="1")  # every raw blob starts a new part
    job = driver.create()
    final = driver.run(job)
    assert final.parts_total > 1
    names = sorted(name for name in driver.blobs() if name.endswith(".csv.gz"))
    assert names == [f"Event/{job.id}/part-{i:05d}.csv.gz" for i in range(final.parts_total)]
    manifest = json.loads(driver.blobs()[f"Event/{job.id}/manifest.json"])
    assert [f["name"] for f in manifest["files"]] == names
    assert_exact(driver, final)


@pytest.mark.parametrize("function", [PollExport.main, ExportWorker.main])
@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"app": "a"}'])
def test_a_malformed_message_is_refused_so_it_ends_in_the_poison_queue(function, body):
    with pytest.raises(ValueError, match="not a (poll|work) message"):
        function(QueueMessage(id="m", body=body, dequeue_count=1))


@pytest.mark.parametrize("export_format", ["CsvBlob", "JsonBlob"])
def test_a_redelivered_item_reads_what_its_plan_saw_even_while_the_raw_blob_grows(driver, export_format):
    job = driver.create(export_format)
    driver.deliver(orchestration.POLL_QUEUE, PollExport.main, driver.take(orchestration.POLL_QUEUE)[0])
    (work,) = driver.take(orchestration.WORK_QUEUE)
    ExportWorker.main(work[0])
    (first,) = parts.list_parts(job.id)
    # a late record lands in an hour blob the plan listed (this process's writer appends to it)
    from shared.ingest import rawstore
    late = {"type": "event", "deviceId": "late", "name": "late", "timestamp": f"{DAY.isoformat()}T05:00:00.000Z"}
    rawstore.writer().append_records(job.app_id, [late])
    storage_parts = storage.table(parts.PARTS_TABLE)
    storage_parts.delete_entity(job.id, f"{first.index:06d}")  # as if the first run died before its part row
    ExportWorker.main(QueueMessage(id=work[0].id, body=work[0].get_body(), dequeue_count=2))
    driver.queues[orchestration.WORK_QUEUE].delete_message(work[1])
    (second,) = parts.list_parts(job.id)
    assert (second.records, second.md5, second.blocks) == (first.records, first.md5, first.blocks)
    final = driver.run(job)
    assert final.state == jobs.SUCCEEDED and final.record_count == len(expected_events())


def _conversion_processes():
    import psutil
    # Spawned children at the normal priority: an erasure's rewriting processes (kept a while after an erasure
    # test of the same session) run at a lower one.
    return [child for child in psutil.Process().children()
            if any("spawn_main" in part for part in child.cmdline()) and child.nice() == os.nice(0)]


def test_a_conversion_process_killed_mid_part_fails_the_try_and_the_retry_is_exact(driver, settings_override,
                                                                                   monkeypatch):
    from shared.export import convert, sources
    settings_override(EXPORT_CONVERT_PROCESSES="2")
    monkeypatch.setattr(sources, "ROW_TEXT_BYTES", 2048)  # many runs of rows per part
    job = driver.create()
    driver.deliver(orchestration.POLL_QUEUE, PollExport.main, driver.take(orchestration.POLL_QUEUE)[0])
    (work,) = driver.take(orchestration.WORK_QUEUE)
    real_line_text = sources.line_text
    killed = []

    def line_text_then_kill(blobs):
        for index, text in enumerate(real_line_text(blobs)):
            if index == 3 and not killed:
                victims = _conversion_processes()
                assert victims, "the part runs in conversion processes"
                victims[0].kill()
                # Waits for its death without reaping it (WNOWAIT): the pool reaps its own processes, and one
                # reaped under it stays "alive" to it forever, which hangs its shutdown at the interpreter's exit.
                with contextlib.suppress(ChildProcessError):  # the pool may have reaped it already
                    os.waitid(os.P_PID, victims[0].pid, os.WEXITED | os.WNOWAIT)
                killed.append(victims[0].pid)
            yield text

    monkeypatch.setattr(sources, "line_text", line_text_then_kill)
    with pytest.raises(convert.ConversionProcessLost, match="a conversion process died"):
        ExportWorker.main(work[0])
    assert killed and parts.list_parts(job.id) == []
    assert not any(name.endswith(".csv.gz") for name in driver.blobs())
    ExportWorker.main(QueueMessage(id=work[0].id, body=work[0].get_body(), dequeue_count=2))
    driver.queues[orchestration.WORK_QUEUE].delete_message(work[1])
    assert killed[0] not in [p.pid for p in _conversion_processes()], "the broken pool was replaced"
    assert_exact(driver, driver.run(job))


def _start_conversion_processes_then_wait(report) -> None:
    """In a process of its own: starts the conversion pool, reports its processes, then waits to be killed."""
    from shared.export import convert
    executor = convert._executor(2)
    list(executor.map(time.sleep, [0.3, 0.3]))
    report.put(sorted(executor._processes))
    time.sleep(120)


def test_conversion_processes_exit_when_the_process_that_started_them_is_killed():
    import multiprocessing

    import psutil

    from shared.platform import processes
    context = multiprocessing.get_context("spawn")
    report = context.Queue()
    worker = context.Process(target=_start_conversion_processes_then_wait, args=(report,))
    worker.start()
    pids = report.get(timeout=60)
    assert len(pids) == 2 and all(psutil.pid_exists(pid) for pid in pids)
    worker.kill()  # as a host is killed: the pool is never shut down
    worker.join(10)

    def gone(pid):
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited; init reaps it when it can
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 5 * processes.PARENT_CHECK_SECONDS + 5
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(pid) for pid in pids), "orphaned conversion processes still run"


def test_csv_converted_in_conversion_processes_is_the_text_converted_in_the_worker(driver, settings_override):
    texts = []
    for processes in ("0", "2"):
        settings_override(EXPORT_CONVERT_PROCESSES=processes)
        job = driver.create()
        final = driver.run(job)
        assert_exact(driver, final)
        texts.append(gzip.decompress(driver.blobs()[f"Event/{job.id}/part-00000.csv.gz"]))
    assert texts[0] == texts[1]
    assert texts[0].startswith(b"deviceId,userId,sessionId,jobId,name,timestamp,extras\r\n")
