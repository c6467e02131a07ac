"""Hostile and careless input, as the collect key (shipped inside every app) lets anyone send it: each poison
record found by probing is refused with its field and the rest of its batch kept; nothing a client sends
produces a 5xx; a batch is stored whole or not at all."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from azure.core.exceptions import HttpResponseError
from helpers import app_path, container_sas_url, http_request
from test_collect import NOW, Device, T

import ExportTasks
from shared.ingest import rawstore, snapshots
from shared.platform import apps

FUTURE_YEAR = "9999-06-01T00:00:00Z"
EVENT = {"type": "event", "deviceId": "d", "name": "e", "timestamp": T}


def nested(levels):
    value = 1
    for _ in range(levels):
        value = {"a": value}
    return value


POISON = [
    ({"type": "token", "deviceId": "d", "token": "tok\ud800"}, "token", "lone surrogate"),
    ({"type": "tag", "deviceId": "d", "name": "t", "value": "v\udfff"}, "value", "lone surrogate"),
    ({"type": "device", "deviceId": "d", "info": {"phoneModel": "\ud83d"}}, "info.phoneModel", "lone surrogate"),
    (dict(EVENT, name="\ud800x"), "name", "lone surrogate"),
    (dict(EVENT, extras={"k": ["ok", "\udc00"]}), "extras.k[1]", "lone surrogate"),
    (dict(EVENT, extras={"k": {"\ud800": 1}}), "extras.k", "key holding a lone surrogate"),
    (dict(EVENT, extras={"deep": nested(300)}), "extras.deep" + ".a" * 14, "more than 16 levels"),
    (dict(EVENT, timestamp=FUTURE_YEAR), "timestamp", "more than a day after"),
    (dict(EVENT, timestamp="0001-01-01T00:00:00+01:00"), "timestamp", "outside the years 1 to 9999"),
    (dict(EVENT, timestamp="9999-12-31T23:30:00-01:00"), "timestamp", "outside the years 1 to 9999"),
    ({"type": "activity", "deviceId": "d", "sessionId": "s", "name": "a", "start": T, "end": FUTURE_YEAR},
     "end", "more than a day after"),
    # A trailing newline once passed the checks ($ matches before it) and then failed every Table write.
    ({"type": "token", "deviceId": "dev\n", "token": "t"}, "deviceId", "holds '\\n'"),
    ({"type": "tag", "deviceId": "d", "name": "level\n", "value": 1}, "name", "a-z, A-Z, 0-9 and _"),
    (dict(EVENT, extras={"k\n": 1}), "extras", "must be 1 to 64 of a-z"),
    # A type that is not text once raised TypeError (unhashable) out of the checks: a 500.
    ({"type": ["event"], "deviceId": "d"}, "type", "must be one of"),
    ({"type": {"event": 1}, "deviceId": "d"}, "type", "must be one of"),
    # Flat extras, as the quick path takes them (shared.ingest.records.quick_row), still fully checked.
    (dict(EVENT, extras={"k": "\udc00"}), "extras.k", "lone surrogate"),
    (dict(EVENT, extras={"a,b": 1}), "extras", "must be 1 to 64 of a-z"),
    (dict(EVENT, extras={"k": 2**63}), "extras", "64-bit range"),
    (dict(EVENT, extras={"k": "x" * 1100}), "extras", "bytes once encoded"),
    (dict(EVENT, timestamp="2026-02-30T00:00:00.000Z"), "timestamp", "not an ISO 8601 time"),
    (dict(EVENT, timestamp=T, jobId=""), "jobId", "must be 1 to"),
]


@pytest.fixture
def device(app_env, names):
    return Device(app_env, names)


def test_each_poison_record_is_refused_by_field_and_the_rest_of_the_batch_is_kept(device):
    good = dict(EVENT, deviceId="kept")
    batch = []
    for poison, _, _ in POISON:
        batch += [poison, good]
    status, answer = device.post(batch)
    assert status == 200, answer
    assert answer["accepted"] == len(POISON)
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [(2 * i, f) for i, (_, f, _) in enumerate(POISON)]
    for rejection, (_, _, reason) in zip(answer["rejected"], POISON):
        assert reason in rejection["reason"]
    (rows,) = device.raw_rows("event").values()
    assert [row["deviceId"] for row in rows] == ["kept"] * len(POISON)
    assert device.snapshot("tokens") == []
    assert device.snapshot("tags") == []


def test_integers_of_thousands_of_digits_are_refused_by_field_not_by_a_500(device):
    digits = "7" * 5000
    raw = (f'{{"records": [{{"type": "tag", "deviceId": "d", "name": "n", "value": {digits}}}, '
           f'{{"type": "push", "deviceId": "d", "campaignId": {digits}, "campaignType": "Poll", '
           f'"action": "pushed", "timestamp": "{T}"}}, {json.dumps(EVENT)}]}}').encode()
    status, answer = device.post(raw=raw)
    assert status == 200, answer
    assert answer["accepted"] == 1
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [(0, "value"), (1, "campaignId")]
    assert all("5000 digits" in r["reason"] for r in answer["rejected"])


@pytest.mark.parametrize("body", [b'{"records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                                  b'{"records": [' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"]}"])
def test_a_body_nested_past_any_reader_is_a_400(device, body):
    status, answer = device.post(raw=body)
    assert status == 400
    assert answer["error"]["code"] == "InvalidRequestContent"
    assert "nests" in answer["error"]["message"]


def test_campaign_ids_past_32_bits_are_stored_and_read_back(device):
    big = 2**31 + 5
    status, answer = device.post([{"type": "push", "deviceId": "d", "campaignId": big, "campaignType": "Poll",
                                   "action": "pushed", "timestamp": T}, EVENT])
    assert (status, answer) == (200, {"accepted": 2, "rejected": []})
    (row,) = device.snapshot("feedbackByCampaign", campaign_type="Poll", campaign_ids=[big])
    assert row["campaignId"] == big


def test_a_log_append_that_fails_leaves_nothing_of_the_batch_and_the_retry_stores_it_once(device, monkeypatch):
    """The snapshot log is appended first: when storage refuses it, the batch's other rows are not written."""
    batch = [EVENT, {"type": "tag", "deviceId": "d", "name": "level", "value": 3}]
    writer = rawstore.writer()
    real = writer._append

    def refused(prefix, partition, member):
        if f"/{snapshots.LOG_TYPE}/" in prefix:
            raise HttpResponseError(message="ServerBusy")
        return real(prefix, partition, member)

    monkeypatch.setattr(writer, "_append", refused)
    status, answer = device.post(batch)
    assert status == 503 and answer["error"]["code"] == "ServiceUnavailable"
    assert device.raw_rows() == {}
    monkeypatch.setattr(writer, "_append", real)
    assert device.post(batch) == (200, {"accepted": 2, "rejected": []})
    (rows,) = device.raw_rows("event").values()
    assert len(rows) == 1
    assert device.snapshot("tags") == [{"deviceId": "d", "name": "level", "value": 3}]


