"""What the app tells its operators: one trace per export job, metrics, and log lines that name their job.

Through OpenTelemetry: the Azure Monitor distro exports everything when APPLICATIONINSIGHTS_CONNECTION_STRING is
set (configured on first use, not at import); when it is not, the API's no-op providers make every call here
free. Tests install in-memory providers instead.

- Traces: a job's trace starts where the job is created (`export.create`); its W3C `traceparent` is kept on
  the job and carried in every queue message of the job, so each hop (`export.poll`, `export.part`, and the
  commit inside a poll) is a span of that one trace, in whichever process or instance it runs.
- Metrics: records ingested, records and bytes exported, job duration, queue wait.
- Logs: inside a job's scope every log record carries `jobId`, `app` and `part` as attributes, which the
  exporter sends as structured fields (customDimensions) and the local host prints.

Attributes hold ids, counts, types and formats only, never a URL: a destination's URL carries its SAS. For the
same reason the distro's HTTP-client and Azure SDK instrumentations stay off: their spans record each request's
full URL, signature included.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from shared.platform.config import APPINSIGHTS_CONNECTION, appinsights_connection

NAME = "engagement_export"
LOG_FIELDS = ("jobId", "app", "part")
# Their spans would carry each storage request's URL, and a destination's URL carries its SAS signature.
_URL_RECORDING_INSTRUMENTATIONS = ("azure_sdk", "requests", "urllib", "urllib3", "httpx")

_tracer = trace.get_tracer(NAME)
_meter = metrics.get_meter(NAME)
_records_ingested = _meter.create_counter(
    "engagement_export.records_ingested", unit="{record}", description="records accepted by Collect and stored")
_records_exported = _meter.create_counter(
    "engagement_export.records_exported", unit="{record}", description="records in the files of succeeded exports")
_bytes_exported = _meter.create_counter(
    "engagement_export.bytes_exported", unit="By", description="bytes of the files of succeeded exports")
_job_duration = _meter.create_histogram(
    "engagement_export.job.duration", unit="s", description="from an export's creation to its end")
_queue_wait = _meter.create_histogram(
    "engagement_export.queue.wait", unit="s", description="from when a message was due to when a function took it")

_NO_FIELDS: Mapping[str, str | int] = MappingProxyType({})
_log_fields: ContextVar[Mapping[str, str | int]] = ContextVar("engagement_export_log_fields",
                                                                    default=_NO_FIELDS)
_lock = threading.Lock()
_configured = False
_exporting = False


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Once per process: the log fields, and the Azure Monitor exporters when the connection string is set.
    Returns whether telemetry is exported."""
    global _configured, _exporting
    if _configured:  # every span and metric comes here: no lock once done
        return _exporting
    with _lock:
        if _configured:
            return _exporting
        _configured = True
        _add_log_fields_to_records()
        connection = appinsights_connection(os.environ if env is None else env)
        if connection:
            try:
                _start_azure_monitor(connection)
            except Exception as error:  # telemetry that cannot start must not stop exports and ingestion
                logging.getLogger(__name__).error("Telemetry is off: %s could not be used (%s: %s)",
                                                  APPINSIGHTS_CONNECTION, type(error).__name__, redacted(str(error)))
                connection = None
        _exporting = bool(connection)
        return _exporting


def _start_azure_monitor(connection: str) -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor

    # The cloud role name comes from the distro's Azure resource detectors (the function app's name), or from
    # OTEL_SERVICE_NAME when it is set.
    configure_azure_monitor(
        connection_string=connection,
        # The app's own loggers (shared.*) and the function folders' root logging; the host's copy of each line
        # has no fields.
        logger_name="",
        instrumentation_options={name: {"enabled": False} for name in _URL_RECORDING_INSTRUMENTATIONS},
        log_record_processors=[redacting_log_processor()],
    )


