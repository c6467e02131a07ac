"""Data-lake-ready exports through the local host: ParquetBlob, the hive layout with its _SUCCESS marker,
published schemas (served, written beside the files, referenced from the manifest), projections and name
filters; each checked by reading the container's files with DuckDB and pyarrow as a user would."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import time
import uuid

import duckdb
import pytest
import requests
from azure.storage.blob import BlobServiceClient
from helpers import API_VERSION, app_path, container_sas_url, local_host

from sampledata import Plan, load, records
from shared.export import registry, schemas
from shared.platform import apps

# A fixed day, not one relative to today: the generated data depends on its dates.
YESTERDAY = dt.date(2026, 5, 4)
FIRST = YESTERDAY - dt.timedelta(days=2)
PLAN = Plan(devices=12, days=3, last_day=YESTERDAY, seed=11)
PUBLISHED = pathlib.Path(__file__).parent / "spec" / "schemas.json"


class Lake:
    def __init__(self, azurite, names, host):
        self.collection = f"lake{names.token}"
        self.keys = apps.register_app(self.collection, "game")
        self.app_id = f"{self.collection}~game"
        self.container = names.container("lake")
        self.container_url = container_sas_url(azurite, self.container)
        self.blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
            self.container)
        self.base = host.base_url + app_path(self.collection, "game") + "/exportTasks"
        self.host = host
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.keys.export_key}"

    def post(self, route, **fields):
        body = {"containerUrl": self.container_url, **fields}
        return self.session.post(f"{self.base}/{route}", params={"api-version": API_VERSION}, json=body, timeout=30)

    def export(self, route, **fields):
        response = self.post(route, **fields)
        assert response.status_code == 202, response.text
        location = response.headers["Location"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            task = self.session.get(location, timeout=30).json()
            if task["state"] in ("Succeeded", "Failed"):
                assert task["state"] == "Succeeded", task.get("errorDetails")
                return task
            time.sleep(0.2)
        raise AssertionError("the export did not finish in time")

    def download(self, prefix, into: pathlib.Path) -> pathlib.Path:
        for blob in self.blobs.list_blobs(name_starts_with=prefix):
            target = into / blob.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.blobs.download_blob(blob.name).readall())
        return into / prefix


class ModuleNames:
    """Fresh names for the module's one app and container."""

    token = uuid.uuid4().hex[:10]

    def container(self, base="c"):
        return f"{base}-{self.token}"


@pytest.fixture(scope="module")
def lake(app_env):
    with local_host("ExportTasks", "PollExport", "ExportWorker", "ExportSchemas") as host:
        lake = Lake(app_env, ModuleNames(), host)
        load(lake.app_id, PLAN)
        yield lake


def events_between(first, last):
    return [r for r in records(PLAN) if r["type"] == "event"
            and first.isoformat() <= r["timestamp"][:10] <= last.isoformat()]


def test_hive_layout_parquet_reads_with_the_date_as_a_column_and_ends_with_success(lake, tmp_path):
    task = lake.export("events", startDate=FIRST.isoformat(), endDate=YESTERDAY.isoformat(),
                       exportFormat="ParquetBlob", layout="hive")
    root = lake.download(f"Event/{task['id']}/", tmp_path)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert [name for name in names if "/" not in name] == ["_SUCCESS", "manifest.json", "schema.json"]
    folders = {name.split("/")[0] for name in names if "/" in name}
    assert folders == {f"date={day.isoformat()}" for day in (FIRST, FIRST + dt.timedelta(days=1), YESTERDAY)}
    success = lake.blobs.get_blob_client(f"Event/{task['id']}/_SUCCESS").get_blob_properties()
    manifest_written = lake.blobs.get_blob_client(f"Event/{task['id']}/manifest.json").get_blob_properties()
    assert success.last_modified >= manifest_written.last_modified
    connection = duckdb.connect()
    rows = connection.sql(f"SELECT deviceId, name, strftime(timestamp AT TIME ZONE 'UTC', '%Y-%m-%d') AS day, "
                          f"CAST(date AS VARCHAR) AS date FROM read_parquet('{root}/**/*.parquet', "
                          f"hive_partitioning = true)").fetchall()
    want = events_between(FIRST, YESTERDAY)
    assert len(rows) == len(want) == task["recordCount"] > 0
    assert all(day == date for _, _, day, date in rows), "each row sits in the folder of its day"
    assert sorted((d, n) for d, n, _, _ in rows) == sorted((r["deviceId"], r["name"]) for r in want)


