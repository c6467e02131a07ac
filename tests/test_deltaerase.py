"""Erasure in the DeltaLake tables the service wrote (shared.export.deltaerase, shared.pipelines.laketables): the
rows of the erased devices and users deleted in one commit and every other row kept exactly, as the deltalake
library, pyarrow over the live files and time travel read the table; the files that held them removed at once when
asked (no Parquet file left in the container holds an erased id) or once the retention has passed; erasing again
changes nothing; ids with quotes and any script; a pipeline committing beside the erasure loses nothing; a table
whose SAS expired or lost its rights is reported, not crashed on."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import threading

import expected
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from erasing import crank_erasures, erasure_api
from helpers import container_sas_url
from pipelining import PipelineApp
from test_deltalake import DAY, FIRST, PLAN, Tables, as_json, ingested

from sampledata import load
from shared.erasure import service
from shared.export import deltadelete, deltaerase, deltatable
from shared.export.destination import Destination, parse_destination
from shared.pipelines.laketables import lake_tables


@pytest.fixture
def tables(app_env, names):
    found = Tables(app_env, names)
    load(found.app.id, PLAN)
    return found


def events_table(tables: Tables) -> deltaerase.LakeTable:
    tables.export("events", startDate=FIRST.isoformat(), endDate=DAY.isoformat())
    found = {table.path: table for table in lake_tables(tables.app.id)}
    return found["delta/Event"]


def data_files(url: str, prefix: str) -> dict[str, list[dict]]:
    """Every Parquet data file under ``prefix`` in the container (whether a version names it or not), its rows."""
    container = parse_destination(url).container_client()
    return {blob.name: pq.read_table(io.BytesIO(container.download_blob(blob.name).readall())).to_pylist()
            for blob in container.list_blobs(name_starts_with=prefix)
            if blob.name.endswith(".parquet") and "/_delta_log/" not in blob.name}


def log_mentions(url: str, prefix: str, ids: list[str]) -> list[str]:
    """The files of the table's log (its commits as JSON, its checkpoints as Parquet) that hold one of the ids."""
    container = parse_destination(url).container_client()
    found = []
    for blob in container.list_blobs(name_starts_with=f"{prefix}/_delta_log/"):
        data = container.download_blob(blob.name).readall()
        text = str(pq.read_table(io.BytesIO(data)).to_pylist()) if blob.name.endswith(".parquet") else data.decode()
        if any(json_id in text for value in ids for json_id in (value, json.dumps(value)[1:-1])):
            found.append(blob.name)
    return found


