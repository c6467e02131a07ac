"""A compaction of the snapshot log that read the log before an erasure was asked, and publishes its generation
after the 202: an export that starts after the 202 reads the new generation's state files without the erased rows
(they are not in the erasure's cut), while a generation started after the request, and what it holds of the ids
that came later, is read as it is."""

from __future__ import annotations

from erasing import crank_erasures, erasure_api
from exporting import run_export
from test_erasure import BackendApp

from shared.export import snapshotfold, snapshotstate
from shared.ingest import snapshots


def _tags_of(backend: BackendApp, device: str) -> list[dict]:
    return [row for row in run_export(backend.id, "tags", "JsonBlob") if row["deviceId"] == device]


def test_a_generation_started_before_the_request_is_read_without_the_rows_and_one_after_as_it_is(app_env,
                                                                                                 monkeypatch):
    backend = BackendApp()  # one generation, then more snapshot records in the log after it
    device = sorted({r["deviceId"] for r in backend.sent if r["type"] == "tag"})[0]
    assert _tags_of(backend, device)
    asked = []
    original = snapshotfold.folded

    def folded_then_asked(*args, **kwargs):
        done = list(original(*args, **kwargs))  # every read of the log and the state made, before the request
        status, task, _ = erasure_api(backend.collection, backend.name, backend.keys.export_key, "POST",
                                      body={"deviceIds": [device]})
        assert status == 202, task
        asked.append(task["id"])
        yield from done  # the files and the manifest are written after the 202

    with monkeypatch.context() as patched:
        patched.setattr(snapshotfold, "folded", folded_then_asked)
        generation = snapshotstate.compact(backend.id)
    assert generation is not None and asked
    assert snapshots.current_generation(backend.id).name == generation.name
    # The erasure has not run (nothing cranks its queue): an export that starts now leaves the device out.
    assert _tags_of(backend, device) == []

    # A tag Collect acknowledges after the request is new data, also once a generation started since holds it.
    backend.send([{"type": "tag", "deviceId": device, "name": "after_the_request", "value": 1}])
    later = snapshotstate.compact(backend.id)
    assert later is not None and later.name > generation.name
    assert [row["name"] for row in _tags_of(backend, device)] == ["after_the_request"]

    crank_erasures(backend.id, asked[0])
    assert [row["name"] for row in _tags_of(backend, device)] == ["after_the_request"]