@pytest.mark.parametrize("export_format", ["JsonBlob", "CsvBlob", "ParquetBlob"])
def test_a_projection_writes_only_those_columns_in_the_schema_order(lake, tmp_path, export_format):
    task = lake.export("events", startDate=YESTERDAY.isoformat(), endDate=YESTERDAY.isoformat(),
                       exportFormat=export_format, fields=["timestamp", "deviceId", "name"])
    assert task["fields"] == ["deviceId", "name", "timestamp"]
    root = lake.download(f"Event/{task['id']}/", tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["fields"] == ["deviceId", "name", "timestamp"]
    schema = json.loads((root / "schema.json").read_text())
    assert schema == json.loads(lake.blobs.download_blob(manifest["schema"]["name"]).readall())
    assert schema["columns"] == ["deviceId", "name", "timestamp"]
    files = [str(tmp_path / entry["name"]) for entry in manifest["files"]]
    reader = {"JsonBlob": "read_json", "CsvBlob": "read_csv", "ParquetBlob": "read_parquet"}[export_format]
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    assert connection.sql(f"SELECT * FROM {reader}({files!r})").columns == ["deviceId", "name", "timestamp"]
    relation = connection.sql(f"SELECT deviceId, name, CAST(timestamp AS VARCHAR) FROM {reader}({files!r})")
    got = sorted((d, n, t[:19].replace(" ", "T")) for d, n, t in relation.fetchall())
    want = sorted((r["deviceId"], r["name"], r["timestamp"][:19]) for r in events_between(YESTERDAY, YESTERDAY))
    assert got == want and len(got) == task["recordCount"]
    if export_format == "ParquetBlob":
        assert [field["name"] for field in schema["arrowSchema"]] == schema["columns"]
    else:
        assert list(schema["jsonSchema"]["properties"]) == schema["columns"]


@pytest.mark.parametrize("mode", ["include", "exclude"])
def test_names_include_or_exclude_rows(lake, tmp_path, mode):
    all_events = events_between(YESTERDAY, YESTERDAY)
    chosen = sorted({r["name"] for r in all_events})[:2]
    task = lake.export("events", startDate=YESTERDAY.isoformat(), endDate=YESTERDAY.isoformat(),
                       exportFormat="ParquetBlob", names={mode: chosen})
    root = lake.download(f"Event/{task['id']}/", tmp_path)
    got = duckdb.connect().sql(f"SELECT name FROM read_parquet('{root}/*.parquet')").fetchall()
    kept = [r for r in all_events if (r["name"] in chosen) == (mode == "include")]
    assert 0 < len(got) == len(kept) == task["recordCount"] < len(all_events)
    assert sorted(n for (n,) in got) == sorted(r["name"] for r in kept)


@pytest.mark.parametrize("route, body, field", [
    ("events", {"exportFormat": "OrcBlob"}, "exportFormat"),
    ("events", {"layout": "nested"}, "layout"),
    ("events", {"fields": ["deviceId", "colour"]}, "fields[1]"),
    ("events", {"fields": []}, "fields"),
    ("events", {"names": {"include": ["ok", ""]}}, "names.include[1]"),
    ("events", {"names": {"only": ["ok"]}}, "names"),
    ("tags", {"names": {"include": ["a"]}}, "names"),
    ("tags", {"layout": "hive"}, "layout"),
    ("tokens", {"fields": ["deviceId", "userId"]}, "fields[1]"),
])
def test_an_unknown_format_layout_field_or_name_is_a_400_that_names_it(lake, route, body, field):
    if route == "events":
        body = dict(body, startDate=YESTERDAY.isoformat(), endDate=YESTERDAY.isoformat())
    response = lake.post(route, **body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith(field)


def test_schemas_are_served_written_beside_files_and_only_ever_grow_at_the_end(lake):
    served = lake.session.get(f"{lake.host.base_url}/schemas", timeout=30).json()["value"]
    assert [doc["exportType"] for doc in served] == list(registry.EXPORT_TYPES)
    one = lake.session.get(f"{lake.host.base_url}/schemas/event", timeout=30).json()
    assert one == served[list(registry.EXPORT_TYPES).index("Event")]
    assert one["arrowSchema"][5] == {"name": "timestamp", "type": "timestamp[ms, tz=UTC]", "nullable": False}
    missing = lake.session.get(f"{lake.host.base_url}/schemas/Nope", timeout=30)
    assert missing.status_code == 404 and "Nope" in missing.json()["error"]["message"]
    published = json.loads(PUBLISHED.read_text())
    for doc in served:
        before = published[doc["exportType"]]
        assert doc["columns"][:len(before)] == before, f"{doc['exportType']}: a column moved or was removed"
    assert {doc["exportType"]: doc["columns"] for doc in served} == published, (
        "a column was added: add it to tests/spec/schemas.json (at the end) once it is meant")


def test_every_type_s_arrow_schema_is_typed():
    for export_type in registry.EXPORT_TYPES.values():
        schema = schemas.arrow_schema(export_type.schema)
        for column, field in zip(export_type.schema, schema):
            assert str(field.type) == {"string": "string", "date-time": "timestamp[ms, tz=UTC]", "integer": "int64",
                                       "number": "double", "boolean": "bool", "json": "string"}[column.kind]