def live_rows(tables: Tables, path: str) -> list[dict]:
    """The rows of the files the current version names, read by pyarrow as a reader without the library would."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    endpoint = tables.options["azure_storage_endpoint"].split("//")[1].split("/")[0]
    filesystem = pafs.AzureFileSystem(account_name=tables.options["azure_storage_account_name"],
                                      sas_token="?" + tables.options["azure_storage_sas_token"],
                                      blob_storage_authority=endpoint, blob_storage_scheme="http",
                                      dfs_storage_authority=endpoint, dfs_storage_scheme="http")
    paths = [uri.removeprefix("az://") for uri in tables.table(path).file_uris()]
    return pads.dataset(paths, filesystem=filesystem, format="parquet").to_table().to_pylist()


def test_a_devices_rows_go_in_one_commit_every_other_row_stays_and_its_files_go_after_the_retention(tables):
    table = events_table(tables)
    assert table.task_ids and table.pipelines == () and table.url == parse_destination(tables.url).url
    assert table.retention_days == deltatable.DEFAULT_RETENTION_DAYS and "sig=" not in repr(table)
    everything = ingested(FIRST, DAY)
    device = sorted({row["deviceId"] for row in everything})[3]
    kept = expected.canonical([row for row in everything if row["deviceId"] != device])
    before = tables.table(table.path).version()

    erased = deltaerase.erase_rows(table, [device], [], remove_files_now=False, erasure_id="erasure-1")
    assert erased.rows_deleted == sum(row["deviceId"] == device for row in everything) > 0
    assert erased.version == before + 1 and tables.table(table.path).version() == before + 1
    assert erased.files_rewritten >= 1 and erased.files_removed == 0
    assert expected.canonical(tables.rows(table.path, "Event")) == kept
    assert expected.canonical(as_json("Event", live_rows(tables, table.path))) == kept
    history = tables.table(table.path).history(1)[0]
    assert history["operation"] == "MERGE" and history["engagementExport.erasure"] == "erasure-1"
    assert device not in str(history)
    protocol = tables.table(table.path).protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)
    # The app's retention keeps the version before: time travel still reads the device's rows, until the files go.
    assert expected.canonical(tables.rows(table.path, "Event", version=before)) == expected.canonical(everything)
    remove_at = erased.remove_files_at
    assert remove_at is not None and dt.timedelta(days=7) < remove_at - dt.datetime.now(dt.UTC) < dt.timedelta(days=8)

    # Erasing again deletes nothing and commits nothing.
    again = deltaerase.erase_rows(table, [device], [], remove_files_now=False)
    assert (again.rows_deleted, again.version, again.files_rewritten) == (0, None, 0)
    assert tables.table(table.path).version() == before + 1

    # Before the retention has passed, nothing goes; once it has (here: a retention of 0 days), the files that
    # held the rows go though no commit landed on the table since.
    assert deltaerase.remove_expired_files(table) == 0
    assert any(device in str(rows) for rows in data_files(tables.url, table.path).values())
    removed = deltaerase.remove_expired_files(dataclasses.replace(table, retention_days=0))
    assert removed == erased.files_rewritten
    assert not any(row["deviceId"] == device for rows in data_files(tables.url, table.path).values() for row in rows)
    assert expected.canonical(tables.rows(table.path, "Event")) == kept
    version = tables.table(table.path).version()
    assert deltaerase.remove_expired_files(dataclasses.replace(table, retention_days=0)) == 0
    assert tables.table(table.path).version() == version  # nothing to remove: no VACUUM commits either


def test_removed_at_once_no_file_left_holds_the_ids_and_old_versions_read_none_of_them(tables):
    table = events_table(tables)
    tables.export("events", startDate=DAY.isoformat(), endDate=DAY.isoformat())  # files an overwrite dropped
    everything = ingested(FIRST, DAY)
    # An erasure that left the files for the retention: the files the library rewrote (as the table's compaction
    # does) carry the bounds of their text columns in the log, the smallest device and user ids of each among them.
    first, device = sorted({row["deviceId"] for row in everything})[:2]
    assert deltaerase.erase_rows(table, [first], [], remove_files_now=False).rows_deleted
    everything = [row for row in everything if row["deviceId"] != first]
    user = sorted({row["userId"] for row in everything if row.get("userId")})[0]
    gone = [row for row in everything if row["deviceId"] == device or row.get("userId") == user]
    kept = expected.canonical([row for row in everything if row not in gone])
    assert gone and kept
    assert log_mentions(tables.url, table.path, [device])

    erased = deltaerase.erase_rows(table, [device], [user], remove_files_now=True)
    assert erased.rows_deleted == len(gone) and erased.files_removed > erased.files_rewritten
    assert erased.remove_files_at is None
    assert expected.canonical(tables.rows(table.path, "Event")) == kept
    assert expected.canonical(as_json("Event", live_rows(tables, table.path))) == kept
    files = data_files(tables.url, table.path)
    assert files and not any(row["deviceId"] == device or row.get("userId") == user
                             for rows in files.values() for row in rows)
    assert log_mentions(tables.url, table.path, [device, user]) == []  # nor do the statistics the log kept
    assert tables.table(table.path).metadata().configuration["delta.logRetentionDuration"] == "interval 30 days"
    for version in range(erased.version or 0):  # each older version either cannot be read or holds none of them
        try:
            old = tables.table(table.path, version).to_pyarrow_table().to_pylist()
        except Exception:  # noqa: BLE001 - its files are gone, as they should be
            continue
        assert not any(row["deviceId"] == device or row.get("userId") == user for row in old)

    version = tables.table(table.path).version()
    again = deltaerase.erase_rows(table, [device], [user], remove_files_now=True)
    assert (again.rows_deleted, again.files_removed, again.version) == (0, 0, None)
    assert tables.table(table.path).version() == version


def test_a_table_without_a_user_column_is_erased_by_device_and_a_user_alone_changes_nothing(tables):
    tables.export("tags")
    table = {table.path: table for table in lake_tables(tables.app.id)}["delta/Tag"]
    rows = tables.table(table.path).to_pyarrow_table().to_pylist()
    device = rows[0]["deviceId"]
    version = tables.table(table.path).version()
    nothing = deltaerase.erase_rows(table, [], ["some-user"], remove_files_now=False)
    assert (nothing.rows_deleted, nothing.version) == (0, None) and tables.table(table.path).version() == version
    erased = deltaerase.erase_rows(table, [device], ["some-user"], remove_files_now=False)
    assert erased.rows_deleted == sum(row["deviceId"] == device for row in rows)
    left = tables.table(table.path).to_pyarrow_table().to_pylist()
    assert sorted(map(str, left)) == sorted(str(row) for row in rows if row["deviceId"] != device)


QUOTED_USER = "o'brien \"x\" \\' ; DROP TABLE t; --\n%_*"
UNICODE_DEVICE = "dév-ü漢字-Ωμ.1"


def lake_app(app_env, names, devices: list[tuple[str, str | None]]) -> tuple[PipelineApp, dt.datetime]:
    """An app whose DeltaLake pipeline `lake` delivered two events of each (device, user) two days ago."""
    lake = PipelineApp(app_env, names)
    now = dt.datetime.now(dt.UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
    lake.send([{"type": "event", "deviceId": device, **({"userId": user} if user else {}), "name": f"e{i}-{n}",
                "timestamp": f"{day + dt.timedelta(minutes=i * 2 + n):%Y-%m-%dT%H:%M:%S.000Z}"}
               for i, (device, user) in enumerate(devices) for n in (0, 1)])
    status, body = lake.api("PUT", "lake", {"route": "events", "exportFormat": "DeltaLake", "settleMinutes": 0,
                                            "lateDeliveryMinutes": 1, "startFrom": f"{day:%Y-%m-%d}",
                                            "containerUrl": lake.container_url()})
    assert status == 201, body
    lake.run_pipelines(now)
    return lake, now


def pipeline_rows(lake: PipelineApp, version: int | None = None) -> list[tuple[str, str | None, str]]:
    from deltalake import DeltaTable
    base, options = deltatable.storage_options(parse_destination(lake.container_url()))
    return sorted((row["deviceId"], row["userId"], row["name"]) for row in DeltaTable(
        f"{base}/lake", storage_options=options, version=version).to_pyarrow_table().to_pylist())


def test_ids_with_quotes_and_any_script_erase_exactly_their_rows_in_a_pipelines_table(app_env, names):
    devices = [(UNICODE_DEVICE, None), ("dev-plain", QUOTED_USER), ("dev-other", "o'brien"),
               ("dév-ü漢字-Ωμ", "x\\"), ("dev-third", None)]
    lake, _ = lake_app(app_env, names, devices)
    [table] = lake_tables(lake.app.id)
    assert (table.path, table.pipelines, table.task_ids) == ("lake", ("lake",), ())
    before = pipeline_rows(lake)
    assert len(before) == 10
    erased = deltaerase.erase_rows(table, [UNICODE_DEVICE, "' OR 1=1 --"], [QUOTED_USER, "' OR ''='"],
                                   remove_files_now=True)
    assert erased.rows_deleted == 4
    assert pipeline_rows(lake) == [row for row in before if row[0] != UNICODE_DEVICE and row[1] != QUOTED_USER]
    files = data_files(lake.container_url(), "lake/")
    assert files and not any(row["deviceId"] == UNICODE_DEVICE or row["userId"] == QUOTED_USER
                             for rows in files.values() for row in rows)


def test_a_pipeline_committing_beside_the_erasure_loses_no_row_and_the_erasure_none_of_its_own(app_env, names,
                                                                                             monkeypatch):
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import CommitFailedError

    from shared.export import deltacommit
    devices = [(f"dev-{n}", f"user-{n}") for n in range(4)]
    lake, now = lake_app(app_env, names, devices)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
    [table] = lake_tables(lake.app.id)
    base, options = deltatable.storage_options(parse_destination(lake.container_url()))
    uri = f"{base}/lake"

    def late_run(name: str, minutes: int) -> None:
        """A record of a device not erased arrives late: the pipeline's late run appends it to the table."""
        lake.send([{"type": "event", "deviceId": "dev-new", "name": name,
                    "timestamp": f"{day + dt.timedelta(hours=5, minutes=minutes):%Y-%m-%dT%H:%M:%S.000Z}"}])
        lake.run_pipelines(now + dt.timedelta(minutes=minutes))

    # A run commits between the erasure's read of the table and its commit: the erasure reads it again and
    # tries again (run here, in the test's process, to place the run there).
    real_delete = deltadelete._delete
    ran: list[None] = []

    def delete_after_a_run(delta_table, order):
        if not ran:
            ran.append(late_run("late-1", 2))
        return real_delete(delta_table, order)

    monkeypatch.setattr(deltadelete, "_delete", delete_after_a_run)
    order = deltadelete.Erase(uri=uri, options=options, folder="lake", ids={"deviceId": ["dev-0"], "userId": []},
                              remove_files_now=False, stray_hours=25, erasure="e")
    answer = deltadelete.erase(order)
    assert answer.error is None and answer.rows == 2 and answer.conflicts >= 1, answer
    monkeypatch.undo()

    # The erasure commits between a run's read of the table and its commit (the run's commit made in the test's
    # process, to place the erasure there): the run's commit keeps its rows, and the erasure's stay deleted.
    erased_between: list[deltaerase.ErasedTable] = []
    real_grow = deltacommit._grow_schema

    def grow_after_an_erasure(delta_table, schema):
        if not erased_between:
            erased_between.append(deltaerase.erase_rows(table, ["dev-1"], [], remove_files_now=False))
        return real_grow(delta_table, schema)

    monkeypatch.setattr(deltatable, "run_in_process", deltacommit.run)
    monkeypatch.setattr(deltacommit, "_grow_schema", grow_after_an_erasure)
    late_run("late-2", 4)
    assert [erased.rows_deleted for erased in erased_between] == [2]
    monkeypatch.undo()

    # Many commits beside: a thread commits every quarter of a second (a pipeline commits once a run, minutes
    # apart) while the erasure runs in its own process.
    template = DeltaTable(uri, storage_options=options).to_pyarrow_table().slice(0, 1)
    appended: list[str] = []
    stop = threading.Event()

    def keep_committing() -> None:
        while not stop.is_set():
            name = f"beside-{len(appended)}"
            rows = template
            for column, value in (("name", name), ("deviceId", "dev-new"), ("userId", None)):
                rows = rows.set_column(rows.schema.get_field_index(column), column, pa.array([value], pa.string()))
            try:
                write_deltalake(uri, rows, mode="append", storage_options=options)
            except CommitFailedError:  # the erasure committed first: as the pipeline's commit does, try again
                continue
            appended.append(name)
            stop.wait(0.25)

    thread = threading.Thread(target=keep_committing)
    thread.start()
    try:
        erased = deltaerase.erase_rows(table, [], ["user-2"], remove_files_now=False)
    finally:
        stop.set()
        thread.join()
    assert erased.rows_deleted == 2
    assert pipeline_rows(lake) == sorted(
        [("dev-3", "user-3", "e3-0"), ("dev-3", "user-3", "e3-1"), ("dev-new", None, "late-1"),
         ("dev-new", None, "late-2")] + [("dev-new", None, name) for name in appended])
    print(f"erasure beside commits: {len(appended)} commits beside, {erased.conflicts} conflicts")


