"""An app with a pipeline, driven in the test's own process: records sent through Collect, the API called with
func.HttpRequest objects, the pipelines' timer stepped at a given time, and the export queues cranked by hand."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import gzip
import io
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import expected
from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient
from helpers import app_path, container_sas_url, http_request

import Collect
import ExportPipelines
import ExportWorker
import PollExport
from shared.pipelines import driver, store
from shared.platform import apps
from shared.platform.config import get_settings
from shared.tasks import joblist, orchestration

UTC = dt.UTC


def event(name: str, moment: dt.datetime, device: str = "dev-1") -> dict:
    return {"type": "event", "deviceId": device, "sessionId": "s1", "name": name,
            "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "extras": {"n": name}}


class PipelineApp:
    def __init__(self, azurite, names, *, other: str = "") -> None:
        self.azurite = azurite
        self.collection, self.name = f"p{names.token}{other}", "app"
        self.keys = apps.register_app(self.collection, self.name)
        self.app = apps.AppRef(self.collection, self.name)
        self.container = names.container(f"lake{other}")
        self.service = BlobServiceClient.from_connection_string(azurite.connection_string)

    def container_url(self, **options) -> str:
        """A SAS URL of the app's container, valid for 30 days unless ``expiry`` says otherwise: a pipeline whose
        SAS expires before its next period is delivered is Failing."""
        options.setdefault("expiry", dt.datetime.now(UTC) + dt.timedelta(days=30))
        return container_sas_url(self.azurite, self.container, create=not self.service.get_container_client(
            self.container).exists(), **options)

    # ---- the API and Collect, as a client calls them

    def api(self, method: str, rest: str = "", body=None, *, params=None, key=None):
        request = http_request(method, app_path(self.collection, self.name) + f"/exportPipelines/{rest}",
                               key=self.keys.export_key if key is None else key, body=body, params=params,
                               route_params={"appCollection": self.collection, "appName": self.name, "rest": rest})
        response = ExportPipelines.main(request)
        return response.status_code, json.loads(response.get_body() or b"null")

    def send(self, records: list[dict]) -> None:
        request = http_request("POST", app_path(self.collection, self.name) + "/collect", key=self.keys.collect_key,
                               body={"records": records},
                               route_params={"appCollection": self.collection, "appName": self.name})
        response = Collect.main(request)
        answer = json.loads(response.get_body())
        assert response.status_code == 200 and answer["accepted"] == len(records), answer

    # ---- the timer and the queues

    def pipeline(self, name: str):
        return store.get_pipeline(self.app.id, name)

    def run_pipelines(self, now: dt.datetime) -> None:
        run_pipelines(self.app.id, now)

    # ---- what the destination holds

    def blobs(self, prefix: str = "") -> dict[str, bytes]:
        container = self.service.get_container_client(self.container)
        return {blob.name: container.download_blob(blob.name).readall()
                for blob in container.list_blobs(name_starts_with=prefix)}

    def delivered(self, pipeline: str, export_type: str = "Event") -> Counter:
        """(folder, record name) of every row of the pipeline's data files, counted: what a reader gets (the
        tests give every record a name of its own)."""
        found: Counter = Counter()
        for name, data in self.blobs(f"{pipeline}/").items():
            folder, _, file = name[len(pipeline) + 1:].rpartition("/")
            if folder.startswith("_"):
                continue
            for row in read_rows(file, data, export_type):
                found[(folder, row["name"])] += 1
        return found

    def manifests(self, pipeline: str) -> list[dict]:
        return [json.loads(data) for name, data in sorted(self.blobs(f"{pipeline}/_").items())
                if name.endswith("/manifest.json")]


def _app_jobs(app_id: str):
    return joblist.list_jobs(app_id, top=1000).jobs


def _queues() -> dict[str, QueueClient]:
    connection = get_settings().storage.connection_string
    queues = {name: QueueClient.from_connection_string(connection, name)
              for name in (orchestration.POLL_QUEUE, orchestration.WORK_QUEUE)}
    for queue in queues.values():
        try:
            queue.create_queue()
        except ResourceExistsError:
            pass
    return queues


def crank(app_id: str, rounds: int = 400, *, redeliver_failures: bool = False) -> None:
    """Delivers the export queues' messages (of any app: the session shares the queues) until no task of the app
    is running. A function that raises fails the test, unless ``redeliver_failures``: then, as the host does, its
    message is delivered again (at once, here)."""
    queues = _queues()
    for _ in range(rounds):
        busy = False
        for queue_name, function in ((orchestration.WORK_QUEUE, ExportWorker.main),
                                     (orchestration.POLL_QUEUE, PollExport.main)):
            for raw in list(queues[queue_name].receive_messages(max_messages=32, visibility_timeout=60)):
                try:
                    function(QueueMessage(id=raw.id, body=base64.b64decode(raw.content),
                                          dequeue_count=raw.dequeue_count))
                except Exception:
                    if not redeliver_failures:
                        raise
                    queues[queue_name].update_message(raw, visibility_timeout=0)
                else:
                    queues[queue_name].delete_message(raw)
                busy = True
        if not busy and all(job.finished for job in _app_jobs(app_id)):
            return
        if not busy:
            time.sleep(0.2)
    raise AssertionError(f"the export tasks of {app_id} did not finish")


def run_pipelines(app_id: str, now: dt.datetime, *, ticks: int = 200) -> None:
    """Steps the pipelines' timer at ``now`` for the app and runs their tasks until every one of its pipelines is
    idle."""
    for _ in range(ticks):
        driver.tick(now, app_id=app_id)
        crank(app_id)
        pipelines = list(store.list_pipelines(app_id))
        if all(driver.next_step(p, now, driver.task_state(p)) in (driver.Step.IDLE, driver.Step.WAIT)
               for p in pipelines):
            return
    raise AssertionError("the pipelines did not settle")


def read_rows(file: str, data: bytes, export_type: str) -> list[dict]:
    """The rows of one data file, as a reader of its format reads them (nulls left out)."""
    if file.endswith(".parquet"):
        with tempfile.TemporaryDirectory() as folder:
            rows = expected.parquet_rows(data, export_type, Path(folder) / "part.parquet")
    elif file.endswith(".csv.gz"):
        rows = expected.parse_nested(list(csv.DictReader(io.StringIO(gzip.decompress(data).decode(), newline=""))))
    else:
        rows = [json.loads(line) for line in gzip.decompress(data).decode().split("\n") if line]
    return [{key: value for key, value in row.items() if value not in (None, "") and key != "type"} for row in rows]
