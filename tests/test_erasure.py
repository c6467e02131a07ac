"""Erasure requests (POST .../devices/erasureTasks): from the 202 on, no export holds the devices' or users' rows;
once the task has ended, no blob, table row or queue message of the app's storage holds their ids, and every
other record still exports exactly. Records Collect acknowledges after the request are new data and are kept."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from urllib.parse import parse_qs, urlsplit

import expected
import pytest
from backendplan import CASES, FIRST, LAST, batches, post, reference_rows
from erasing import crank_erasures, erasure_api, everything_stored
from exporting import FORMATS, as_read, run_export

from sampledata import Plan, backend_phases
from shared.erasure import rewrite, service, store
from shared.erasure.model import ErasureState
from shared.export import snapshotstate
from shared.export.registry import ROUTES
from shared.ingest import rawstore
from shared.platform import apps
from shared.platform.config import get_settings


class BackendApp:
    """An app fed the plan as a backend sends it: the first phase, a folded snapshot state, then the second phase
    (so the snapshot rows are in a state file and in the log after it)."""

    def __init__(self) -> None:
        self.collection, self.name = f"erase{uuid.uuid4().hex[:8]}", "game"
        self.keys = apps.register_app(self.collection, self.name)
        self.id = f"{self.collection}~{self.name}"
        self.sent: list[dict] = []
        # Ids of this app alone (the session's storage holds other tests' apps): a search of the whole storage
        # for one finds only what this app left.
        first, later = backend_phases(Plan(devices=40, days=2, last_day=LAST, seed=uuid.uuid4().int % 10**9))
        self.send(self.own_users(first))
        assert snapshotstate.compact(self.id) is not None
        self.send(self.own_users(later))

    def own_users(self, records) -> list[dict]:
        token = self.collection[-8:]
        return [{**r, "userId": f"{r['userId']}-{token}"} if r.get("userId") else r for r in records]

    def send(self, records: list[dict]) -> None:
        for batch in batches(records):
            status, answer, _ = post(self.collection, self.name, self.keys.collect_key, batch, str(uuid.uuid4()))
            assert (status, answer["accepted"]) == (200, len(batch)), answer
            self.sent += batch

    def erase(self, body, *, key=None):
        return erasure_api(self.collection, self.name, key or self.keys.export_key, "POST", body=body)

    def get(self, rest: str = "", *, params=None):
        return erasure_api(self.collection, self.name, self.keys.export_key, "GET", rest, params=params)


@pytest.fixture
def backend(app_env):
    return BackendApp()


def _devices(backend: BackendApp) -> list[str]:
    return sorted({record["deviceId"] for record in backend.sent})


def _without(records: list[dict], device_ids, user_ids) -> list[dict]:
    return [r for r in records if r["deviceId"] not in device_ids and r.get("userId") not in user_ids]


def _exports_hold(app_id: str, records: list[dict], formats=FORMATS) -> None:
    for route, fields in CASES:
        for export_format in formats:
            got = run_export(app_id, route, export_format, **fields)
            want = as_read(reference_rows(records, route), ROUTES[route].export_type, export_format)
            if route == "tokens":
                for row in got + want:
                    row.pop("updated", None)
            assert expected.canonical(got) == expected.canonical(want), (route, export_format)


def test_an_erasure_takes_effect_at_once_and_leaves_nothing_of_the_ids(backend, app_env):
    devices = _devices(backend)
    erased_devices = devices[:3]
    user = next(r["userId"] for r in backend.sent if r.get("userId") and r["deviceId"] not in erased_devices)
    status, task, headers = backend.erase({"deviceIds": erased_devices, "userIds": [user], "reason": "GDPR art. 17"})
    assert status == 202, task
    assert task["state"] == "Queued" and task["deviceIdCount"] == 3 and task["userIdCount"] == 1
    assert headers["Location"].endswith(f"/devices/erasureTasks/{task['id']}?api-version=2014-12-01")
    assert int(headers["Retry-After"]) > 0
    assert not any(i.encode() in json.dumps(task).encode() for i in [*erased_devices, user])

    # At once: the task has not run, and no export that starts now holds a row of the ids, in any type or format.
    kept = _without(backend.sent, erased_devices, {user})
    assert len(kept) < len(backend.sent)
    _exports_hold(backend.id, kept)
    historical = [r for r in backend.sent if r["type"] in ("activity", "event", "job", "error", "crash")]
    erased_historical = len(historical) - len(_without(historical, erased_devices, {user}))

    # Collect acknowledges a record of an erased device after the request: new data, kept.
    later = {"type": "event", "deviceId": erased_devices[0], "name": "after-the-request",
             "timestamp": f"{LAST.isoformat()}T12:00:00.000Z"}
    backend.send([later])

    crank_erasures(backend.id, task["id"])
    status, done, _ = backend.get(task["id"])
    assert status == 200 and done["state"] == "Succeeded", done
    erased = done["erased"]
    assert erased["rawRecords"] > 0 and erased["snapshotRows"] > 0 and erased["rawBlobsRewritten"] > 0
    assert erased["rawRecords"] == erased_historical
    assert done["dateCompleted"] >= done["dateCreated"]
    assert done["idHashes"] and len(done["idHashes"]) == 4

    # Nothing of the ids anywhere in the app's storage (the new record's id aside: it is the one kept).
    stored = everything_stored(get_settings().storage.connection_string)
    for erased_id in erased_devices[1:] + [user]:
        assert erased_id.encode() not in stored, erased_id
    assert stored.count(erased_devices[0].encode()) == stored.count(b"after-the-request") == 1

    # Every other record, and the one acknowledged after the request, still exports exactly; now without a filter.
    assert store.pending_task_ids(backend.id) == []
    _exports_hold(backend.id, kept + [later])


def test_the_list_pages_and_a_task_of_another_app_is_not_found(backend, app_env):
    ids = []
    for device in _devices(backend)[:3]:
        status, task, _ = backend.erase({"deviceIds": [device]})
        assert status == 202
        ids.append(task["id"])
    status, page, _ = backend.get(params={"api-version": "2014-12-01", "$top": "2"})
    assert status == 200 and [t["id"] for t in page["value"]] == ids[::-1][:2]
    token = parse_qs(urlsplit(page["nextLink"]).query)["$skiptoken"][0]
    status, rest, _ = backend.get(params={"api-version": "2014-12-01", "$top": "2", "$skiptoken": token})
    assert [t["id"] for t in rest["value"]] == ids[:1] and "nextLink" not in rest
    other = BackendApp.__new__(BackendApp)
    other.collection, other.name = f"other{uuid.uuid4().hex[:8]}", "game"
    other.keys = apps.register_app(other.collection, other.name)
    status, body, _ = other.get(ids[0])
    assert status == 404 and body["error"]["code"] == "ErasureTaskNotFound"
    status, body, _ = erasure_api(backend.collection, backend.name, other.keys.export_key, "GET", ids[0])
    assert status == 401


@pytest.mark.parametrize("body, field", [
    ([], "body"), ({}, "deviceIds"), ({"deviceIds": []}, "deviceIds"), ({"deviceIds": "d1"}, "deviceIds"),
    ({"deviceIds": ["ok", "a\u0001b"]}, "deviceIds[1]"), ({"deviceIds": ["x" * 129]}, "deviceIds[0]"),
    ({"userIds": [7]}, "userIds[0]"), ({"userIds": [""]}, "userIds[0]"),
    ({"deviceIds": [f"d{i}" for i in range(1001)]}, "deviceIds"),
    ({"deviceIds": [f"d{i}" for i in range(600)], "userIds": [f"u{i}" for i in range(600)]}, "1200 ids"),
    ({"deviceIds": ["d"], "reason": ""}, "reason"), ({"deviceIds": ["d"], "reason": "r" * 501}, "reason"),
    ({"deviceIds": ["d"], "removeTableFilesNow": "yes"}, "removeTableFilesNow"),
    ({"deviceIds": ["d"], "deviceId": "d"}, "deviceId is not a field"),
])
def test_a_request_that_is_not_an_erasure_is_refused_naming_the_field(backend, body, field):
    status, answer, _ = backend.erase(body)
    assert status == 400, answer
    assert answer["error"]["code"] == "InvalidErasureRequest"
    assert field in answer["error"]["message"] or (field == "body" and "JSON object" in answer["error"]["message"])
    assert service.list_erasures(apps.AppRef(backend.collection, backend.name)) == []


def test_wrong_methods_and_routes_answer_in_the_arm_shape(backend):
    for method, rest, status in (("PUT", "", 405), ("DELETE", "x", 405), ("GET", "a/b", 404)):
        got, body, _ = erasure_api(backend.collection, backend.name, backend.keys.export_key, method, rest)
        assert got == status and "error" in body


def test_a_rewrite_killed_at_any_step_is_finished_by_the_next_try_and_counted_once(backend, app_env, monkeypatch):
    """The worker dies (no lease released) before the copy, and again after it before its progress was noted;
    the next tries finish, count every row once, and leave every other record exactly."""
    erased = _devices(backend)[5:7]
    _, task, _ = backend.erase({"deviceIds": erased})
    monkeypatch.setattr(rewrite, "LEASE_SECONDS", 15)
    monkeypatch.setattr(service, "ERASE_PARALLEL_BLOBS", 1)  # each try dies at its first rewrite, in order
    monkeypatch.setattr(service, "ERASE_IN_PROCESS", True)  # the rewrite's code is changed in this process
    real_replace, real_record = rewrite._replace, store.record_progress
    kills = {"before the copy": 1, "after the copy": 1}

    class Killed(BaseException):
        pass

    def replace_then_maybe_die(client, temporary, properties, lease, renew):
        monkeypatch.setattr(lease, "release", lambda: None)  # a killed process releases nothing
        if kills["before the copy"]:
            kills["before the copy"] -= 1
            raise Killed()
        real_replace(client, temporary, properties, lease, renew)
        if kills["after the copy"]:
            kills["after the copy"] -= 1
            raise Killed()

    monkeypatch.setattr(rewrite, "_replace", replace_then_maybe_die)
    for _ in range(2):
        with pytest.raises(Killed):
            service.work(service.EraseMessage(backend.id, task["id"]))
    monkeypatch.setattr(store, "record_progress", real_record)
    crank_erasures(backend.id, task["id"], redeliver_failures=True, timeout=180)
    done = service.get_erasure(apps.AppRef(backend.collection, backend.name), task["id"])
    assert done.state == ErasureState.SUCCEEDED
    historical = [r for r in backend.sent if r["type"] in ("activity", "event", "job", "error", "crash")]
    assert done.counts["rawRecords"] == sum(1 for r in historical if r["deviceId"] in erased)
    stored = everything_stored(get_settings().storage.connection_string)
    assert not any(device.encode() in stored for device in erased)
    _exports_hold(backend.id, _without(backend.sent, erased, set()), formats=("JsonBlob",))


def test_collect_appending_to_a_blob_being_rewritten_goes_on_in_a_new_blob(backend, app_env):
    """Collect's open blob of a partition is leased by a rewrite: its next append lands in a new blob, nothing is
    lost or doubled, and the rewrite's result keeps the appended rows out of the leased blob's cut."""
    device = _devices(backend)[8]
    moment = f"{FIRST.isoformat()}T10:00:00.000Z"
    records = [{"type": "event", "deviceId": device, "name": f"n{i}", "timestamp": moment} for i in range(3)]
    backend.send(records)
    prefix = rawstore.hour_prefix(backend.id, "event", dt.datetime.combine(FIRST, dt.time(10), dt.UTC))
    writer = rawstore.writer()
    open_blob = writer.position(prefix).blob
    assert open_blob is not None
    _, task, _ = backend.erase({"deviceIds": [device]})
    lease = rewrite._lease(rawstore.storage.container(rawstore.RAW_CONTAINER).get_blob_client(open_blob))
    try:
        backend.send([{"type": "event", "deviceId": "keeper", "name": "while-leased", "timestamp": moment}])
        assert writer.position(prefix).blob != open_blob
    finally:
        lease.release()
    crank_erasures(backend.id, task["id"])
    rows = run_export(backend.id, "events", "JsonBlob", start_date=FIRST, end_date=FIRST)
    assert [r["name"] for r in rows if r["deviceId"] in (device, "keeper")] == ["while-leased"]


def test_a_device_id_in_another_script_is_erased_as_collect_stored_it(backend, app_env):
    """The ids are checked as Collect checks them: a device id sent decomposed is stored and erased in NFC."""
    device = "appareil-e\u0301t\u00e9"  # 'é' decomposed: Collect stores it composed
    backend.send([{"type": "event", "deviceId": device, "name": "x",
                   "timestamp": f"{FIRST.isoformat()}T01:00:00.000Z"}])
    _, task, _ = backend.erase({"deviceIds": [device]})
    crank_erasures(backend.id, task["id"])
    done = service.get_erasure(apps.AppRef(backend.collection, backend.name), task["id"])
    assert done.counts["rawRecords"] == 1
    assert not [r for r in run_export(backend.id, "events", "JsonBlob", start_date=FIRST, end_date=FIRST)
                if r["deviceId"].startswith("appareil")]


def test_an_ended_task_keeps_keyed_hashes_an_auditor_can_match(backend, app_env, capsys):
    from tools import admin

    device = _devices(backend)[9]
    _, task, _ = backend.erase({"deviceIds": [device, "never-seen"]})
    crank_erasures(backend.id, task["id"])
    _, done, _ = backend.get(task["id"])
    assert admin.main(["erasure-hash", "--device-id", device]) == 0
    asked = capsys.readouterr().out.strip()
    assert asked in done["idHashes"] and len(done["idHashes"]) == 2
    assert admin.main(["erasure-hash", "--user-id", device]) == 0
    assert capsys.readouterr().out.strip() not in done["idHashes"]  # a hash says which kind of id it was
    assert admin.main(["erasure-hash", "--device-id", "a\u0001b"]) == 2


def test_a_compaction_that_read_before_the_request_and_published_after_it_is_erased_too(backend, app_env,
                                                                                       monkeypatch):
    """A snapshot compaction that started before the request read the log without leaving the rows out, and its
    files appear after the cut: the erasure rewrites them too."""
    from shared.erasure import pending

    device = next(r["deviceId"] for r in backend.sent if r["type"] == "tag")
    backend.send([{"type": "tag", "deviceId": device, "name": "late_tag", "value": "x"}])  # a log tail to fold
    _, task, _ = backend.erase({"deviceIds": [device]})
    asked = service.get_erasure(apps.AppRef(backend.collection, backend.name), task["id"]).requested
    with monkeypatch.context() as patch:
        patch.setattr(pending, "read_filter", lambda app_id: pending.NO_FILTER)  # it read before the request
        generation = snapshotstate.compact(backend.id, now=asked - dt.timedelta(seconds=1))
    assert generation is not None and generation.name < asked.strftime("%Y%m%dT%H%M%S%f")
    crank_erasures(backend.id, task["id"])
    assert device.encode() not in everything_stored(get_settings().storage.connection_string)
    tags = run_export(backend.id, "tags", "JsonBlob")
    assert tags and not [row for row in tags if row["deviceId"] == device]


def test_two_workers_on_one_task_at_once_count_every_row_once(backend, app_env):
    erased = _devices(backend)[10:13]
    _, task, _ = backend.erase({"deviceIds": erased})
    message = service.EraseMessage(backend.id, task["id"])
    errors = []

    def worker() -> None:
        try:
            for _ in range(200):
                try:
                    service.work(message)
                except rewrite.BlobBusy:
                    pass
                if service.get_erasure(apps.AppRef(backend.collection, backend.name), task["id"]).ended:
                    return
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    crank_erasures(backend.id, task["id"])  # the queue's own messages: the task has ended, they change nothing
    done = service.get_erasure(apps.AppRef(backend.collection, backend.name), task["id"])
    historical = [r for r in backend.sent if r["type"] in ("activity", "event", "job", "error", "crash")]
    assert done.state == ErasureState.SUCCEEDED
    assert done.counts["rawRecords"] == sum(1 for r in historical if r["deviceId"] in erased)
    _exports_hold(backend.id, _without(backend.sent, erased, set()), formats=("JsonBlob",))
