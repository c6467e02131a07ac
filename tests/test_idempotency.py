"""Exactly-once batches through the Collect function: a batch sent again with its Idempotency-Key is stored
once and answered the same, whether the first copy succeeded, is still running, failed, or died in a process
killed (SIGKILL) before or after storing; a key reused with another body is a 422."""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import os
import signal
import threading
import uuid

import pytest
from azure.data.tables import TableServiceClient, UpdateMode
from helpers import app_path, http_request
from test_collect import ONE_OF_EACH, Device, T

import Collect
from shared.ingest import idempotency, rawstore
from shared.platform import config

EVENTS = [{"type": "event", "deviceId": f"dev-{i % 3}", "sessionId": "s1", "name": "click", "timestamp": T,
           "extras": {"n": i}} for i in range(40)]
BATCH = EVENTS + ONE_OF_EACH
# Every record is one row of the raw store: historical ones under their hour, snapshot ones in the snapshot log.
ROWS = len(BATCH)


class KeyedDevice(Device):
    def send(self, records, key, **kwargs):
        headers = {idempotency.HEADER: key, **kwargs.pop("headers", {})}
        request_body = json.dumps({"records": records}).encode()
        if kwargs.pop("gzip", False):
            request_body = gzip.compress(request_body, 1)
            headers["Content-Encoding"] = "gzip"
        return self.post(raw=request_body, headers=headers, **kwargs)

    def send_full(self, records, key):
        request = http_request("POST", app_path(self.collection, self.app) + "/collect", key=self.keys.collect_key,
                               body={"records": records}, headers={idempotency.HEADER: key},
                               route_params={"appCollection": self.collection, "appName": self.app})
        response = Collect.main(request)
        return response.status_code, json.loads(response.get_body()), dict(response.headers)

    def stored(self):
        return sorted(json.dumps(row, sort_keys=True) for rows in self.raw_rows().values() for row in rows)

    def claim(self, key):
        table = TableServiceClient.from_connection_string(self.azurite.connection_string).get_table_client(
            idempotency.TABLE)
        return table, table.get_entity(self.app_id, hashlib.sha256(key.encode()).hexdigest())


@pytest.fixture
def device(app_env, names):
    return KeyedDevice(app_env, names)


def test_a_batch_sent_again_with_its_key_is_stored_once_and_answered_the_same(device):
    key = str(uuid.uuid4())
    status, first, headers = device.send_full(BATCH, key)
    assert status == 200 and first["accepted"] == len(BATCH) and idempotency.REPLAYED_HEADER not in headers
    stored = device.stored()
    assert len(stored) == ROWS
    # The same batch, gzip'd this time: the same bytes once decoded, so the same batch.
    status, again = device.send(BATCH, key, gzip=True)
    assert (status, again) == (200, first)
    _, replay, headers = device.send_full(BATCH, key)
    assert replay == first and headers[idempotency.REPLAYED_HEADER] == "true"
    assert device.stored() == stored


def test_refused_records_are_part_of_the_answer_replayed(device):
    batch = EVENTS[:3] + [{"type": "event", "deviceId": "d", "name": "x"}]  # no timestamp
    key = "k-" + uuid.uuid4().hex
    _, first, _ = device.send_full(batch, key)
    assert first["accepted"] == 3 and first["rejected"][0]["field"] == "timestamp"
    assert device.send_full(batch, key)[1] == first


def test_a_key_reused_with_another_body_is_a_422_that_says_so(device):
    key = str(uuid.uuid4())
    assert device.send_full(EVENTS[:5], key)[0] == 200
    status, answer, _ = device.send_full(EVENTS[:6], key)
    assert status == 422
    assert answer["error"]["code"] == "IdempotencyKeyReused" and "another body" in answer["error"]["message"]
    assert len(device.stored()) == 5


@pytest.mark.parametrize("key", ["", "a" * 256, "key with spaces", "clé"])
def test_a_malformed_key_is_a_400_naming_the_header(device, key):
    status, answer = device.send(EVENTS[:1], key)
    assert status == 400 and idempotency.HEADER in answer["error"]["message"]
    assert device.stored() == []


