"""OnBlobCreated: a manifest landing in the destination container forwards one message per result file to
the routed queues, once, and a malformed manifest is reported, not forwarded."""

from __future__ import annotations

import base64
import json

import pytest
from azure.functions.blob import InputStream
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient
from conftest import REPO_ROOT
from helpers import container_sas_url, wait_for

import OnBlobCreated
from devhost.host import LocalHost
from shared.export.export_request import parse_request
from shared.export.registry import ROUTES
from shared.platform import apps, config
from shared.tasks.service import submit_export


def manifest_for(job_id, export_type="Event", files=2):
    return {"jobId": job_id, "app": {"appCollection": "c", "appName": "a"}, "exportType": export_type,
            "exportFormat": "CsvBlob", "range": {"startDate": "2026-01-01", "endDate": "2026-01-01"},
            "files": [{"name": f"{export_type}/{job_id}/part-{i:05d}.csv.gz",
                       "url": f"http://127.0.0.1/devstoreaccount1/x/{export_type}/{job_id}/part-{i:05d}.csv.gz",
                       "records": 10 + i, "bytes": 100 + i, "md5": "AAAA"} for i in range(files)]}


def drain(azurite, name):
    queue = QueueClient.from_connection_string(azurite.connection_string, name)
    try:
        return [json.loads(base64.b64decode(m.content)) for m in queue.receive_messages(max_messages=32)]
    except Exception:
        return []


@pytest.fixture
def routed(settings_override, names):
    queues = {"events": names.queue("events"), "more": names.queue("more"), "default": names.queue("default")}
    settings_override(**{config.FORWARD_ROUTES: json.dumps({"Event": [queues["events"], queues["more"]]}),
                         config.FORWARD_DEFAULT_QUEUE: queues["default"]})
    return queues


def stream(name, document):
    data = json.dumps(document).encode() if not isinstance(document, bytes) else document
    return InputStream(data=data, name=f"scheduled-exports/{name}", length=len(data))


def test_a_manifest_forwards_one_message_per_file_to_each_routed_queue_once(app_env, routed, names):
    job_id = f"job-{names.token}"
    manifest = manifest_for(job_id)
    OnBlobCreated.main(stream(f"Event/{job_id}/manifest.json", manifest))
    OnBlobCreated.main(stream(f"Event/{job_id}/manifest.json", manifest))  # the trigger fires twice
    for queue in (routed["events"], routed["more"]):
        messages = drain(app_env, queue)
        assert sorted(m["name"] for m in messages) == [f["name"] for f in manifest["files"]]
        first = next(m for m in messages if m["name"].endswith("part-00000.csv.gz"))
        assert first == {"jobId": job_id, "app": {"appCollection": "c", "appName": "a"}, "exportType": "Event",
                         "exportFormat": "CsvBlob", "range": {"startDate": "2026-01-01", "endDate": "2026-01-01"},
                         "name": f"Event/{job_id}/part-00000.csv.gz", "url": manifest["files"][0]["url"],
                         "bytes": 100, "records": 10, "md5": "AAAA"}
    assert drain(app_env, routed["default"]) == []


def test_unrouted_types_go_to_the_default_queue(app_env, routed, names):
    OnBlobCreated.main(stream(f"Tag/t-{names.token}/manifest.json", manifest_for(f"t-{names.token}", "Tag", 1)))
    assert [m["exportType"] for m in drain(app_env, routed["default"])] == ["Tag"]


@pytest.mark.parametrize("document, reason", [
    (b"{not json", "not JSON"),
    ({"jobId": "x"}, "exportType is missing"),
    ({**manifest_for("y"), "files": [{"name": "n", "url": "https://a/b?sig=TOPSECRETSIG", "records": 1, "bytes": 1,
                                      "md5": "m"}]}, "carries a query"),
])
def test_a_malformed_manifest_is_reported_not_forwarded(app_env, routed, document, reason):
    OnBlobCreated.main(stream("Event/bad/manifest.json", document))
    assert drain(app_env, routed["events"]) == []
    (report,) = drain(app_env, routed["default"] + "-poison")
    assert reason in report["reason"] and report["blob"] == "scheduled-exports/Event/bad/manifest.json"
    assert "TOPSECRETSIG" not in json.dumps(report)


def test_an_export_landing_in_the_watched_container_is_forwarded_through_the_local_host(app_env, routed, names):
    apps.register_app(f"fw-{names.token}", "app")
    service = BlobServiceClient.from_connection_string(app_env.connection_string)
    try:
        service.create_container("scheduled-exports")
    except Exception:
        pass
    url = container_sas_url(app_env, "scheduled-exports", create=False)
    host = LocalHost(REPO_ROOT, port=0, functions=["PollExport", "ExportWorker", "OnBlobCreated"]).start()
    try:
        job = submit_export(apps.AppRef(f"fw-{names.token}", "app"), parse_request(
            ROUTES["events"], {"containerUrl": url, "startDate": "2026-01-01", "endDate": "2026-01-01"},
            max_range_days=366))
        messages = wait_for(lambda: [m for m in drain(app_env, routed["events"]) if m["jobId"] == job.id], 30)
    finally:
        host.stop()
    assert [(m["name"], m["records"]) for m in messages] == [(f"Event/{job.id}/part-00000.jsonl.gz", 0)]
    assert "?" not in messages[0]["url"]


def test_a_message_that_cannot_be_sent_goes_to_the_poison_queue_with_the_reason(app_env, routed, names,
                                                                               monkeypatch):
    from azure.core.exceptions import ServiceRequestError

    from shared.platform import storage

    real_queue = storage.destination_queue

    class Unreachable:
        def send_message(self, body):
            raise ServiceRequestError("connection refused")

    monkeypatch.setattr(storage, "destination_queue",
                        lambda name: Unreachable() if name == routed["events"] else real_queue(name))
    job_id = f"p-{names.token}"
    OnBlobCreated.main(stream(f"Event/{job_id}/manifest.json", manifest_for(job_id, files=1)))
    (poisoned,) = drain(app_env, routed["events"] + "-poison")
    assert "connection refused" in poisoned["reason"]
    assert poisoned["message"]["jobId"] == job_id
    assert len(drain(app_env, routed["more"])) == 1  # the other route was not held back
