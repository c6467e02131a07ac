"""Collect fed as a backend that forwards its users' data feeds it: gzip batches of 500 records, each carrying
dozens of devices (many sharing a snapshot bucket) with their history, reports, tags, tokens and push
feedback, then what the devices sent later (a newer report, a stale one, a tag changed, a tag removed, a new
token). Every batch is taken whole, and every export type, in every format, holds exactly the state and the
history those batches describe."""

from __future__ import annotations

import datetime as dt
import uuid
import zlib

import expected
import pytest
from backendplan import CASES, LAST, batches, post, reference_rows
from exporting import FORMATS, as_read, run_export

from sampledata import Plan, backend_phases, backend_records
from shared.export import planning, snapshotfold, snapshotstate
from shared.export.registry import ROUTES
from shared.export.spec import ExportScope
from shared.ingest import rawstore, snapshots
from shared.platform import apps
from shared.tasks import jobs

PLAN = Plan(devices=300, days=2, last_day=LAST, seed=21)


@pytest.fixture(scope="module")
def backend_app(app_env):
    collection = f"backend{uuid.uuid4().hex[:8]}"
    keys = apps.register_app(collection, "game")
    app_id = f"{collection}~game"
    sent = []
    for phase in backend_phases(PLAN):
        for batch in batches(phase):
            key = str(uuid.uuid4())
            status, answer, _ = post(collection, "game", keys.collect_key, batch, key)
            assert (status, answer) == (200, {"accepted": len(batch), "rejected": []})
            sent.append((batch, key))
    # A batch whose answer the backend lost is sent again with its key: stored once, the first answer replayed.
    batch, key = sent[0]
    status, answer, headers = post(collection, "game", keys.collect_key, batch, key)
    assert (status, answer, headers.get("Idempotent-Replayed")) == (
        200, {"accepted": len(batch), "rejected": []}, "true")
    return app_id, [batch for batch, _ in sent]


def test_the_batches_are_a_backends(backend_app):
    """The class of input this module is about: batches with many devices, several in one bucket."""
    _, sent = backend_app
    shared_buckets = 0
    for batch in sent:
        reported = {record["deviceId"] for record in batch if record["type"] == "device"}
        # the 16 buckets of the table store whose transactions a batch like this broke
        buckets = [zlib.crc32(device.encode()) % 16 for device in reported]
        shared_buckets += len(buckets) - len(set(buckets))
    assert max(len({r["deviceId"] for r in batch}) for batch in sent) >= 30
    assert shared_buckets >= 100


@pytest.mark.parametrize("export_format", FORMATS)
@pytest.mark.parametrize("route, fields", CASES, ids=[case[0] for case in CASES])
def test_every_export_holds_what_the_backend_sent(backend_app, route, fields, export_format):
    app_id, _ = backend_app
    want = reference_rows(list(backend_records(PLAN)), route)
    assert want, "the plan gives every export something to hold"
    got = run_export(app_id, route, export_format, **fields)
    want = as_read(want, ROUTES[route].export_type, export_format)
    if route == "tokens":
        for row in got:
            assert row.pop("updated")  # when the token was received: set, and not known to the test
        for row in want:
            row.pop("updated", None)
    assert expected.canonical(got) == expected.canonical(want)


SNAPSHOT_CASES = [case for case in CASES if case[0] in ("tags", "devices", "tokens", "feedbackByCampaign",
                                                         "feedbackByDate")]


def snapshot_rows(app_id, route, fields, export_format="JsonBlob"):
    rows = run_export(app_id, route, export_format, **fields)
    for row in rows:
        row.pop("updated", None)  # a token's receive time: set, and not known to the reference
    return expected.canonical(rows)


def reference(records, route):
    return expected.canonical(as_read(reference_rows(records, route), ROUTES[route].export_type, "JsonBlob"))


@pytest.mark.parametrize("route, fields", SNAPSHOT_CASES, ids=[case[0] for case in SNAPSHOT_CASES])
def test_a_log_spread_over_many_bucket_files_folds_the_same(backend_app, monkeypatch, route, fields):
    """A log larger than one fold's share of memory goes through bucket files: the rows are the same."""
    app_id, _ = backend_app
    in_memory = snapshot_rows(app_id, route, fields)
    monkeypatch.setattr(snapshotfold, "FOLD_BYTES", 16 * 1024)
    assert snapshotfold.bucket_count(log_sources(app_id)) > 8
    assert snapshot_rows(app_id, route, fields) == in_memory


def log_sources(app_id):
    return [(blob.name, blob.size) for blob in rawstore.list_all(app_id, snapshots.LOG_TYPE)]


@pytest.fixture
def compacting_app(app_env, names):
    collection = f"compact{names.token}"
    keys = apps.register_app(collection, "game")
    plan = Plan(devices=120, days=1, last_day=LAST, seed=5)
    first, later = backend_phases(plan)
    sent = []

    def send(records):
        for batch in batches(records):
            status, answer, _ = post(collection, "game", keys.collect_key, batch, str(uuid.uuid4()))
            assert (status, answer["rejected"]) == (200, []), answer
            sent.extend(batch)

    return f"{collection}~game", send, first, later, sent


def test_compaction_keeps_every_export_and_the_log_after_it_folds_on_top(compacting_app, monkeypatch):
    app_id, send, first, later, sent = compacting_app
    send(first)
    before = {route: snapshot_rows(app_id, route, fields) for route, fields in SNAPSHOT_CASES}
    generation = snapshotstate.compact(app_id)
    assert generation is not None and snapshots.current_generation(app_id) == generation
    assert snapshotstate.compact(app_id) is None  # nothing came since
    plan = planning.snapshot_log(_job(app_id).spec, lambda index, day: "unused")[0]
    assert plan.sources == () and plan.buckets == generation.buckets and plan.state
    for route, fields in SNAPSHOT_CASES:
        assert snapshot_rows(app_id, route, fields) == before[route] == reference(sent, route), route
    send(later)  # a newer report, a stale one, a tag changed and one removed, a new token: on top of the state
    for route, fields in SNAPSHOT_CASES:
        for export_format in FORMATS:
            want = as_read(reference_rows(sent, route), ROUTES[route].export_type, export_format)
            for row in want:
                row.pop("updated", None)
            assert snapshot_rows(app_id, route, fields, export_format) == expected.canonical(want), route
    second = snapshotstate.compact(app_id)
    assert second is not None and second.name > generation.name
    for route, fields in SNAPSHOT_CASES:
        assert snapshot_rows(app_id, route, fields) == reference(sent, route), route
    # The state outgrew its buckets: the whole log is folded again, into more of them.
    monkeypatch.setattr(snapshotfold, "FOLD_BYTES", 16 * 1024)
    send([{"type": "tag", "deviceId": "late-device", "name": "x", "value": 1}])
    third = snapshotstate.compact(app_id)
    assert third is not None and third.buckets > second.buckets
    for route, fields in SNAPSHOT_CASES:
        assert snapshot_rows(app_id, route, fields) == reference(sent, route), route


def _job(app_id):
    now = dt.datetime.now(dt.UTC)
    return jobs.ExportJob(app_id=app_id, id=jobs.new_job_id(now), route="devices",
                          scope=ExportScope(export_type="Device", export_format="JsonBlob"), container_url="http://127.0.0.1:1/unused/unused",
                          sealed_sas="", sas_expires=now, date_created=now)