def test_concurrent_reports_of_one_device_all_land(device):
    reports = [{"type": "device", "deviceId": "busy", "timestamp": (NOW - dt.timedelta(minutes=60 - i)).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"), "info": {"phoneModel": f"model-{i}"}} for i in range(24)]
    answers = []

    def send(report):
        answers.append(device.post([report]))

    threads = [threading.Thread(target=send, args=(report,)) for report in reports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(status for status, _ in answers) == [200] * len(reports), answers
    (row,) = device.snapshot("devices")
    assert row["info"] == {"phoneModel": "model-23"}
    assert row["firstSeen"] == reports[0]["timestamp"] and row["lastSeen"] == reports[-1]["timestamp"]


class ExportApi:
    def __init__(self, azurite, names):
        self.azurite = azurite
        self.collection = f"api-{names.token}"
        self.key = apps.register_app(self.collection, "app").export_key
        self.container_url = container_sas_url(azurite, names.container("hostile"))

    def call(self, method, rest, *, body=None, raw=None, params=None):
        request = http_request(method, app_path(self.collection, "app") + f"/exportTasks/{rest}", key=self.key,
                               body=body, raw=raw, params=params,
                               route_params={"appCollection": self.collection, "appName": "app", "rest": rest})
        response = ExportTasks.main(request)
        return response.status_code, json.loads(response.get_body())


@pytest.fixture
def api(app_env, names):
    return ExportApi(app_env, names)


@pytest.mark.parametrize("raw", [b"[" * 60_000, b'{"description": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                                 b'{"description": ' + b'{"a":' * 20 + b"1" + b"}" * 20 + b"}"])
def test_export_bodies_nested_past_reason_are_a_400(api, raw):
    status, answer = api.call("POST", "tags", raw=raw)
    assert status == 400, answer
    assert "nests" in answer["error"]["message"]


def test_feedback_by_date_at_the_edge_of_the_calendar_is_a_400(api):
    status, answer = api.call("POST", "feedbackByDate", body={
        "containerUrl": api.container_url, "campaignType": "Poll",
        "campaignWindowStart": "0001-01-01T00:00:00+01:00", "campaignWindowEnd": "2015-01-01T00:00:00Z"})
    assert status == 400
    assert "campaignWindowStart is outside the years 1 to 9999" in answer["error"]["message"]


@pytest.mark.parametrize("value", ["٣", "²", "1" * 5000, "-1", "1e3", " 5"])
@pytest.mark.parametrize("name", ["$top", "$skip"])
def test_paging_numbers_in_other_digits_or_of_thousands_of_digits_are_a_400(api, name, value):
    status, answer = api.call("GET", "", params={"api-version": "2014-12-01", name: value})
    assert status == 400, answer
    assert answer["error"]["message"].startswith(f"{name} must be a whole number")


def test_a_lone_surrogate_in_an_export_body_is_a_400_naming_the_field(api):
    raw = (f'{{"containerUrl": "{api.container_url}", "description": "bad \\ud800"}}').encode()
    status, answer = api.call("POST", "tags", raw=raw)
    assert status == 400
    assert answer["error"]["message"].startswith("description holds a lone surrogate")
    status, answer = api.call("POST", "tags", raw=b'{"\\udfff": 1}')
    assert status == 400 and "key holding a lone surrogate" in answer["error"]["message"]


UNICODE_IDS = ["dev-0007-é", "dev-0007-e\u0301", "устройство-1", "端末-٣", "جهاز_٤", "डिवाइस-१"]


def test_device_ids_in_any_script_are_accepted_as_nfc_and_separators_stay_refused(device):
    accepted = [{"type": "token", "deviceId": device_id, "token": f"tok-{index}"}
                for index, device_id in enumerate(UNICODE_IDS)]
    refused = [{"type": "token", "deviceId": device_id, "token": "t"}
               for device_id in ("a/b", "a\\b", "a#b", "a?b", "a|b", "a b", "a\x07b", "a\u200bb", "a\u202eb")]
    status, answer = device.post(accepted + refused)
    assert status == 200, answer
    assert answer["accepted"] == len(accepted)
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [
        (len(accepted) + i, "deviceId") for i in range(len(refused))]
    assert all("only letters, digits (any script)" in r["reason"] for r in answer["rejected"])
    stored = {row["deviceId"]: row["token"] for row in device.snapshot("tokens")}
    # The decomposed é was stored composed (NFC): the same device as the composed one, its later token won.
    assert stored == {"dev-0007-é": "tok-1", "устройство-1": "tok-2", "端末-٣": "tok-3", "جهاز_٤": "tok-4",
                      "डिवाइस-१": "tok-5"}