def test_copies_sent_at_once_are_stored_once_and_all_get_the_answer(device):
    key = str(uuid.uuid4())
    start, answers = threading.Barrier(4), []

    def send():
        start.wait()
        answers.append(device.send_full(BATCH, key)[:2])

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in answers] == [200] * 4
    assert all(answer == answers[0][1] for _, answer in answers)
    assert len(device.stored()) == ROWS


def test_a_copy_of_a_batch_still_being_stored_past_the_wait_is_a_409_with_retry_after(device, settings_override):
    settings_override(COLLECT_IDEMPOTENCY_WAIT_SECONDS=0)
    key = str(uuid.uuid4())
    assert device.send_full(EVENTS[:2], key)[0] == 200
    table, claim = device.claim(key)
    table.update_entity(dict(claim, state=idempotency.PENDING), mode=UpdateMode.REPLACE)
    status, answer, headers = device.send_full(EVENTS[:2], key)
    assert status == 409 and answer["error"]["code"] == "IdempotencyKeyInUse"
    assert 1 <= int(headers["Retry-After"]) <= 60


def test_a_batch_whose_storage_failed_is_stored_by_its_retry_once(device, monkeypatch):
    key = str(uuid.uuid4())
    real_append = rawstore.RawWriter._append
    failing = [True]

    def append_then_fail(self, prefix, partition, member):
        real_append(self, prefix, partition, member)  # stored, but the answer is lost
        if failing and "/event/" in prefix:
            failing.clear()
            raise rawstore.TransientError("storage stopped answering")

    monkeypatch.setattr(rawstore.RawWriter, "_append", append_then_fail)
    status, answer, headers = device.send_full(BATCH, key)
    assert status == 503 and headers["Retry-After"]
    _, claim = device.claim(key)
    assert claim["state"] == idempotency.ABANDONED
    status, answer, _ = device.send_full(BATCH, key)
    assert (status, answer["accepted"]) == (200, len(BATCH))
    assert len(device.stored()) == ROWS  # the events the failed copy stored were found, not written again


def test_a_copy_taking_over_a_failed_batch_is_not_refused_by_the_quota(device, monkeypatch, settings_override):
    settings_override(COLLECT_RATE_LIMIT_RECORDS_PER_SECOND=3)  # a burst of 6 records, then 3 a second
    key = str(uuid.uuid4())
    real_append = rawstore.RawWriter._append

    def append_then_fail(self, prefix, partition, member):
        real_append(self, prefix, partition, member)
        raise rawstore.TransientError("storage stopped answering")

    monkeypatch.setattr(rawstore.RawWriter, "_append", append_then_fail)
    assert device.send_full(EVENTS[:5], key)[0] == 503  # stored, but not acknowledged
    monkeypatch.setattr(rawstore.RawWriter, "_append", real_append)
    # The app's bucket is nearly empty now; the copy finds the stored rows and answers, without a 429.
    status, answer, _ = device.send_full(EVENTS[:5], key)
    assert (status, answer["accepted"]) == (200, 5)
    assert len(device.stored()) == 5
    assert device.send_full(EVENTS[5:10], str(uuid.uuid4()))[0] == 429  # a new batch is still limited


def test_a_key_older_than_24_hours_names_a_new_batch(device):
    key = str(uuid.uuid4())
    assert device.send_full(EVENTS[:2], key)[0] == 200
    table, claim = device.claim(key)
    table.update_entity(dict(claim, claimedAt="2020-01-01T00:00:00.000Z"), mode=UpdateMode.REPLACE)
    status, answer, headers = device.send_full(EVENTS[:3], key)  # another body is fine: the key expired
    assert (status, answer["accepted"]) == (200, 3) and idempotency.REPLAYED_HEADER not in headers
    assert len(device.stored()) == 5


