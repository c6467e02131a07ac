"""The export cases a backend's batches are checked against, the batches themselves, and Collect called with
one: shared by the tests that feed the service as a backend does."""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
import json

import expected
from helpers import app_path, http_request

import Collect
from sampledata.generator import BACKEND_BATCH

LAST = dt.date(2026, 5, 4)
FIRST = LAST - dt.timedelta(days=1)
CASES = [
    ("activities", {"start_date": FIRST, "end_date": LAST}),
    ("sessions", {"start_date": FIRST, "end_date": LAST}),
    ("events", {"start_date": FIRST, "end_date": LAST}),
    ("jobs", {"start_date": FIRST, "end_date": LAST}),
    ("errors", {"start_date": FIRST, "end_date": LAST}),
    ("crashes", {"start_date": FIRST, "end_date": LAST}),
    ("tags", {}), ("devices", {}), ("tokens", {"export_user_id": True}),
    ("feedbackByCampaign", {"campaign_type": "DataPush", "campaign_ids": [1]}),
    ("feedbackByDate", {"campaign_type": "Poll",
                        "campaign_window_start": dt.datetime.combine(LAST, dt.time(), dt.UTC),
                        "campaign_window_end": dt.datetime.combine(LAST, dt.time(23, 59, 59), dt.UTC)}),
]


def batches(records):
    iterator = iter(records)
    while batch := list(itertools.islice(iterator, BACKEND_BATCH)):
        yield batch


def post(collection, app, collect_key, batch, key):
    body = gzip.compress(json.dumps({"records": batch}).encode())
    request = http_request("POST", app_path(collection, app) + "/collect", key=collect_key, raw=body,
                           headers={"Content-Encoding": "gzip", "Idempotency-Key": key},
                           route_params={"appCollection": collection, "appName": app})
    response = Collect.main(request)
    return response.status_code, json.loads(response.get_body()), response.headers


def reference_rows(records, route):
    """What an export of ``route`` (with its CASES fields) holds after ``records``, computed independently."""
    return expected.for_route(records, route, first=FIRST, last=LAST, campaign=("DataPush", [1]),
                              window=("Poll", f"{LAST.isoformat()}T00:00:00.000Z", f"{LAST.isoformat()}T23:59:59.000Z"))
