"""Destinations that misbehave, driven through the function entry points against a proxy in front of Azurite:
one that redirects, one that stops answering, a container re-created mid-job, a commit that fails part-way.
Each ends with an errorDetails that says the real cause, within a bounded time, and nothing a reader could
take for a finished export. A block damaged on the way is refused by the storage, and the retried file is
exact."""

from __future__ import annotations

import threading
import time

import pytest
from azure.core.exceptions import HttpResponseError
from azure.functions.queue import QueueMessage
from azure.storage.blob import BlobClient, BlobServiceClient
from faultproxy import CORRUPT, HANG, REDIRECT, FaultProxy
from test_export_faults import Driver, assert_exact

import ExportWorker
import PollExport
from shared.export import destination
from shared.platform.errors import UnusableDestination
from shared.tasks import jobs, orchestration
from shared.tasks.fairslots import FairSlots


@pytest.fixture
def driver(app_env, names):
    return Driver(app_env, names)


@pytest.fixture
def proxy(app_env):
    with FaultProxy(f"http://127.0.0.1:{app_env.ports['blob']}") as running:
        yield running


def every_blob(driver):
    """Committed and uncommitted blob names in the driver's container, read directly from Azurite."""
    container = BlobServiceClient.from_connection_string(driver.azurite.connection_string).get_container_client(
        driver.container)
    return sorted(blob.name for blob in container.list_blobs(include=["uncommittedblobs"]))


def test_a_destination_that_redirects_is_refused_at_creation_and_the_target_gets_nothing(driver, proxy):
    proxy.mode = REDIRECT
    with pytest.raises(UnusableDestination) as refused:
        driver.create(through=proxy.url)
    assert "answered with a redirect (HTTP 307)" in refused.value.message
    assert "redirects are never followed" in refused.value.message
    assert [status for _, _, status in proxy.seen] == [307]
    assert every_blob(driver) == []


def test_a_destination_that_does_not_answer_the_check_is_refused_within_the_checks_bound(driver, proxy,
                                                                                          monkeypatch):
    monkeypatch.setattr(destination, "PROBE_TIMEOUT_SECONDS", 1)
    proxy.mode = HANG
    started = time.monotonic()
    with pytest.raises(UnusableDestination) as refused:
        driver.create(through=proxy.url)
    assert "did not answer within 1 s on 2 tries" in refused.value.message
    assert time.monotonic() - started < 20  # an API request: the check waits less than a job's writes


def test_a_destination_that_starts_redirecting_fails_the_job_and_no_data_goes_elsewhere(driver, proxy):
    job = driver.create(through=proxy.url)
    proxy.mode = REDIRECT
    final = driver.run(job)
    assert final.state == jobs.FAILED
    assert "answered with a redirect (HTTP 307)" in final.error_details
    assert "sig=" not in final.error_details
    assert every_blob(driver) == [f"Event/{job.id}/.write-check"]  # the creation check's uncommitted block


def test_a_destination_that_stops_answering_fails_the_job_within_its_bound(driver, proxy, settings_override):
    settings_override(EXPORT_DESTINATION_TIMEOUT_SECONDS="1", EXPORT_DESTINATION_RETRIES="1")
    job = driver.create(through=proxy.url)
    proxy.mode = HANG
    started = time.monotonic()
    final = driver.run(job)
    elapsed = time.monotonic() - started
    assert final.state == jobs.FAILED
    assert f"the destination {job.container_url} did not answer within 1 s on 2 tries" in final.error_details
    # One part's calls, each bounded: 2 tries of at most 1 s to connect and 1 s to read, one short pause.
    # The SDK's defaults took 83-332 s for a part and kept the job Started for over 13 minutes.
    assert elapsed < 30, elapsed
    assert sum(1 for _, _, status in proxy.seen if status == HANG) >= 2


def test_a_block_damaged_on_the_way_is_refused_by_the_storage_and_the_retried_file_is_exact(driver, proxy):
    job = driver.create(through=proxy.url)
    driver.deliver(orchestration.POLL_QUEUE, PollExport.main, driver.take(orchestration.POLL_QUEUE)[0])
    (work,) = driver.take(orchestration.WORK_QUEUE)
    proxy.mode = CORRUPT
    # Each block goes with its MD5, so the storage refuses the damaged one instead of keeping it; the failure
    # is raised for the host to deliver the item again.
    with pytest.raises(HttpResponseError) as refused:
        ExportWorker.main(work[0])
    assert refused.value.error_code == "Md5Mismatch"
    assert 400 in [status for _, _, status in proxy.seen]
    ExportWorker.main(QueueMessage(id=work[0].id, body=work[0].get_body(), dequeue_count=2))
    driver.queues[orchestration.WORK_QUEUE].delete_message(work[1])
    assert_exact(driver, driver.run(job))


