"""DeltaLake exports: the job's Parquet files committed to a Delta Lake table in the destination container, read
back by real readers (the deltalake library, polars' read_delta, pyarrow's dataset over the files the log names)
and compared row for row with what was ingested; the same range exported twice gives the same table; a
pipeline's runs each commit once, late runs included; time travel to a run's version."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import expected
import pytest
from helpers import container_sas_url
from pipelining import PipelineApp, crank, event

from sampledata import Plan, load, records
from shared.export import deltacommit, deltatable, schemas
from shared.export.destination import parse_destination
from shared.export.export_request import parse_request
from shared.export.registry import EXPORT_TYPES, ROUTES
from shared.platform import apps
from shared.tasks import jobs
from shared.tasks.service import submit_export

DAY = dt.date(2026, 5, 4)
FIRST = DAY - dt.timedelta(days=2)
PLAN = Plan(devices=15, days=3, last_day=DAY, seed=5)


def as_json(export_type: str, rows: list[dict]) -> list[dict]:
    """Rows as JSON Lines would hold them (times as UTC text, nested values parsed), without the partition."""
    kinds = {column.name: column.kind for column in EXPORT_TYPES[export_type].schema}
    found = []
    for row in rows:
        shown = {}
        for name, value in row.items():
            if value is None or name == deltatable.PARTITION:
                continue
            if kinds[name] == schemas.JSON:
                value = json.loads(value)
            elif isinstance(value, dt.datetime):
                value = value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            shown[name] = value
        found.append(shown)
    return found


class Tables:
    """The app's container, as the deltalake library, polars and pyarrow read its tables."""

    def __init__(self, azurite, names) -> None:
        self.collection = f"d{names.token}"
        self.app = apps.AppRef(self.collection, "app")
        apps.register_app(self.collection, "app")
        self.url = container_sas_url(azurite, names.container("delta"))
        self.base, self.options = deltatable.storage_options(parse_destination(self.url))

    def export(self, route: str, *, redeliver_failures: bool = False, **fields) -> jobs.ExportJob:
        body = {"containerUrl": self.url, "exportFormat": "DeltaLake", **fields}
        job = submit_export(self.app, parse_request(ROUTES[route], body, max_range_days=366, today=DAY))
        crank(self.app.id, redeliver_failures=redeliver_failures)
        job = jobs.get_job(self.app.id, job.id)
        assert job.state == jobs.SUCCEEDED, job.error_details
        return job

    def table(self, path: str, version: int | None = None):
        from deltalake import DeltaTable
        return DeltaTable(f"{self.base}/{path}", storage_options=self.options, version=version)

    def rows(self, path: str, export_type: str, version: int | None = None) -> list[dict]:
        return as_json(export_type, self.table(path, version).to_pyarrow_table().to_pylist())


@pytest.fixture
def tables(app_env, names):
    found = Tables(app_env, names)
    load(found.app.id, PLAN)
    return found


def ingested(first: dt.date, last: dt.date) -> list[dict]:
    rows = expected.historical(list(records(PLAN)), "event", first, last)
    return [{k: v for k, v in row.items() if v is not None and k != "type"} for row in rows]


def test_a_range_exported_twice_gives_the_same_table_and_each_commit_is_a_version(tables):
    first = tables.export("events", startDate=FIRST.isoformat(), endDate=DAY.isoformat())
    want = expected.canonical(ingested(FIRST, DAY))
    assert expected.canonical(tables.rows("delta/Event", "Event")) == want
    manifest_table = json.loads(parse_destination(tables.url).container_client().download_blob(
        f"Event/{first.id}/manifest.json").readall())["table"]
    assert manifest_table["path"] == "delta/Event" and manifest_table["version"] == 0
    again = tables.export("events", startDate=(DAY - dt.timedelta(days=1)).isoformat(), endDate=DAY.isoformat())
    table = tables.table("delta/Event")
    assert table.version() == 1
    assert expected.canonical(tables.rows("delta/Event", "Event")) == want  # the range replaced, never doubled
    assert table.transaction_version(f"engagement-export/task/{again.id}") == 1
    protocol = table.protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)
    assert table.metadata().partition_columns == ["date"]
    # Time travel: version 0 is the first export's table.
    assert expected.canonical(tables.rows("delta/Event", "Event", version=0)) == want
    # Each row sits in the partition of its day.
    by_day = Counter(row["date"] for row in table.to_pyarrow_table().to_pylist())
    assert by_day == Counter(row["timestamp"][:10] for row in ingested(FIRST, DAY))


