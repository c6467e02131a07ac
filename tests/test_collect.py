"""Ingestion through the Collect function: every record kind lands in its store, limits refuse only the
offending record, and concurrent writers lose nothing."""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import threading
import time

import pytest
from azure.storage.blob import BlobServiceClient
from exporting import run_export
from helpers import app_path, http_request

import Collect
from shared.ingest import rawstore, snapshots
from shared.platform import apps

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
T = (NOW - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
T_END = (NOW - dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class Device:
    def __init__(self, azurite, names):
        self.azurite = azurite
        self.collection, self.app = f"col-{names.token}", "app"
        self.app_id = f"{self.collection}~{self.app}"
        self.keys = apps.register_app(self.collection, self.app)

    def post(self, records=None, *, key=None, raw=None, headers=None, collection=None):
        collection = collection or self.collection
        request = http_request("POST", app_path(collection, self.app) + "/collect",
                               key=self.keys.collect_key if key is None else key,
                               body={"records": records} if raw is None else None, raw=raw, headers=headers,
                               route_params={"appCollection": collection, "appName": self.app})
        response = Collect.main(request)
        return response.status_code, json.loads(response.get_body())

    def raw_rows(self, record_type=None):
        container = BlobServiceClient.from_connection_string(self.azurite.connection_string).get_container_client(
            rawstore.RAW_CONTAINER)
        prefix = f"{self.app_id}/" + (f"{record_type}/" if record_type else "")
        rows = {}
        for blob in container.list_blobs(name_starts_with=prefix):
            data = gzip.decompress(container.download_blob(blob.name).readall())
            rows[blob.name] = [json.loads(line) for line in data.splitlines()]
        return rows

    def snapshot(self, route, **fields):
        """The rows a JsonBlob export of a snapshot route holds now: what the app owner gets."""
        return run_export(self.app_id, route, "JsonBlob", **fields)


@pytest.fixture
def device(app_env, names):
    return Device(app_env, names)


ONE_OF_EACH = [
    {"type": "activity", "deviceId": "dev-1", "userId": "u1", "sessionId": "s1", "name": "home", "start": T,
     "end": T_END, "extras": {"screen": "main", "n": 1}},
    {"type": "event", "deviceId": "dev-1", "sessionId": "s1", "name": "click", "timestamp": T, "extras": {"b": "ok"}},
    {"type": "error", "deviceId": "dev-1", "name": "timeout", "timestamp": T},
    {"type": "job", "deviceId": "dev-1", "name": "sync", "start": T, "end": T_END},
    {"type": "crash", "deviceId": "dev-1", "timestamp": T, "crashType": "SIGSEGV", "message": "boom", "stack": "a\nb"},
    {"type": "device", "deviceId": "dev-1", "timestamp": T, "info": {"phoneModel": "Pixel", "androidAPILevel": 34},
     "location": {"countrycode": "FR", "locality": "Paris"}, "nativePushEnabled": True},
    {"type": "tag", "deviceId": "dev-1", "name": "level", "value": 12},
    {"type": "token", "deviceId": "dev-1", "userId": "u1", "token": "tok-123", "platform": "fcm"},
    {"type": "push", "deviceId": "dev-1", "campaignId": 7, "campaignType": "Announcement", "action": "replied",
     "timestamp": T},
]


def test_every_record_kind_round_trips_into_its_store(device):
    before = dt.datetime.now(dt.UTC)
    status, result = device.post(ONE_OF_EACH)
    after = dt.datetime.now(dt.UTC)
    assert (status, result) == (200, {"accepted": 9, "rejected": []})
    hour = (NOW - dt.timedelta(hours=1)).strftime("%Y/%m/%d/%H")
    for record in ONE_OF_EACH[:5]:
        rows = device.raw_rows(record["type"])
        assert len(rows) == 1
        (name, content), = rows.items()
        assert name.startswith(f"{device.app_id}/{record['type']}/{hour}/")
        assert content == [record]
    # Snapshot records go to the app's snapshot log, under the hour they were received, in one append.
    (name, logged), = device.raw_rows(snapshots.LOG_TYPE).items()
    hours = {f"{device.app_id}/{snapshots.LOG_TYPE}/{moment:%Y/%m/%d/%H}/" for moment in (before, after)}
    assert any(name.startswith(hour) for hour in hours)
    assert [{k: v for k, v in row.items() if k not in ("receivedAt", "arrival")} for row in logged] == ONE_OF_EACH[5:]
    assert device.snapshot("devices") == [{
        "deviceId": "dev-1", "firstSeen": T, "lastSeen": T, "nativePushEnabled": True,
        "info": {"phoneModel": "Pixel", "androidAPILevel": 34}, "location": {"countrycode": "FR", "locality": "Paris"},
        "appInfo": {"level": 12}}]
    assert device.snapshot("tags") == [{"deviceId": "dev-1", "name": "level", "value": 12}]
    (token,) = device.snapshot("tokens", export_user_id=True)
    assert (token["token"], token["userId"], token["platform"]) == ("tok-123", "u1", "fcm")
    assert device.snapshot("feedbackByCampaign", campaign_type="Announcement", campaign_ids=[7]) == [
        {"deviceId": "dev-1", "campaignId": 7, "campaignType": "Announcement", "action": "replied", "timestamp": T}]


BAD = [
    ({"type": "event", "deviceId": "d", "name": "x" * 65, "timestamp": T}, "name", "1 to 64 characters"),
    ({"type": "event", "deviceId": "d", "name": "e", "timestamp": T, "extras": {"bad key": 1}}, "extras", "key"),
    ({"type": "event", "deviceId": "d", "name": "e", "timestamp": T, "extras": {"k": "v" * 1100}}, "extras",
     "bytes once encoded"),
    ({"type": "event", "deviceId": "d", "name": "e", "timestamp": T, "extras": [1]}, "extras", "JSON object"),
    ({"type": "event", "deviceId": "d", "name": "e", "timestamp": T, "extras": {"x": float("nan")}}, "extras",
     "finite"),
    ({"type": "event", "deviceId": "d", "name": "e", "timestamp": T, "extras": {"x": {"y": [1, float("inf")]}}},
     "extras", "NaN and Infinity are not JSON"),
    ({"type": "event", "deviceId": "d", "name": "e", "timestamp": T, "extras": {"x": [10**20]}}, "extras", "64-bit"),
    ({"type": "device", "deviceId": "d", "info": {"androidAPILevel": float("-inf")}}, "info.androidAPILevel",
     "finite"),
    ({"type": "event", "deviceId": "d", "name": "e", "timestamp": "2026-01-01T10:00:00"}, "timestamp", "time zone"),
    ({"type": "event", "deviceId": "d", "name": "e", "timestamp": "yesterday"}, "timestamp", "not an ISO 8601"),
    ({"type": "event", "name": "e", "timestamp": T}, "deviceId", "required"),
    ({"type": "event", "deviceId": "a/b", "name": "e", "timestamp": T}, "deviceId", "letters, digits"),
    ({"type": "activity", "deviceId": "d", "name": "a", "start": T_END, "end": T, "sessionId": "s"}, "end",
     "before start"),
    ({"type": "activity", "deviceId": "d", "name": "a", "start": T, "end": T_END}, "sessionId", "required"),
    ({"type": "tag", "deviceId": "d", "name": "bad-name", "value": 1}, "name", "a-z"),
    ({"type": "tag", "deviceId": "d", "name": "t", "value": "x" * 1025}, "value", "at most 1024"),
    ({"type": "tag", "deviceId": "d", "name": "t", "value": 1.5}, "value", "string, an integer"),
    ({"type": "tag", "deviceId": "d", "name": "t", "value": 2**63}, "value", "64-bit"),
    ({"type": "tag", "deviceId": "d", "name": "t", "value": "2026-02-30"}, "value", "not a real day"),
    ({"type": "push", "deviceId": "d", "campaignId": 1, "campaignType": "Email", "action": "pushed", "timestamp": T},
     "campaignType", "Announcement"),
    ({"type": "push", "deviceId": "d", "campaignId": 1, "campaignType": "Poll", "action": "opened", "timestamp": T},
     "action", "pushed, replied"),
    ({"type": "visit", "deviceId": "d"}, "type", "must be one of"),
    ({"type": "event", "deviceId": "d", "name": "e", "timestamp": T, "colour": "red"}, "colour", "not a field"),
    ("not an object", "record", "JSON object"),
]


def test_each_limit_rejects_its_record_and_keeps_the_rest(device):
    good = {"type": "event", "deviceId": "keep", "name": "kept", "timestamp": T}
    batch = []
    for bad, _, _ in BAD:
        batch += [bad, good]
    status, result = device.post(batch)
    assert status == 200
    assert result["accepted"] == len(BAD)
    assert [(r["index"], r["field"]) for r in result["rejected"]] == [(2 * i, f) for i, (_, f, _) in enumerate(BAD)]
    for rejection, (_, _, words) in zip(result["rejected"], BAD):
        assert words in rejection["reason"], rejection
    rows = [row for content in device.raw_rows("event").values() for row in content]
    assert rows == [good] * len(BAD)


def test_a_gzip_body_works(device):
    body = gzip.compress(json.dumps({"records": ONE_OF_EACH[1:2]}).encode())
    status, result = device.post(raw=body, headers={"Content-Encoding": "gzip"})
    assert (status, result) == (200, {"accepted": 1, "rejected": []})
    status, result = device.post(raw=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert status == 400 and "gzip" in result["error"]["message"]
    status, result = device.post(raw=b"{}", headers={"Content-Encoding": "br"})
    assert status == 415


def test_a_late_record_lands_in_its_own_hour_three_days_ago(device):
    late = NOW - dt.timedelta(days=3, hours=2)
    record = {"type": "event", "deviceId": "offline", "name": "late", "timestamp": late.isoformat()}
    assert device.post([record])[1]["accepted"] == 1
    rows = device.raw_rows("event")
    (name, content), = rows.items()
    assert name.startswith(f"{device.app_id}/event/{late:%Y/%m/%d/%H}/")
    assert content[0]["timestamp"] == late.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_concurrent_collect_calls_lose_nothing(device):
    def writer(thread):
        for batch in range(5):
            records = [{"type": "event", "deviceId": f"d{thread}", "name": "tick", "timestamp": T,
                        "extras": {"n": batch * 100 + i}} for i in range(100)]
            assert device.post(records)[1]["accepted"] == 100

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = [row for content in device.raw_rows("event").values() for row in content]
    assert sorted((r["deviceId"], r["extras"]["n"]) for r in rows) == sorted(
        (f"d{t}", n) for t in range(8) for n in range(500))


def test_append_blobs_rotate_before_the_block_limit(device, monkeypatch):
    monkeypatch.setattr(rawstore, "MAX_BLOCKS_PER_BLOB", 2)
    for n in range(5):
        device.post([{"type": "event", "deviceId": "d", "name": "e", "timestamp": T, "extras": {"n": n}}])
    rows = device.raw_rows("event")
    assert len(rows) == 3
    assert sorted(r["extras"]["n"] for content in rows.values() for r in content) == [0, 1, 2, 3, 4]


def test_tags_keep_the_latest_value_and_null_deletes(device):
    device.post([{"type": "tag", "deviceId": "d", "name": "a", "value": "one"},
                 {"type": "tag", "deviceId": "d", "name": "b", "value": True}])
    device.post([{"type": "tag", "deviceId": "d", "name": "a", "value": "two"},
                 {"type": "tag", "deviceId": "d", "name": "b", "value": None}])
    assert device.snapshot("tags") == [{"deviceId": "d", "name": "a", "value": "two"}]
    assert device.snapshot("devices") == []  # tags alone make no device row


def test_device_keeps_first_seen_and_the_latest_report(device):
    early, late = "2026-01-01T00:00:00.000Z", "2026-01-05T00:00:00.000Z"
    device.post([{"type": "device", "deviceId": "d", "timestamp": late, "info": {"locale": "fr_FR"}}])
    device.post([{"type": "device", "deviceId": "d", "timestamp": early, "info": {"locale": "en_US"}}])
    (row,) = device.snapshot("devices")
    assert (row["firstSeen"], row["lastSeen"], row["info"]) == (early, late, {"locale": "fr_FR"})


def test_keys_of_another_app_or_the_export_key_are_refused(device, names):
    other = apps.register_app(f"other-{names.token}", "app")
    assert device.post(ONE_OF_EACH[:1], key=device.keys.export_key)[0] == 401
    assert device.post(ONE_OF_EACH[:1], key=other.collect_key)[0] == 401
    assert device.post(ONE_OF_EACH[:1], key=device.keys.collect_key, collection=f"other-{names.token}")[0] == 401
    assert device.raw_rows() == {}


def test_malformed_batches_are_refused_whole(device):
    assert device.post(raw=b'{"records": [1,')[0] == 400
    assert device.post(raw=b'{"items": []}')[1]["error"]["code"] == "InvalidRequestContent"
    status, result = device.post([{"type": "tag"}] * 5001)
    assert status == 400 and "at most 5000" in result["error"]["message"]
    status, _ = device.post(raw=b" " * (4 * 1024 * 1024 + 1))
    assert status == 413
    bomb = gzip.compress(b" " * (17 * 1024 * 1024))
    status, result = device.post(raw=bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413 and "decompressed" in result["error"]["message"]


def test_an_app_past_its_rate_is_answered_429_with_retry_after_and_others_are_not(device, names,
                                                                                  settings_override):
    settings_override(COLLECT_RATE_LIMIT_RECORDS_PER_SECOND=50)
    events = [{"type": "event", "deviceId": "d", "name": "e", "timestamp": T, "extras": {"n": i}} for i in range(60)]
    assert device.post(events)[0] == 200  # within the two seconds' burst
    status, answer = device.post(events)
    assert status == 429 and answer["error"]["code"] == "TooManyRequests" and "50 records a second" in \
        answer["error"]["message"]
    assert sum(len(rows) for rows in device.raw_rows().values()) == 60  # the refused batch wrote nothing
    class OtherNames:
        token = f"other-{names.token}"

    assert Device(device.azurite, OtherNames()).post(events)[0] == 200


@contextlib.contextmanager
def _blob_storage_behind_a_proxy(device, settings_override):
    """The app's blob storage reached through a FaultProxy (tests/faultproxy.py) that the test drives."""
    from faultproxy import FaultProxy

    blob = f"http://127.0.0.1:{device.azurite.ports['blob']}"
    with FaultProxy(blob) as proxy:
        settings_override(AzureWebJobsStorage=device.azurite.connection_string.replace(blob, proxy.url))
        yield proxy


def test_storage_throttling_is_a_503_with_retry_after_and_nothing_acknowledged(device, settings_override):
    from faultproxy import BUSY

    with _blob_storage_behind_a_proxy(device, settings_override) as proxy:
        proxy.mode, proxy.fault_when = BUSY, "comp=appendblock"
        status, answer = device.post(ONE_OF_EACH)
        assert status == 503 and answer["error"]["code"] == "ServiceUnavailable"
        # The batch's first raw partition (its snapshot log) was tried a few times, briefly; then the batch was
        # refused whole, its five other partitions not tried.
        assert [s for _, path, s in proxy.seen if "comp=appendblock" in path] == [503] * rawstore.APPEND_TRIES
        assert [row for rows in device.raw_rows().values() for row in rows] == []
        proxy.mode = "forward"  # storage recovers: the batch sent again is stored once
        assert device.post(ONE_OF_EACH) == (200, {"accepted": len(ONE_OF_EACH), "rejected": []})
    assert sum(len(rows) for rows in device.raw_rows().values()) == len(ONE_OF_EACH)


def test_an_append_stored_whose_answer_was_lost_is_found_and_not_stored_again(device, settings_override):
    from faultproxy import LOSE

    with _blob_storage_behind_a_proxy(device, settings_override) as proxy:
        proxy.mode, proxy.fault_when = LOSE, "comp=appendblock"
        event = {"type": "event", "deviceId": "d", "name": "once", "timestamp": T}
        assert device.post([event]) == (200, {"accepted": 1, "rejected": []})
        # The append was stored and its answer lost; the next try was refused by its position, and the blob's
        # tail read back was the batch's: nothing is written twice.
        assert [s for _, path, s in proxy.seen if "comp=appendblock" in path] == [LOSE, 412]
    assert [row["name"] for rows in device.raw_rows().values() for row in rows] == ["once"]


@pytest.mark.parametrize("year", [1, 9, 99, 999, 1000, 2026, 9999])
def test_rows_are_filed_under_the_hour_partition_exports_read(year):
    moment = dt.datetime(year, 3, 4, 5, 6, tzinfo=dt.UTC)
    record = {"type": "event", "deviceId": "d", "name": "e", "timestamp": f"{year:04d}-03-04T05:06:00.000Z"}
    assert list(rawstore.partition_lines("a~b", [record])) == [rawstore.hour_prefix("a~b", "event", moment)]


def test_a_partition_idle_past_the_limit_is_forgotten_and_its_later_rows_still_land(device, monkeypatch):
    monkeypatch.setattr(rawstore, "PARTITION_IDLE_SECONDS", 0.2)
    writer = rawstore.RawWriter()
    early, other = f"{device.app_id}/event/2026/01/01/00/", f"{device.app_id}/event/2026/01/01/01/"
    writer.append_lines(early, [b'{"n":1}\n'])
    time.sleep(0.3)
    writer.append_lines(other, [b'{"n":2}\n'])
    assert list(writer._partitions) == [other]  # the process keeps no entry for the idle partition
    writer.append_lines(early, [b'{"n":3}\n'])
    stored = {name: blob_rows for name, blob_rows in device.raw_rows("event").items() if name.startswith(early)}
    assert sorted(row["n"] for blob_rows in stored.values() for row in blob_rows) == [1, 3]
    assert len(stored) == 2  # a new blob after it was forgotten