def redacting_log_processor():
    """A log record processor that redacts SAS signatures and account keys from each record's message and
    attributes (an exception's text among them) before the exporter's processor sees it."""
    from opentelemetry.sdk._logs import LogRecordProcessor

    class Redacting(LogRecordProcessor):
        def on_emit(self, log_record) -> None:
            record = log_record.log_record
            if isinstance(record.body, str):
                record.body = redacted(record.body)
            for name, value in list((record.attributes or {}).items()):
                if isinstance(value, str):
                    record.attributes[name] = redacted(value)

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return Redacting()


def _add_log_fields_to_records() -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "adds_job_fields", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        for name, value in _log_fields.get().items():
            setattr(record, name, value)
        return record

    factory.adds_job_fields = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to carry in a message or keep on a job (None when no trace is
    being recorded)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def job_scope(name: str, *, job_id: str, app_id: str, part: int | None = None,
              traceparent: str | None = None, queue: str | None = None, due: float | None = None,
              attributes: Mapping[str, str | int] | None = None) -> Iterator[Span]:
    """A span of a job's trace (the child of ``traceparent`` when given, else of the current span), inside
    which every log record carries the job's fields. An exception leaving the scope marks the span failed.

    ``queue``: the scope handles a message of that queue, which was due (visible) at epoch ``due``; the wait
    is recorded and the span is a consumer's."""
    configure()
    fields: dict[str, str | int] = {"jobId": job_id, "app": app_id}
    span_attributes: dict[str, str | int] = {"export.job_id": job_id, "export.app": app_id}
    if part is not None:
        fields["part"] = part
        span_attributes["export.part"] = part
    if queue is not None:
        span_attributes["messaging.destination.name"] = queue
        if due is not None:
            _queue_wait.record(max(0.0, time.time() - due), {"messaging.destination.name": queue})
    span_attributes.update(attributes or {})
    context = propagate.extract({"traceparent": traceparent}) if traceparent else None
    kind = SpanKind.CONSUMER if queue is not None else SpanKind.INTERNAL
    token = _log_fields.set(fields)
    try:
        with _tracer.start_as_current_span(name, context=context, kind=kind, attributes=span_attributes,
                                           record_exception=False, set_status_on_exception=False) as span:
            try:
                yield span
            except BaseException as error:
                _record_failure(span, error)
                raise
    finally:
        _log_fields.reset(token)


# A storage error's text can hold a request's URL, and a destination's URL its SAS signature; a connection
# string holds an account key.
_SECRETS = re.compile(r"(?i)((?:[?&;\s]|^)(?:sig|accountkey|sharedaccesssignature)=)[^&;\s'\"]+")


def redacted(text: str) -> str:
    """The text with SAS signatures and account keys replaced."""
    return _SECRETS.sub(r"\1REDACTED", text)


def _record_failure(span: Span, error: BaseException) -> None:
    """What the SDK's own record_exception writes (the exception event, an error status), with secrets
    redacted from the message and the stack trace."""
    message = redacted(str(error))
    span.add_event("exception", {
        "exception.type": type(error).__qualname__, "exception.message": message,
        "exception.stacktrace": redacted("".join(traceback.format_exception(error))),
        "exception.escaped": True})
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {message}"))


def annotate(**values: str | int) -> None:
    """Adds ``export.<name>`` attributes to the current span (counts, ids: never a URL)."""
    trace.get_current_span().set_attributes({f"export.{name}": value for name, value in values.items()})


def records_ingested(app_id: str, records: int) -> None:
    configure()
    if records:
        _records_ingested.add(records, {"export.app": app_id})


def export_ended(*, app_id: str, export_type: str, export_format: str, state: str, seconds: float,
                 records: int | None, size: int | None) -> None:
    """A job reached Succeeded or Failed: its duration, and for a success what its files hold."""
    configure()
    attributes = {"export.app": app_id, "export.type": export_type, "export.format": export_format}
    _job_duration.record(max(0.0, seconds), dict(attributes, **{"export.state": state}))
    if records is not None:
        _records_exported.add(records, attributes)
    if size is not None:
        _bytes_exported.add(size, attributes)