def test_polars_and_pyarrow_read_the_table_as_the_library_does(tables):
    import polars as pl
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    tables.export("events", startDate=FIRST.isoformat(), endDate=DAY.isoformat())
    want = expected.canonical(ingested(FIRST, DAY))
    polars_options = {k: v for k, v in tables.options.items() if k not in ("max_retries", "retry_timeout")}
    frame = pl.read_delta(f"{tables.base}/delta/Event", storage_options=polars_options)
    assert expected.canonical(as_json("Event", frame.to_arrow().to_pylist())) == want
    table = tables.table("delta/Event")
    endpoint = tables.options["azure_storage_endpoint"].split("//")[1].split("/")[0]
    filesystem = pafs.AzureFileSystem(account_name=tables.options["azure_storage_account_name"],
                                      sas_token="?" + tables.options["azure_storage_sas_token"],
                                      blob_storage_authority=endpoint, blob_storage_scheme="http",
                                      dfs_storage_authority=endpoint, dfs_storage_scheme="http")
    paths = [uri.removeprefix("az://") for uri in table.file_uris()]
    dataset = pads.dataset(paths, filesystem=filesystem, format="parquet")
    assert expected.canonical(as_json("Event", dataset.to_table().to_pylist())) == want


def test_a_snapshot_export_replaces_the_whole_table(tables):
    first = tables.export("tags")
    rows = tables.rows("delta/Tag", "Tag")
    assert rows and expected.canonical(rows) == expected.canonical(
        as_json("Tag", tables.table("delta/Tag").to_pyarrow_table().to_pylist()))
    tables.export("tags")
    assert tables.table("delta/Tag").version() == 1
    assert expected.canonical(tables.rows("delta/Tag", "Tag")) == expected.canonical(rows)
    assert first.state == jobs.SUCCEEDED


def test_a_commit_tried_again_commits_nothing_more(tables):
    from shared.export import committer
    from shared.tasks import parts

    job = tables.export("events", startDate=DAY.isoformat(), endDate=DAY.isoformat())
    done = [part for part in parts.list_parts(job.id) if part.done]
    committer.commit(job.spec, done)  # a monitor that commits again, after a crash or a duplicate message
    assert tables.table("delta/Event").version() == 0
    assert expected.canonical(tables.rows("delta/Event", "Event")) == expected.canonical(ingested(DAY, DAY))


def test_a_pipelines_runs_commit_once_each_and_late_records_land_in_their_partition(app_env, names):
    lake = PipelineApp(app_env, names)
    now = dt.datetime.now(dt.UTC)
    days = [now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=n) for n in (2, 1)]
    lake.send([event(f"on-time-{i}", day + dt.timedelta(hours=i)) for i, day in enumerate(days)])
    status, body = lake.api("PUT", "lake", {"route": "events", "exportFormat": "DeltaLake", "settleMinutes": 0,
                                            "lateDeliveryMinutes": 1, "startFrom": f"{days[0]:%Y-%m-%d}",
                                            "containerUrl": lake.container_url()})
    assert status == 201 and body["layout"] == "hive", body
    lake.run_pipelines(now)
    lake.send([event("late-0", days[0] + dt.timedelta(hours=5)), event("late-1", days[1] + dt.timedelta(hours=6))])
    lake.run_pipelines(now + dt.timedelta(minutes=2))
    base, options = deltatable.storage_options(parse_destination(lake.container_url()))
    from deltalake import DeltaTable
    table = DeltaTable(f"{base}/lake", storage_options=options)
    rows = table.to_pyarrow_table().to_pylist()
    assert Counter((row["date"], row["name"]) for row in rows) == Counter(
        [(f"{days[0]:%Y-%m-%d}", "on-time-0"), (f"{days[1]:%Y-%m-%d}", "on-time-1"),
         (f"{days[0]:%Y-%m-%d}", "late-0"), (f"{days[1]:%Y-%m-%d}", "late-1")])
    assert table.version() == 1  # the first run, then the late run: one commit each
    uid8 = lake.pipeline("lake").uid[:8]
    assert table.transaction_version(f"engagement-export/pipeline/{uid8}/lake") == 2
    first_run = DeltaTable(f"{base}/lake", storage_options=options, version=0).to_pyarrow_table().to_pylist()
    assert sorted(row["name"] for row in first_run) == ["on-time-0", "on-time-1"]
    manifests = lake.manifests("lake")
    assert [m["table"]["version"] for m in sorted(manifests, key=lambda m: m["pipeline"]["sequence"])] == [0, 1]