def test_a_table_whose_sas_expired_or_lost_its_rights_is_reported_and_a_deleted_one_is_gone(tables, app_env, names,
                                                                                           monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    from azure.storage.blob import BlobServiceClient

    from shared.platform.errors import TransientError
    table = events_table(tables)

    def killed(function, order):
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    with monkeypatch.context() as patched:  # the erasure's process killed (out of memory): tried again later
        patched.setattr(deltatable, "in_process", killed)
        with pytest.raises(TransientError, match="its process died"):
            deltaerase.erase_rows(table, ["dev-1"], [], remove_files_now=False)
    expired = dataclasses.replace(table, destination=dataclasses.replace(
        table.destination, expires=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)))
    with pytest.raises(deltaerase.LakeTableUnavailable) as refused:
        deltaerase.erase_rows(expired, ["dev-1"], [], remove_files_now=False)
    assert "expired at" in refused.value.reason and "delta/Event" in str(refused.value)
    sas = tables.url.split("?")[1]
    assert sas not in str(refused.value) and "sig=" not in str(refused.value)

    # A SAS that can read but no longer write or delete (its rights were taken away).
    url, read_sas = container_sas_url(app_env, tables.url.split("?")[0].rsplit("/", 1)[1], permission="rl",
                                      create=False).split("?")
    read_only = Destination(url=url, sas=read_sas, expires=table.destination.expires)
    denied = dataclasses.replace(table, destination=read_only.seal())
    device = ingested(FIRST, DAY)[0]["deviceId"]
    with pytest.raises(deltaerase.LakeTableUnavailable) as refused:
        deltaerase.erase_rows(denied, [device], [], remove_files_now=False)
    assert "refused the SAS" in refused.value.reason and read_only.sas not in str(refused.value)
    assert expected.canonical(tables.rows(table.path, "Event")) == expected.canonical(ingested(FIRST, DAY))

    # A table deleted, or never made (an export that failed before its commit): nothing of it to erase.
    never = deltaerase.erase_rows(dataclasses.replace(table, path="delta/Crash"), [device], [], remove_files_now=True)
    assert not never.exists and never.remove_files_at is None
    # The container deleted: nothing of the table is left to erase.
    BlobServiceClient.from_connection_string(app_env.connection_string).delete_container(
        tables.url.split("?")[0].rsplit("/", 1)[1])
    gone = deltaerase.erase_rows(table, [device], [], remove_files_now=True)
    assert not gone.exists and gone.rows_deleted == 0