def test_the_timer_removes_expired_claims_hourly_and_keeps_live_ones(device, monkeypatch):
    from azure.core.exceptions import ResourceNotFoundError
    from azure.functions.timer import TimerRequest

    import StartExport
    old_key, live_key, later_key = (str(uuid.uuid4()) for _ in range(3))
    for key in (old_key, live_key, later_key):
        assert device.send_full(EVENTS[:2], key)[0] == 200
    for key in (old_key, later_key):
        table, claim = device.claim(key)
        table.update_entity(dict(claim, claimedAt="2020-01-01T00:00:00.000Z"), mode=UpdateMode.REPLACE)
    monkeypatch.setattr(idempotency, "_last_sweep", None)
    StartExport.main(TimerRequest(past_due=False))
    with pytest.raises(ResourceNotFoundError):
        device.claim(old_key)
    with pytest.raises(ResourceNotFoundError):
        device.claim(later_key)
    status, _, headers = device.send_full(EVENTS[:2], live_key)  # a live claim still answers its copies
    assert status == 200 and headers[idempotency.REPLAYED_HEADER] == "true"
    assert device.send_full(EVENTS[:2], later_key)[0] == 200
    table, claim = device.claim(later_key)
    table.update_entity(dict(claim, claimedAt="2020-01-01T00:00:00.000Z"), mode=UpdateMode.REPLACE)
    StartExport.main(TimerRequest(past_due=False))  # within the hour: not swept again
    assert device.claim(later_key)[1]["claimedAt"] == "2020-01-01T00:00:00.000Z"


def _send_and_die(env, collection, app, collect_key, records, key, die_when):
    """In a child process: sends the batch through Collect and is killed (SIGKILL) at ``die_when``."""
    os.environ.update(env)
    config.reset_settings()
    from shared.ingest import collect

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if die_when == "after storing":
        real_mark = idempotency._mark
        idempotency._mark = lambda table, claim, etag, state: die() if state == idempotency.DONE else real_mark(
            table, claim, etag, state)
    else:
        collect.write = die
    request = http_request("POST", app_path(collection, app) + "/collect", key=collect_key, body={"records": records},
                           headers={idempotency.HEADER: key},
                           route_params={"appCollection": collection, "appName": app})
    Collect.main(request)
    os._exit(3)  # not reached: the process was killed


@pytest.mark.parametrize("die_when", ["after storing", "before storing"])
def test_a_process_killed_with_the_key_claimed_is_taken_over_after_the_lease(device, settings_override, die_when):
    settings_override(COLLECT_IDEMPOTENCY_LEASE_SECONDS=1, COLLECT_IDEMPOTENCY_WAIT_SECONDS=5)
    key = str(uuid.uuid4())
    child = multiprocessing.get_context("spawn").Process(target=_send_and_die, args=(
        dict(os.environ), device.collection, device.app, device.keys.collect_key, BATCH, key, die_when))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    assert len(device.stored()) == (ROWS if die_when == "after storing" else 0)
    _, claim = device.claim(key)
    assert claim["state"] == idempotency.PENDING
    # The copy waits out the dead claim's lease, looks for its rows, and stores only what is missing.
    status, answer, headers = device.send_full(BATCH, key)
    assert (status, answer["accepted"]) == (200, len(BATCH)), answer
    assert len(device.stored()) == ROWS
    assert device.send_full(BATCH, key)[2][idempotency.REPLAYED_HEADER] == "true"


def test_without_a_key_a_batch_sent_twice_is_stored_twice(device):
    assert device.post(EVENTS[:4])[0] == 200 and device.post(EVENTS[:4])[0] == 200
    assert len(device.stored()) == 8


def test_a_batch_taken_over_after_an_erasure_rewrote_its_rows_is_not_stored_twice(device, settings_override):
    """The owner stored the batch and died; an erasure then took a device's rows out of the member it wrote. The
    copy that takes the key over finds the rows that are left, and stores nothing again."""
    from erasing import crank_erasures

    from shared.erasure import service
    from shared.platform import apps

    settings_override(COLLECT_IDEMPOTENCY_LEASE_SECONDS=1, COLLECT_IDEMPOTENCY_WAIT_SECONDS=5)
    key = str(uuid.uuid4())
    child = multiprocessing.get_context("spawn").Process(target=_send_and_die, args=(
        dict(os.environ), device.collection, device.app, device.keys.collect_key, BATCH, key, "after storing"))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL and len(device.stored()) == ROWS
    task = service.create_erasure(apps.AppRef(device.collection, device.app), {"deviceIds": ["dev-0"]})
    crank_erasures(device.app_id, task.id)
    left = ROWS - sum(1 for record in BATCH if record["deviceId"] == "dev-0")
    assert len(device.stored()) == left < ROWS
    status, answer, _ = device.send_full(BATCH, key)
    assert (status, answer["accepted"]) == (200, len(BATCH)), answer
    assert len(device.stored()) == left