def test_every_tenth_version_is_checkpointed_and_the_table_kept_tidy(tables):
    for _ in range(10):
        tables.export("events", startDate=DAY.isoformat(), endDate=DAY.isoformat())
    table = tables.table("delta/Event")
    assert table.version() == 9
    tables.export("events", startDate=DAY.isoformat(), endDate=DAY.isoformat())
    container = parse_destination(tables.url).container_client()
    log = sorted(blob.name.rsplit("/", 1)[1]
                 for blob in container.list_blobs(name_starts_with="delta/Event/_delta_log/"))
    assert "00000000000000000010.checkpoint.parquet" in log and "_last_checkpoint" in log
    table = tables.table("delta/Event")
    assert expected.canonical(tables.rows("delta/Event", "Event")) == expected.canonical(ingested(DAY, DAY))
    assert len(table.file_uris()) >= 1


def test_a_sas_that_cannot_read_the_table_is_refused_at_creation_or_fails_the_export_without_the_sas(
        tables, app_env, names, monkeypatch):
    from shared.export import destination
    from shared.platform.errors import UnusableDestination
    write_only = container_sas_url(app_env, names.container("wo"), permission="cw")
    body = {"containerUrl": write_only, "exportFormat": "DeltaLake", "startDate": DAY.isoformat(),
            "endDate": DAY.isoformat()}
    with pytest.raises(UnusableDestination) as refused:
        submit_export(tables.app, parse_request(ROUTES["events"], body, max_range_days=366, today=DAY))
    assert refused.value.message.startswith("containerUrl has a SAS without read and list permission (sp='cw')")
    # A SAS whose rights were taken away after the check (sp says rcwl; the storage refuses the reads).
    real_parse = destination.parse_destination
    monkeypatch.setattr(destination, "parse_destination", lambda url, **kwargs: real_parse(url))
    job = submit_export(tables.app, parse_request(ROUTES["events"], body, max_range_days=366, today=DAY))
    crank(tables.app.id)
    job = jobs.get_job(tables.app.id, job.id)
    assert job.state == jobs.FAILED
    assert "read, list, create and write" in job.error_details, job.error_details
    assert "sig=" not in job.error_details and write_only.split("?")[1] not in job.error_details


def test_a_late_activity_replaces_the_sessions_of_its_days_in_a_pipelines_table(app_env, names):
    from deltalake import DeltaTable
    from test_pipelines import activity
    lake = PipelineApp(app_env, names)
    now = dt.datetime.now(dt.UTC)
    first, second = (now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=n) for n in (2, 1))
    lake.send([activity("home", "s1", first + dt.timedelta(hours=8)),
               activity("home", "s2", second + dt.timedelta(hours=9))])
    assert lake.api("PUT", "sessions", {"route": "sessions", "exportFormat": "DeltaLake", "settleMinutes": 0,
                                        "lateDeliveryMinutes": 1, "startFrom": f"{first:%Y-%m-%d}",
                                        "containerUrl": lake.container_url()})[0] == 201
    lake.run_pipelines(now)
    lake.send([activity("pay", "s1", first + dt.timedelta(hours=8, minutes=6))])
    lake.run_pipelines(now + dt.timedelta(minutes=2))
    base, options = deltatable.storage_options(parse_destination(lake.container_url()))
    rows = DeltaTable(f"{base}/sessions", storage_options=options).to_pyarrow_table().to_pylist()
    assert sorted((row["date"], row["sessionId"], row["activityCount"]) for row in rows) == [
        (f"{first:%Y-%m-%d}", "s1", 2), (f"{second:%Y-%m-%d}", "s2", 1)]