def test_lake_tables_lists_each_table_once_with_the_newest_sas(tables, app_env, names):
    tables.export("events", startDate=DAY.isoformat(), endDate=DAY.isoformat())
    first = {table.path: table for table in lake_tables(tables.app.id)}["delta/Event"]
    tables.url = container_sas_url(app_env, tables.url.split("?")[0].rsplit("/", 1)[1], create=False,
                                   expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=5))
    second_job = tables.export("events", startDate=DAY.isoformat(), endDate=DAY.isoformat())
    tables.export("tags")
    found = lake_tables(tables.app.id)
    assert sorted(table.path for table in found) == ["delta/Event", "delta/Tag"]
    events = {table.path: table for table in found}["delta/Event"]
    assert len(events.task_ids) == 2 and events.task_ids[-1] == second_job.id
    assert events.destination.expires > first.destination.expires


def test_a_refusal_is_read_from_the_storages_answer_not_from_a_number_in_its_request_id():
    from shared.export.deltacommit import refusal

    def answer(status: str, code: str) -> OSError:
        return OSError(f"Error performing GET REDACTED - Server returned non-2xx status code\n {status}\n"
                       f"<Error><Code>{code}</Code><Message>RequestId:5f0a4030-4403-8a2e-0403-b1c403000000\n"
                       f"Time:2026-12-04T18:40:30.403Z</Message></Error>")

    assert refusal(answer("503 Service Unavailable", "ServerBusy")) is None
    assert refusal(answer("404 Not Found", "ContainerNotFound")) == "missing"
    assert refusal(answer("403 Forbidden", "AuthorizationPermissionMismatch")) == "denied"
    assert refusal(answer("403 Forbidden", "AuthenticationFailed")) == "denied"


