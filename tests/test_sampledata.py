"""The sample-data generator: deterministic, every record kind valid, loaded into the stores."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections import Counter

from azure.storage.blob import BlobServiceClient

from sampledata import Plan, load, records
from shared.ingest import rawstore
from shared.ingest.records import RECORD_TYPES, normalize

PLAN = Plan(devices=40, days=2, last_day=dt.date(2026, 3, 1), seed=7)


def test_same_seed_same_records_and_every_kind_is_valid():
    first = list(records(PLAN))
    assert first == list(records(PLAN))
    assert first != list(records(Plan(devices=40, days=2, last_day=dt.date(2026, 3, 1), seed=8)))
    assert set(Counter(r["type"] for r in first)) == set(RECORD_TYPES)
    for record in first:
        assert normalize(record) == record


def test_load_writes_the_historical_records_into_their_hour_partitions(app_env, names):
    app_id = f"gen-{names.token}~app"
    counts = load(app_id, PLAN)
    expected = [r for r in records(PLAN) if r["type"] == "event"]
    assert counts["event"] == len(expected)
    container = BlobServiceClient.from_connection_string(app_env.connection_string).get_container_client(
        rawstore.RAW_CONTAINER)
    stored = []
    for blob in container.list_blobs(name_starts_with=f"{app_id}/event/"):
        rows = [json.loads(line) for line in gzip.decompress(container.download_blob(blob.name).readall()).splitlines()]
        for row in rows:
            assert blob.name.startswith(rawstore.hour_prefix(app_id, "event", rawstore.hour_of(row)))
        stored += rows
    def key(r):
        return r["deviceId"], r["timestamp"], r["name"], json.dumps(r["extras"], sort_keys=True)

    assert sorted(stored, key=key) == sorted(expected, key=key)
