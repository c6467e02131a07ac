"""Telemetry as an operator reads it: one trace per export job across its queue hops, the metrics, log lines
that name their job, and no secret in any of it. Captured with OpenTelemetry's in-memory exporter and reader."""

from __future__ import annotations

import json
import logging
import urllib.parse
import uuid

import pytest
import requests
from helpers import API_VERSION, app_path, container_sas_url, local_host
from oidc_issuer import SigningKey
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_collect import Device, T
from test_export_faults import DAY, Driver

import ExportWorker
import PollExport
from devhost.__main__ import FieldsFormatter
from shared.export import engine
from shared.export.export_request import parse_request
from shared.export.registry import ROUTES
from shared.platform import apps, config, grants, telemetry
from shared.tasks import jobs, orchestration
from shared.tasks.service import submit_export


class Captured:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()

    def points(self) -> dict:
        """{(metric, attributes): sum for counters, count for histograms}, cumulative since the session began."""
        found = {}
        data = self.reader.get_metrics_data()
        for resource in (data.resource_metrics if data else []):
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "count", None) if hasattr(point, "bucket_counts") else point.value
                        found[(metric.name, frozenset(point.attributes.items()))] = value
        return found


@pytest.fixture(scope="session")
def captured():
    """Global providers can be set once per process: the in-memory ones stay for the rest of the session."""
    capture = Captured()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(capture.spans))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[capture.reader]))
    return capture


def grew(before: dict, after: dict, name: str, **attributes) -> float:
    key = (name, frozenset(attributes.items()))
    return (after.get(key) or 0) - (before.get(key) or 0)


def spans_of(captured: Captured, job_id: str):
    return [span for span in captured.spans.get_finished_spans() if span.attributes.get("export.job_id") == job_id]


def every_attribute_value(captured: Captured) -> list:
    values = []
    for span in captured.spans.get_finished_spans():
        values += [str(value) for value in span.attributes.values()]
        for event in span.events:
            values += [str(value) for value in event.attributes.values()]
    for name, attributes in captured.points():
        values += [name] + [str(value) for _, value in attributes]
    return values


def test_one_job_is_one_trace_with_a_span_per_part_and_its_metrics(captured, app_env, names, settings_override):
    settings_override(EXPORT_PART_MAX_BYTES="1")  # every raw blob starts a new part
    driver = Driver(app_env, names)
    captured.spans.clear()
    before = captured.points()
    job = driver.run(driver.create("CsvBlob"))
    after = captured.points()
    assert job.state == jobs.SUCCEEDED, job.error_details
    assert job.parts_total > 1

    spans = spans_of(captured, job.id)
    (create,) = [span for span in spans if span.name == "export.create"]
    assert create.parent is None
    assert {span.context.trace_id for span in spans} == {create.context.trace_id}
    assert create.attributes["export.type"] == "Event" and create.attributes["export.format"] == "CsvBlob"
    parts = [span for span in spans if span.name == "export.part"]
    assert sorted(span.attributes["export.part"] for span in parts) == list(range(job.parts_total))
    assert all(span.parent.span_id == create.context.span_id for span in parts)  # carried in each message
    assert sum(span.attributes["export.records"] for span in parts) == job.record_count
    assert {span.attributes["messaging.destination.name"] for span in parts} == {orchestration.WORK_QUEUE}
    polls = [span for span in spans if span.name == "export.poll"]
    assert polls and all(span.parent.span_id == create.context.span_id for span in polls)
    (commit,) = [span for span in spans if span.name == "export.commit"]
    assert commit.parent.span_id in {span.context.span_id for span in polls}
    assert commit.attributes["export.parts"] == job.parts_total

    labels = {"export.app": driver.app.id, "export.type": "Event", "export.format": "CsvBlob"}
    assert grew(before, after, "engagement_export.records_exported", **labels) == job.record_count
    assert grew(before, after, "engagement_export.bytes_exported", **labels) == job.bytes
    assert grew(before, after, "engagement_export.job.duration", **labels, **{"export.state": "Succeeded"}) == 1
    assert grew(before, after, "engagement_export.queue.wait",
                **{"messaging.destination.name": orchestration.WORK_QUEUE}) >= job.parts_total
    assert grew(before, after, "engagement_export.queue.wait",
                **{"messaging.destination.name": orchestration.POLL_QUEUE}) >= len(polls)