def test_an_erasure_asked_through_the_api_deletes_the_rows_of_the_apps_pipeline_table(app_env, names, monkeypatch):
    """The erasure task reaches the app's lake tables: rows gone in a commit, files removed at once when asked, the
    table listed in the task with what it did; without removeTableFilesNow, the files' removal is queued for when
    the table's retention has passed."""
    lake, _ = lake_app(app_env, names, [("dev-gone", "user-a"), ("dev-kept", "user-b"), ("dev-third", None)])
    before = pipeline_rows(lake)
    status, task, _ = erasure_api(lake.collection, lake.name, lake.keys.export_key, "POST",
                                  body={"deviceIds": ["dev-gone"], "removeTableFilesNow": True})
    assert status == 202, task
    crank_erasures(lake.app.id, task["id"])
    _, done, _ = erasure_api(lake.collection, lake.name, lake.keys.export_key, "GET", task["id"])
    assert done["state"] == "Succeeded", done
    [entry] = done["lakeTables"]
    assert (entry["path"], entry["rowsDeleted"], done["erased"]["lakeRows"]) == ("lake", 2, 2)
    assert entry["removeFilesAt"] is None and entry["filesRemoved"] >= 1
    assert pipeline_rows(lake) == [row for row in before if row[0] != "dev-gone"]
    assert not [row for rows in data_files(lake.container_url(), "lake/").values() for row in rows
                if row["deviceId"] == "dev-gone"]
    assert not log_mentions(lake.container_url(), "lake", ["dev-gone"])

    sent = []
    real_send = service.storage.send_message

    def send(queue_name, content, *, delay_seconds=0):
        sent.append((queue_name, json.loads(content), delay_seconds))
        real_send(queue_name, content, delay_seconds=delay_seconds)

    monkeypatch.setattr(service.storage, "send_message", send)
    status, later, _ = erasure_api(lake.collection, lake.name, lake.keys.export_key, "POST",
                                   body={"userIds": ["user-b"]})
    crank_erasures(lake.app.id, later["id"])
    _, done, _ = erasure_api(lake.collection, lake.name, lake.keys.export_key, "GET", later["id"])
    [entry] = done["lakeTables"]
    assert entry["rowsDeleted"] == 2 and entry["removeFilesAt"] > done["dateCompleted"]
    assert pipeline_rows(lake) == [row for row in before if row[0] == "dev-third"]
    [(queue_name, message, delay)] = [call for call in sent if "filesAt" in call[1]]
    assert (queue_name, message) == (service.ERASE_QUEUE, {"app": lake.app.id, "task": later["id"],
                                                           "filesAt": entry["removeFilesAt"]})
    assert 6 * 86400 < delay <= 7 * 86400  # the table's retention (7 days) at most a queue message's wait
    # When it comes: the files no retained version needs are removed, and the task says when.
    service.work(service.EraseMessage(lake.app.id, later["id"], files_at="2000-01-01T00:00:00.000Z"))
    [entry] = service.get_erasure(lake.app, later["id"]).lake_tables
    assert entry["removeFilesAt"] is None and entry["filesRemovedAt"]