def test_a_table_grows_the_columns_a_later_export_brings_at_its_end(tables):
    tables.export("events", startDate=FIRST.isoformat(), endDate=FIRST.isoformat(), fields=["deviceId", "name"])
    assert [field.name for field in tables.table("delta/Event").schema().fields] == ["deviceId", "name", "date"]
    tables.export("events", startDate=DAY.isoformat(), endDate=DAY.isoformat())
    table = tables.table("delta/Event")
    names = [field.name for field in table.schema().fields]
    assert names[:3] == ["deviceId", "name", "date"] and set(names[3:]) == {
        "userId", "sessionId", "jobId", "timestamp", "extras"}
    assert (table.protocol().min_reader_version, table.protocol().min_writer_version) == (1, 2)
    rows = table.to_pyarrow_table().to_pylist()
    assert sorted(row["name"] for row in rows if row["date"] == FIRST.isoformat()) == sorted(
        row["name"] for row in ingested(FIRST, FIRST))
    assert all(row["timestamp"] is None for row in rows if row["date"] == FIRST.isoformat())
    assert expected.canonical(as_json("Event", [row for row in rows if row["date"] == DAY.isoformat()])) == \
        expected.canonical(ingested(DAY, DAY))


def test_the_librarys_calls_follow_no_redirect_and_the_target_gets_nothing(tables, app_env, names):
    from faultproxy import REDIRECT, FaultProxy

    from shared.export.spec import ExportScope, ExportSpec
    url = container_sas_url(app_env, names.container("redirected"))
    with FaultProxy(f"http://127.0.0.1:{app_env.ports['blob']}") as proxy:
        proxy.mode = REDIRECT
        through = parse_destination(proxy.url + "/" + url.split("/", 3)[3])
        job = ExportSpec.of(ExportScope(export_type="Event", export_format="DeltaLake", start_date=DAY,
                                        end_date=DAY, layout="hive"), app_id=tables.app.id, job_id="job-1",
                            destination=through.seal(), date_created=dt.datetime.now(dt.UTC))
        with pytest.raises(Exception) as failed:
            deltatable.commit(job, through, [])
        assert proxy.seen and all(status == 307 for _, _, status in proxy.seen)
    assert "sig=" not in str(failed.value)
    container = parse_destination(url).container_client()
    assert [blob.name for blob in container.list_blobs()] == []  # the redirect's target got nothing


def test_a_monitor_killed_between_the_files_and_the_log_commits_once_and_stray_files_are_vacuumed(tables,
                                                                                                 monkeypatch):
    from shared.export import committer
    from shared.platform.errors import TransientError
    real_commit = deltatable.commit
    calls = []

    def killed_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TransientError("the host was killed after the data files were committed")
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(committer.deltatable, "commit", killed_once)
    job = tables.export("events", startDate=DAY.isoformat(), endDate=DAY.isoformat(), redeliver_failures=True)
    assert len(calls) == 2 and tables.table("delta/Event").version() == 0
    assert expected.canonical(tables.rows("delta/Event", "Event")) == expected.canonical(ingested(DAY, DAY))
    # Files of the table that no version names (a job that failed after committing its files) go with the vacuum.
    container = parse_destination(tables.url).container_client()
    stray = f"delta/Event/date={DAY.isoformat()}/part-stray-00000.parquet"
    container.upload_blob(stray, b"not referenced by any version")
    upkeep = deltatable.order(job.spec, parse_destination(tables.url), [], retention_days=0)
    assert deltacommit._maintain(upkeep, deltatable.CHECKPOINT_INTERVAL) == []
    names = {blob.name for blob in container.list_blobs(name_starts_with="delta/Event/")}
    assert stray not in names
    assert expected.canonical(tables.rows("delta/Event", "Event")) == expected.canonical(ingested(DAY, DAY))