def test_a_healthy_export_of_another_app_succeeds_beside_a_dead_destination(app_env, names, proxy, settings_override):
    settings_override(EXPORT_DESTINATION_TIMEOUT_SECONDS="1", EXPORT_DESTINATION_RETRIES="1")
    class OtherNames:
        token = "b" + names.token

        def container(self, base="c"):
            return f"{base}-{self.token}"

    dead, healthy = Driver(app_env, names), Driver(app_env, OtherNames())
    dead_job = dead.create(through=proxy.url)
    healthy_job = healthy.create()
    proxy.mode = HANG
    finals = {}
    threads = [threading.Thread(target=lambda d=d, j=j: finals.__setitem__(j.id, d.run(j)))
               for d, j in ((dead, dead_job), (healthy, healthy_job))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert finals[dead_job.id].state == jobs.FAILED
    assert_exact(healthy, finals[healthy_job.id])


def test_a_container_recreated_mid_job_fails_saying_the_staged_blocks_are_gone(driver):
    job = driver.create()
    driver.deliver(orchestration.POLL_QUEUE, PollExport.main, driver.take(orchestration.POLL_QUEUE)[0])
    driver.run_work_only()
    service = BlobServiceClient.from_connection_string(driver.azurite.connection_string)
    service.delete_container(driver.container)
    service.create_container(driver.container)
    final = driver.run(job)
    assert final.state == jobs.FAILED
    assert final.error_details == (f"the blocks this export staged in {job.container_url} are gone: the container "
                                   f"was deleted or re-created while the export ran; export again")
    assert every_blob(driver) == []


def test_a_commit_that_fails_for_good_part_way_leaves_no_manifest_and_no_file(driver, settings_override,
                                                                               monkeypatch):
    settings_override(EXPORT_PART_MAX_BYTES="1")  # every raw blob starts a new file
    job = driver.create()
    commits = []
    real_commit = BlobClient.commit_block_list

    def commit_then_fail(self, *args, **kwargs):
        commits.append(self.blob_name)
        if len(commits) == 3:
            error = HttpResponseError(message="The specified block list is invalid.")
            error.error_code = "InvalidBlockList"
            raise error
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "commit_block_list", commit_then_fail)
    final = driver.run(job)
    assert len(commits) == 3, commits
    assert final.state == jobs.FAILED and "staged" in final.error_details
    committed = sorted(driver.blobs())
    assert committed == [], committed  # the two files committed before the failure were removed


def test_a_freed_slot_goes_to_the_app_holding_the_fewest():
    slots = FairSlots(2)
    order, release = [], {name: threading.Event() for name in ("a1", "a2", "a3", "b1")}

    def item(name):
        with slots.slot(name[0]):
            order.append(name)
            release[name].wait(10)

    def start(name):
        thread = threading.Thread(target=item, args=(name,))
        thread.start()
        return thread

    threads = [start("a1"), start("a2")]
    assert _eventually(lambda: slots.held("a") == 2)
    threads.append(start("a3"))
    assert _eventually(lambda: slots.waiting() == 1)
    threads.append(start("b1"))  # arrives after a3, but app a already holds every slot
    assert _eventually(lambda: slots.waiting() == 2)
    release["a1"].set()
    assert _eventually(lambda: "b1" in order)
    assert order == ["a1", "a2", "b1"]
    for event in release.values():
        event.set()
    for thread in threads:
        thread.join(10)
    assert order == ["a1", "a2", "b1", "a3"]


def _eventually(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_a_reserved_slot_starts_an_app_that_holds_none_beside_one_that_holds_every_other():
    slots = FairSlots(2, reserved_for_newcomers=1)
    order, release = [], {name: threading.Event() for name in ("a1", "a2", "a3", "b1", "c1")}

    def item(name):
        with slots.slot(name[0]):
            order.append(name)
            release[name].wait(10)

    threads = []
    for name in ("a1", "a2", "a3"):
        threads.append(threading.Thread(target=item, args=(name,)))
        threads[-1].start()
        assert _eventually(lambda: len(order) + slots.waiting() == len(threads))
    assert order == ["a1", "a2"] and slots.waiting() == 1  # a3 may not take the reserved slot: a holds two
    threads.append(threading.Thread(target=item, args=("b1",)))
    threads[-1].start()
    assert _eventually(lambda: order == ["a1", "a2", "b1"])  # b holds none: the reserved slot is its at once
    threads.append(threading.Thread(target=item, args=("c1",)))
    threads[-1].start()
    assert _eventually(lambda: slots.waiting() == 2)  # every slot is taken now
    release["a1"].set()
    assert _eventually(lambda: len(order) == 4)
    assert order[3] == "c1"  # the freed slot goes to c, which holds none, before a's third item
    for event in release.values():
        event.set()
    for thread in threads:
        thread.join(10)
    assert sorted(order) == ["a1", "a2", "a3", "b1", "c1"]
