"""Compaction of the snapshot log under faults and over time: a compaction that dies before publishing changes
nothing an export reads, the timer compacts the apps that are due, and replaced generations are removed only
once no export in flight can still read them."""

from __future__ import annotations

import datetime as dt

import pytest
from exporting import run_export
from test_collect import Device, T

from shared.export import snapshotstate
from shared.ingest import rawstore, snapshots
from shared.platform import storage

REPORT = {"type": "device", "deviceId": "d-1", "timestamp": T, "info": {"phoneModel": "one"}}


@pytest.fixture
def device(app_env, names):
    return Device(app_env, names)


def state_folders(app_id):
    return sorted({blob.name.split("/")[-2] for blob in storage.container(rawstore.RAW_CONTAINER).list_blobs(
        name_starts_with=f"{app_id}/{snapshots.STATE_TYPE}/")})


def test_a_compaction_that_dies_before_publishing_changes_nothing_and_is_cleaned_up(device, monkeypatch):
    assert device.post([REPORT, {"type": "tag", "deviceId": "d-1", "name": "level", "value": 1}])[0] == 200
    first = snapshotstate.compact(device.app_id)
    assert device.post([dict(REPORT, info={"phoneModel": "two"})])[0] == 200
    before = run_export(device.app_id, "devices", "JsonBlob")
    assert before[0]["info"] == {"phoneModel": "two"}

    def died(generation):
        raise OSError("the process was killed")

    monkeypatch.setattr(snapshots, "publish", died)
    with pytest.raises(OSError):
        snapshotstate.compact(device.app_id)
    monkeypatch.undo()
    assert snapshots.current_generation(device.app_id) == first
    assert len(state_folders(device.app_id)) == 2  # the dead compaction's files, which no manifest names
    assert run_export(device.app_id, "devices", "JsonBlob") == before
    second = snapshotstate.compact(device.app_id)
    assert second is not None and run_export(device.app_id, "devices", "JsonBlob") == before
    # Within an export's deadline nothing goes; past it, the replaced generation and the dead files do.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=25)
    assert snapshotstate.remove_old_generations(device.app_id, dt.datetime.now(dt.UTC)) == 0
    assert snapshotstate.remove_old_generations(device.app_id, later) == 2
    assert state_folders(device.app_id) == [second.name]
    assert run_export(device.app_id, "devices", "JsonBlob") == before


def test_the_timer_compacts_the_apps_that_are_due_at_most_every_ten_minutes(device, monkeypatch):
    monkeypatch.setattr(snapshotstate, "_last_sweep", None)
    monkeypatch.setattr(snapshotstate.apps, "list_app_ids", lambda: iter([device.app_id]))
    assert device.post([REPORT])[0] == 200
    now = dt.datetime.now(dt.UTC)
    assert not snapshotstate.due(device.app_id, now)  # a small log without a state: each export folds it
    monkeypatch.setattr(snapshotstate, "COMPACT_TAIL_BYTES", 64)
    assert snapshotstate.due(device.app_id, now)
    assert snapshotstate.compact_due(now) == 1
    assert snapshots.current_generation(device.app_id) is not None
    assert not snapshotstate.due(device.app_id, now)  # nothing since
    monkeypatch.setattr(snapshotstate, "COMPACT_TAIL_BYTES", 1024 * 1024)
    assert device.post([dict(REPORT, deviceId="d-2")])[0] == 200
    assert not snapshotstate.due(device.app_id, now)  # a little since a fresh state: the export folds it
    assert snapshotstate.due(device.app_id, now + snapshotstate.COMPACT_EVERY + dt.timedelta(minutes=1))
    assert snapshotstate.compact_due(now) == 0  # swept less than ten minutes ago in this process
    assert {row["deviceId"] for row in run_export(device.app_id, "devices", "JsonBlob")} == {"d-1", "d-2"}


@pytest.mark.parametrize("export_format", ["JsonBlob", "CsvBlob", "ParquetBlob"])
def test_a_tag_removed_after_the_state_leaves_an_empty_export(device, export_format):
    assert device.post([{"type": "tag", "deviceId": "d-1", "name": "level", "value": 1}])[0] == 200
    assert snapshotstate.compact(device.app_id) is not None
    (row,) = run_export(device.app_id, "tags", export_format)
    assert (row["deviceId"], row["name"]) == ("d-1", "level")
    assert device.post([{"type": "tag", "deviceId": "d-1", "name": "level", "value": None}])[0] == 200
    assert run_export(device.app_id, "tags", export_format) == []