def test_a_failed_job_is_measured_with_its_state_and_its_span_says_why(captured, app_env, names):
    driver = Driver(app_env, names)
    job = driver.create("JsonBlob")
    captured.spans.clear()
    before = captured.points()
    orchestration.cancel(job.app_id, job.id)
    after = captured.points()
    labels = {"export.app": driver.app.id, "export.type": "Event", "export.format": "JsonBlob"}
    assert grew(before, after, "engagement_export.job.duration", **labels, **{"export.state": "Failed"}) == 1
    assert grew(before, after, "engagement_export.records_exported", **labels) == 0


def test_a_part_that_raises_marks_its_span_failed_without_the_signature_its_error_quotes(captured, app_env,
                                                                                         names, monkeypatch):
    driver = Driver(app_env, names)
    job = driver.create("CsvBlob")
    (poll,) = driver.take(orchestration.POLL_QUEUE)
    driver.deliver(orchestration.POLL_QUEUE, PollExport.main, poll)
    captured.spans.clear()

    signature = "c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"

    def broken(*args, **kwargs):  # as urllib3 words a connection that failed: the URL, query and all
        raise ConnectionError(f"Max retries exceeded with url: /acct/out/Event/x?sv=2024&sr=c&sig={signature}")

    monkeypatch.setattr(engine, "produce", broken)
    (work, _raw) = driver.take(orchestration.WORK_QUEUE)[0]
    with pytest.raises(ConnectionError):
        ExportWorker.main(work)
    (part,) = [span for span in spans_of(captured, job.id) if span.name == "export.part"]
    assert not part.status.is_ok
    (event,) = part.events
    assert event.name == "exception" and event.attributes["exception.type"] == "ConnectionError"
    assert "sig=REDACTED" in event.attributes["exception.message"]
    assert "Max retries exceeded" in event.attributes["exception.stacktrace"]
    texts = [part.status.description] + [str(value) for value in event.attributes.values()]
    assert not [text for text in texts if signature in text]


def test_no_sas_signature_or_key_reaches_any_attribute(captured, app_env, names):
    driver = Driver(app_env, names)
    url = container_sas_url(app_env, driver.container)
    captured.spans.clear()
    job = driver.run(submit_export(driver.app, parse_request(ROUTES["events"], {
        "containerUrl": url, "startDate": DAY.isoformat(), "endDate": DAY.isoformat()}, max_range_days=366, today=DAY)))
    assert job.state == jobs.SUCCEEDED, job.error_details
    signature = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["sig"][0]
    account_key = app_env.connection_string.split("AccountKey=")[1].split(";")[0]
    values = every_attribute_value(captured)
    assert len(spans_of(captured, job.id)) >= 3
    for value in values:
        assert "sig=" not in value and signature not in value and account_key not in value, value


def test_records_ingested_count_once_per_stored_batch(captured, app_env, names):
    device = Device(app_env, names)
    batch = [{"type": "event", "deviceId": f"d{i}", "timestamp": T, "name": "open"} for i in range(3)]
    before = captured.points()
    assert device.post(batch)[0] == 200
    key = {"Idempotency-Key": f"k-{names.token}"}
    assert device.post(batch, headers=key)[0] == 200
    assert device.post(batch, headers=key)[0] == 200  # a replay stores nothing
    after = captured.points()
    assert grew(before, after, "engagement_export.records_ingested", **{"export.app": device.app_id}) == 6


def test_log_lines_of_a_job_carry_its_job_app_and_part(captured, app_env, names, caplog):
    driver = Driver(app_env, names)
    with caplog.at_level(logging.INFO, logger="shared"):
        job = driver.run(driver.create("CsvBlob"))
    ours = [record for record in caplog.records if record.name.startswith("shared.")]
    assert ours
    for record in ours:
        assert (record.jobId, record.app) == (job.id, driver.app.id), record.getMessage()
    part_lines = [record for record in ours if " part " in record.getMessage()]
    assert part_lines and all(record.part == 0 for record in part_lines)
    printed = FieldsFormatter("%(message)s").format(part_lines[0])  # as the local host prints it
    assert printed.endswith(f" [jobId={job.id} app={driver.app.id} part=0]")
    assert not hasattr(logging.getLogger("shared").makeRecord("x", logging.INFO, "f", 1, "m", (), None), "jobId")


def test_messages_carry_the_trace_and_survive_a_bad_one():
    message = orchestration.WorkMessage("a~b", "job", 3, 2, trace="00-" + "1" * 32 + "-" + "2" * 16 + "-01", due=5.0)
    assert orchestration.WorkMessage.from_json(message.to_json().encode()) == message
    doc = json.loads(message.to_json())
    doc.update(trace=12, due="soon")
    bare = orchestration.WorkMessage("a~b", "job", 3, 2)
    assert orchestration.WorkMessage.from_json(json.dumps(doc).encode()) == bare
    assert orchestration.PollMessage.from_json(b'{"app": "a~b", "job": "j"}') == orchestration.PollMessage("a~b", "j")


def test_azure_monitor_starts_only_with_a_connection_string_and_without_url_recording(monkeypatch):
    import azure.monitor.opentelemetry as distro

    calls = []
    monkeypatch.setattr(distro, "configure_azure_monitor", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(telemetry, "_configured", False)
    assert telemetry.configure({}) is False
    assert calls == []
    monkeypatch.setattr(telemetry, "_configured", False)
    connection = "InstrumentationKey=00000000-0000-0000-0000-000000000000"
    assert telemetry.configure({config.APPINSIGHTS_CONNECTION: connection}) is True
    assert telemetry.configure({}) is True  # once per process
    (options,) = calls
    assert options["connection_string"] == connection
    for name in ("azure_sdk", "requests", "urllib", "urllib3"):
        assert options["instrumentation_options"][name] == {"enabled": False}
    (processor,) = options["log_record_processors"]
    assert type(processor).__name__ == "Redacting"



def test_exported_log_records_carry_no_signature_or_account_key():
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(telemetry.redacting_log_processor())  # first, as the distro adds ours
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("shared.test-redaction")
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        try:
            raise ConnectionError("Max retries exceeded with url: /a/c/b?sv=1&sig=S3cr3tSig%3D")
        except ConnectionError:
            logger.exception("copy of %s failed", "https://a.blob.core.windows.net/c?sp=w&sig=S3cr3tSig%3D")
        logger.warning("connection: AccountKey=S3cr3tKey==;EndpointSuffix=core.windows.net")
    finally:
        logger.removeHandler(handler)
    records = [data.log_record for data in exporter.get_finished_logs()]
    assert len(records) == 2
    texts = [str(record.body) for record in records] + [str(value) for record in records
                                                         for value in (record.attributes or {}).values()]
    assert any("sig=REDACTED" in text for text in texts) and any("AccountKey=REDACTED" in text for text in texts)
    assert not [text for text in texts if "S3cr3t" in text]


def test_a_connection_string_the_distro_refuses_leaves_telemetry_off_and_says_which_setting(monkeypatch, caplog):
    import azure.monitor.opentelemetry as distro

    def refuse(**kwargs):
        raise ValueError("Invalid instrumentation key")

    monkeypatch.setattr(distro, "configure_azure_monitor", refuse)
    monkeypatch.setattr(telemetry, "_configured", False)
    with caplog.at_level(logging.ERROR, logger="shared.platform.telemetry"):
        assert telemetry.configure({config.APPINSIGHTS_CONNECTION: "InstrumentationKey=not-a-key"}) is False
    assert [record.getMessage() for record in caplog.records] == [
        "Telemetry is off: APPLICATIONINSIGHTS_CONNECTION_STRING could not be used (ValueError: Invalid "
        "instrumentation key)"]


def test_no_token_or_key_reaches_a_span(captured, app_env, names, tokens):
    """Tasks created through the local host with an Entra ID token and with an export key, and requests refused for
    a forged token: no credential, nor a token's signature, is in any span's attributes or events."""
    collection = f"tel-{names.token}"
    keys = apps.register_app(collection, "game")
    principal = str(uuid.uuid4())
    grants.put_grant(principal, collection, "game", None)
    token = tokens.token(roles=[grants.EXPORT_READ, grants.EXPORT_WRITE], oid=principal)
    forged = tokens.token(roles=[grants.EXPORT_READ, grants.EXPORT_WRITE], oid=principal, key=SigningKey())
    container = container_sas_url(app_env, names.container("tel"))
    captured.spans.clear()
    with local_host("ExportTasks") as host:
        url = f"{host.base_url}{app_path(collection, 'game')}/exportTasks"
        for credential, status in ((token, 202), (keys.export_key, 202), (forged, 401)):
            response = requests.post(f"{url}/tags", params={"api-version": API_VERSION},
                                     json={"containerUrl": container},
                                     headers={"Authorization": f"Bearer {credential}"}, timeout=30)
            assert response.status_code == status, response.text
    assert len([span for span in captured.spans.get_finished_spans() if span.name == "export.create"]) == 2
    values = "\n".join(every_attribute_value(captured))
    for secret in (token, token.rsplit(".", 1)[1], forged.rsplit(".", 1)[1], keys.export_key, keys.collect_key):
        assert secret not in values
