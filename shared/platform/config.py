"""Every setting the app reads, named once, read in one place.

Settings come from environment variables: the Functions host sets them from the app's configuration in Azure
and from ``local.settings.json`` locally. ``get_settings()`` reads them once per process and fails on the
first call when a required one is missing, naming it, so a misconfigured app stops at start instead of
failing half-way through a job.

Every setting is declared once, in SETTINGS: its name, its field, how it is read and checked, its default and
its line of documentation. The module is as long as that table is: one entry a setting, in one place.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# The storage connection, as the Functions host names it. A connection string in development; in Azure the
# identity-based form (`AzureWebJobsStorage__accountName`, or explicit service URIs) with a managed identity.
STORAGE_CONNECTION = "AzureWebJobsStorage"
STORAGE_ACCOUNT_NAME = "AzureWebJobsStorage__accountName"
STORAGE_BLOB_URI = "AzureWebJobsStorage__blobServiceUri"
STORAGE_QUEUE_URI = "AzureWebJobsStorage__queueServiceUri"
STORAGE_TABLE_URI = "AzureWebJobsStorage__tableServiceUri"

# Symmetric key (Fernet, urlsafe base64 of 32 bytes) that encrypts the destination SAS at rest.
SAS_ENCRYPTION_KEY = "EXPORT_SAS_ENCRYPTION_KEY"
# Development only: accept `http://127.0.0.1:<port>/...` (Azurite) as an export destination.
ALLOW_LOOPBACK_DESTINATIONS = "EXPORT_ALLOW_LOOPBACK_DESTINATIONS"
# Longest `[startDate, endDate]` range of one historical export, in days (both ends included).
MAX_RANGE_DAYS = "EXPORT_MAX_RANGE_DAYS"
# Largest request body the export API accepts, in bytes.
MAX_REQUEST_BYTES = "EXPORT_MAX_REQUEST_BYTES"
# Whether job creation probes the destination with a write (and removes it) before answering 202.
PROBE_DESTINATION = "EXPORT_PROBE_DESTINATION"
# A result file holds at most about this many bytes of raw (gzip) input before the next part begins.
PART_MAX_BYTES = "EXPORT_PART_MAX_BYTES"
# How many work items one process exports at once (each holds a few blocks in memory).
WORKER_CONCURRENCY = "EXPORT_WORKER_CONCURRENCY"
# How many work items of one job are on the shared work queue at once (each that ends sends the next).
JOB_ITEMS_IN_FLIGHT = "EXPORT_JOB_ITEMS_IN_FLIGHT"
# How many processes beside the worker's convert raw rows to CSV (parse, encode, compress), so a CSV export
# uses every core; 0 converts in the worker's own process. Default: the core count, or 0 on a single core.
CONVERT_PROCESSES = "EXPORT_CONVERT_PROCESSES"
# How long one call to an export destination may wait to connect, and then for an answer, in seconds; and how
# many times a failed call is tried again before the destination counts as not answering.
DESTINATION_TIMEOUT = "EXPORT_DESTINATION_TIMEOUT_SECONDS"
DESTINATION_RETRIES = "EXPORT_DESTINATION_RETRIES"
# A destination SAS that expires sooner than this many minutes after the job's creation is refused (0: only an
# expired one): a job it cannot outlive would fail half-way.
SAS_EXPIRY_MARGIN = "EXPORT_SAS_EXPIRY_MARGIN_MINUTES"
# A job still running this many hours after it started ends as Failed.
JOB_DEADLINE_HOURS = "EXPORT_JOB_DEADLINE_HOURS"
# Days an app's raw records are kept unless the app sets its own rawRetentionDays (shared.platform.retention).
RAW_RETENTION_DAYS = "RAW_RETENTION_DAYS"
# The app's destination storage for scheduled exports (a connection string), where OnBlobCreated listens.
DESTINATION_STORAGE = "DestinationStorage"
# The container of that storage that scheduled exports write to (OnBlobCreated's blob path uses it).
SCHEDULE_CONTAINER = "EXPORT_SCHEDULE_CONTAINER"
# JSON object: export type -> list of downstream queue names, for forwarded result files.
FORWARD_ROUTES = "EXPORT_FORWARD_ROUTES"
# The downstream queue for export types the routing table does not name.
FORWARD_DEFAULT_QUEUE = "EXPORT_FORWARD_DEFAULT_QUEUE"
# Optional webhook that receives each forwarded message as a signed POST, and its HMAC secret.
FORWARD_WEBHOOK_URL = "EXPORT_FORWARD_WEBHOOK_URL"
FORWARD_WEBHOOK_SECRET = "EXPORT_FORWARD_WEBHOOK_SECRET"
# JSON list of scheduled exports (see docs/exports.md), and how many missed periods a schedule catches up at most.
SCHEDULES = "EXPORT_SCHEDULES"
SCHEDULE_MAX_CATCHUP = "EXPORT_SCHEDULE_MAX_CATCHUP"
# Records per second one app may send through Collect to one instance; 0 (the default) sets no limit.
COLLECT_RATE_LIMIT = "COLLECT_RATE_LIMIT_RECORDS_PER_SECOND"
# How long an instance trusts an app's key hashes it read, in seconds: a rotated key stops working this late.
COLLECT_KEY_CACHE_SECONDS = "COLLECT_KEY_CACHE_SECONDS"
# An Idempotency-Key claimed by a request that never finished (its process died) is taken over after this
# many seconds; a second copy of a batch in flight waits this long for the first one's answer.
IDEMPOTENCY_LEASE = "COLLECT_IDEMPOTENCY_LEASE_SECONDS"
IDEMPOTENCY_WAIT = "COLLECT_IDEMPOTENCY_WAIT_SECONDS"
# Entra ID (Azure AD) access tokens on the API (shared.platform.identity): the tenant's issuer, whose
# `{issuer}/.well-known/openid-configuration` names the signing keys; the audiences a token may be for
# (comma-separated: the API's application id and its app ID URI); whether an issuer on loopback is accepted
# (development and tests); and whether an app's export key still opens its own app.
AUTH_ISSUER = "AUTH_ISSUER"
AUTH_AUDIENCE = "AUTH_AUDIENCE"
AUTH_ALLOW_LOOPBACK_ISSUER = "AUTH_ALLOW_LOOPBACK_ISSUER"
AUTH_EXPORT_KEYS = "AUTH_EXPORT_KEYS"

# Application Insights, as the Functions host and the Azure Monitor distro name it: telemetry is exported
# through OpenTelemetry when it is set, and not at all when it is not (shared.platform.telemetry).
APPINSIGHTS_CONNECTION = "APPLICATIONINSIGHTS_CONNECTION_STRING"


def appinsights_connection(env: Mapping[str, str]) -> str | None:
    """Read apart from load_settings: telemetry starts even when another setting is wrong, to report it."""
    return _text(env, APPINSIGHTS_CONNECTION)


DEVELOPMENT_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class StorageSettings:
    """How to reach the app's own storage account: a connection string, or service URIs plus an identity."""

    connection_string: str | None = None
    blob_url: str | None = None
    queue_url: str | None = None
    table_url: str | None = None

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None


@dataclass(frozen=True)
class Settings:
    """The settings in force, one field per setting of SETTINGS (whose entries give each its default)."""

    storage: StorageSettings
    sas_encryption_key: str
    allow_loopback_destinations: bool
    max_range_days: int
    max_request_bytes: int
    probe_destination: bool
    part_max_bytes: int
    worker_concurrency: int
    job_items_in_flight: int
    convert_processes: int
    job_deadline_hours: int
    raw_retention_days: int
    sas_expiry_margin_minutes: int
    destination_timeout_seconds: int
    destination_retries: int
    destination_connection: str | None
    schedule_container: str
    forward_routes: Mapping[str, tuple]
    forward_default_queue: str
    webhook_url: str | None
    webhook_secret: str | None
    schedules_json: str | None
    schedule_max_catchup: int
    collect_rate_limit: int
    collect_key_cache_seconds: int
    idempotency_lease_seconds: int
    idempotency_wait_seconds: int
    auth_issuer: str | None
    auth_audiences: tuple[str, ...]
    allow_loopback_issuer: bool
    export_keys: bool


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _text(env, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def _positive_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1,
                  maximum: int | None = None) -> int:
    value = _text(env, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be {minimum} or more, not {number}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{name} must be {maximum} or less, not {number}")
    return number


def _default_convert_processes() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if cores > 1 else 0


def expand_connection_string(connection: str) -> str:
    """The explicit form of `UseDevelopmentStorage=true` (Azurite's default ports); other strings unchanged."""
    if connection.replace(" ", "").lower().rstrip(";") == "usedevelopmentstorage=true":
        return DEVELOPMENT_CONNECTION_STRING
    return connection


def _storage(env: Mapping[str, str]) -> StorageSettings:
    connection = _text(env, STORAGE_CONNECTION)
    if connection:
        return StorageSettings(connection_string=expand_connection_string(connection))
    account = _text(env, STORAGE_ACCOUNT_NAME)
    explicit = {
        "blob": _text(env, STORAGE_BLOB_URI),
        "queue": _text(env, STORAGE_QUEUE_URI),
        "table": _text(env, STORAGE_TABLE_URI),
    }
    if account:
        for service in explicit:
            explicit[service] = explicit[service] or f"https://{account}.{service}.core.windows.net"
    missing = [name for name, url in zip((STORAGE_BLOB_URI, STORAGE_QUEUE_URI, STORAGE_TABLE_URI), explicit.values())
               if not url]
    if missing:
        raise ConfigError(
            f"{STORAGE_CONNECTION} is not set: give a connection string, or {STORAGE_ACCOUNT_NAME} "
            f"(managed identity), or all of {', '.join(missing)}"
        )
    return StorageSettings(blob_url=explicit["blob"], queue_url=explicit["queue"], table_url=explicit["table"])


# The hosts of a loopback URL, as urlsplit's hostname gives them (lower case, IPv6 without brackets).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _issuer(env: Mapping[str, str]) -> str | None:
    issuer = _text(env, AUTH_ISSUER)
    if issuer is None:
        return None
    parts = urlsplit(issuer)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment \
            or "@" in parts.netloc:
        raise ConfigError(f"{AUTH_ISSUER} must be the tenant's issuer URL, such as "
                          f"https://login.microsoftonline.com/<tenant id>/v2.0, not {issuer!r}")
    loopback = parts.hostname in LOOPBACK_HOSTS
    if loopback and not _flag(env, AUTH_ALLOW_LOOPBACK_ISSUER, False):
        raise ConfigError(f"{AUTH_ISSUER} is on loopback ({issuer}); set {AUTH_ALLOW_LOOPBACK_ISSUER}=true to accept "
                          f"a local issuer (development and tests only)")
    if parts.scheme != "https" and not loopback:
        raise ConfigError(f"{AUTH_ISSUER} must be an https URL, not {issuer!r}")
    return issuer


def _audiences(env: Mapping[str, str]) -> tuple[str, ...]:
    audiences = tuple(part.strip() for part in (_text(env, AUTH_AUDIENCE) or "").split(",") if part.strip())
    if _text(env, AUTH_ISSUER) is not None and not audiences:
        raise ConfigError(f"{AUTH_AUDIENCE} is not set: with {AUTH_ISSUER}, give the audiences a token may be for "
                          f"(the API's application id and app ID URI, comma-separated)")
    return audiences


def _encryption_key(env: Mapping[str, str]) -> str:
    key = _text(env, SAS_ENCRYPTION_KEY)
    if key is None:
        raise ConfigError(f"{SAS_ENCRYPTION_KEY} is not set (a Fernet key: urlsafe base64 of 32 random bytes)")
    try:
        valid = len(base64.urlsafe_b64decode(key.encode("ascii"))) == 32
    except (ValueError, UnicodeEncodeError):
        valid = False
    if not valid:
        raise ConfigError(f"{SAS_ENCRYPTION_KEY} is not a Fernet key (urlsafe base64 of exactly 32 bytes)")
    return key


@dataclass(frozen=True)
class Setting:
    """One setting, declared once: its name, the Settings field it fills (None: read with another, or apart), how
    it is read and checked from the environment, its default as the documentation shows it, and its line of
    documentation. The settings table of docs/operations.md is made from these (``markdown_table``)."""

    name: str
    field: str | None
    read: Callable[[Mapping[str, str]], Any]
    default: str
    doc: str


def _number(name: str, field: str, default: int, doc: str, *, minimum: int = 1, maximum: int | None = None,
            shown: str | None = None) -> Setting:
    return Setting(name, field, lambda env: _positive_int(env, name, default, minimum=minimum, maximum=maximum),
                   shown or f"`{default}`", doc)


def _switch(name: str, field: str, default: bool, doc: str) -> Setting:
    return Setting(name, field, lambda env: _flag(env, name, default), f"`{str(default).lower()}`", doc)


def _word(name: str, field: str, default: str | None, doc: str) -> Setting:
    return Setting(name, field, lambda env: _text(env, name) or default, f"`{default}`" if default else "", doc)


SETTINGS: tuple[Setting, ...] = (
    Setting(STORAGE_CONNECTION, "storage", lambda env: _storage(env),
            "required, unless the identity form below is used",
            "the app's own storage (jobs, keys, raw store, queues): a connection string; `UseDevelopmentStorage=true` "
            "means Azurite's default ports"),
    Setting(STORAGE_ACCOUNT_NAME, None, lambda env: _text(env, STORAGE_ACCOUNT_NAME), "",
            "in Azure without a key: the account name, reached with a managed identity (`DefaultAzureCredential`); "
            "or give `AzureWebJobsStorage__blobServiceUri`, `__queueServiceUri`, `__tableServiceUri`"),
    Setting(SAS_ENCRYPTION_KEY, "sas_encryption_key", _encryption_key, "required",
            "Fernet key (urlsafe base64 of 32 random bytes) that encrypts each job's destination SAS at rest; "
            "generate one with `python -c \"from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())\"`"),
    _switch(ALLOW_LOOPBACK_DESTINATIONS, "allow_loopback_destinations", False,
            "development only: accept `http(s)://127.0.0.1|localhost|[::1]:<port>/<account>/<container>` (Azurite) "
            "as a destination"),
    _number(MAX_RANGE_DAYS, "max_range_days", 366, "longest range of one historical export (both ends included)"),
    _number(MAX_REQUEST_BYTES, "max_request_bytes", 64 * 1024, "largest exportTasks request body"),
    _switch(PROBE_DESTINATION, "probe_destination", True,
            "check the destination live at creation (stages one uncommitted block: nothing visible is left)"),
    _number(PART_MAX_BYTES, "part_max_bytes", 64 * 1024 * 1024,
            "a result file takes raw input up to about this size, then the next `part-NNNNN` begins; parts are "
            "written in parallel", shown="`67108864` (64 MiB)"),
    _number(WORKER_CONCURRENCY, "worker_concurrency", 2,
            "work items (result files) one process exports at once; bounds memory (one more slot is kept for apps "
            "that hold none)"),
    _number(JOB_ITEMS_IN_FLIGHT, "job_items_in_flight", 2,
            "work items of one job on the shared queue at once; each that ends sends the next"),
    Setting(CONVERT_PROCESSES, "convert_processes",
            lambda env: _positive_int(env, CONVERT_PROCESSES, _default_convert_processes(), minimum=0),
            "the core count (`0` on one core)",
            "processes beside the worker that convert raw rows to CSV (parse, encode, compress), so a CSV export "
            "uses every core; `0` converts in the worker itself. ParquetBlob reads its rows with DuckDB in the "
            "worker instead, each part on this many cores divided by `EXPORT_WORKER_CONCURRENCY` (one at least)"),
    _number(JOB_DEADLINE_HOURS, "job_deadline_hours", 24,
            "a job still running this long after it started ends as Failed; a snapshot state replaced this long "
            "ago is removed; a day the app's retention no longer keeps is removed this long after it left it"),
    _number(RAW_RETENTION_DAYS, "raw_retention_days", 730,
            "days an app's raw records are kept when the app sets no `rawRetentionDays` of its own: older days "
            "are deleted by `ApplyRetention`, exports and backfills asking for them are refused, and devices not "
            "seen for that long leave the snapshot (see [data-rights.md](data-rights.md#retention)); two years, "
            "so that a year can be compared with the one before", maximum=3650),
    _number(SAS_EXPIRY_MARGIN, "sas_expiry_margin_minutes", 60,
            "a destination SAS that expires sooner than this after creation is refused with a 400 giving its "
            "expiry (`0`: only an expired one); a SAS that expires while the job runs still fails it, naming the "
            "time", minimum=0),
    _number(DESTINATION_TIMEOUT, "destination_timeout_seconds", 30,
            "how long one call to a destination may wait to connect, and again for its answer"),
    _number(DESTINATION_RETRIES, "destination_retries", 2,
            "further tries of a destination call that failed or timed out, before the job fails", minimum=0),
    Setting(DESTINATION_STORAGE, "destination_connection",
            lambda env: expand_connection_string(_text(env, DESTINATION_STORAGE) or "") or None,
            "required by `OnBlobCreated`",
            "connection string of the destination storage that `OnBlobCreated` watches (and where downstream "
            "queues live)"),
    _word(SCHEDULE_CONTAINER, "schedule_container", "scheduled-exports",
          "the container of that storage that `OnBlobCreated` watches (`%...%` in its function.json)"),
    Setting(FORWARD_ROUTES, "forward_routes", lambda env: _routes(env), "`{}`",
            "JSON: export type -> list of queue names, e.g. `{\"Event\": [\"events-in\"]}`"),
    _word(FORWARD_DEFAULT_QUEUE, "forward_default_queue", "export-files",
          "the queue for types the routing table does not name"),
    _word(FORWARD_WEBHOOK_URL, "webhook_url", None,
          "optional: an https URL that receives each forwarded message as a POST"),
    Setting(FORWARD_WEBHOOK_SECRET, "webhook_secret", lambda env: _webhook_secret(env), "",
            "the HMAC-SHA256 key that signs those POSTs (required with the URL)"),
    Setting(SCHEDULES, "schedules_json", lambda env: _text(env, SCHEDULES), "`[]`",
            "JSON array of scheduled exports, the operator's pipelines (see "
            "[exports.md](exports.md#scheduled-exports-and-forwarding))"),
    _number(SCHEDULE_MAX_CATCHUP, "schedule_max_catchup", 7,
            "a schedule's pipeline starts this many periods before the timer first sees it (it then delivers "
            "every period, those missed while the app was down included)"),
    _number(COLLECT_RATE_LIMIT, "collect_rate_limit", 0,
            "records a second one app may send through Collect to one instance (429 with `Retry-After` past it; "
            "bursts of two seconds' worth pass); `0` sets no limit", minimum=0),
    _number(COLLECT_KEY_CACHE_SECONDS, "collect_key_cache_seconds", 30,
            "how long an instance keeps an app's collect-key hash: a rotated (old) key stops working at most this "
            "late; a new key works at once", minimum=0),
    _number(IDEMPOTENCY_LEASE, "idempotency_lease_seconds", 120,
            "an `Idempotency-Key` claimed by a request whose process died is taken over by a copy after this long"),
    _number(IDEMPOTENCY_WAIT, "idempotency_wait_seconds", 10,
            "how long a copy of a batch still being stored waits for its answer before a 409", minimum=0),
    Setting(AUTH_ISSUER, "auth_issuer", _issuer, "",
            "the Entra ID tenant's token issuer, exactly as tokens name it (`https://login.microsoftonline.com/"
            "<tenant id>/v2.0`): the API then takes access tokens signed with the keys its "
            "`/.well-known/openid-configuration` names; unset, it takes no tokens"),
    Setting(AUTH_AUDIENCE, "auth_audiences", _audiences, "required with `AUTH_ISSUER`",
            "the audiences (`aud`) a token may be for, comma-separated: the API's application (client) id and its "
            "app ID URI"),
    _switch(AUTH_ALLOW_LOOPBACK_ISSUER, "allow_loopback_issuer", False,
            "development and tests only: accept an `AUTH_ISSUER` (and its keys) over http on 127.0.0.1, localhost "
            "or [::1]"),
    _switch(AUTH_EXPORT_KEYS, "export_keys", True,
            "an app's export key opens its own app's exportTasks, as before tokens; `false` leaves tokens alone "
            "(collect keys always work)"),
    Setting(APPINSIGHTS_CONNECTION, None, appinsights_connection, "",
            "when set, traces, metrics and logs go to that Application Insights resource through OpenTelemetry "
            "(see Telemetry, below); when not, nothing is recorded"),
)


def load_settings(env: Mapping[str, str]) -> Settings:
    """Reads and checks every setting of SETTINGS from ``env``; raises ConfigError naming the first bad one."""
    return Settings(**{setting.field: setting.read(env) for setting in SETTINGS if setting.field is not None})


def markdown_table() -> str:
    """The settings table of docs/operations.md, made from SETTINGS."""
    rows = ["| setting | meaning | default |", "|---|---|---|"]
    rows += [f"| `{setting.name}` | {setting.doc} |{f' {setting.default} ' if setting.default else ' '}|"
             for setting in SETTINGS]
    return "\n".join(rows) + "\n"


def _webhook_secret(env: Mapping[str, str]) -> str | None:
    url, secret = _text(env, FORWARD_WEBHOOK_URL), _text(env, FORWARD_WEBHOOK_SECRET)
    if url and not secret:
        raise ConfigError(f"{FORWARD_WEBHOOK_SECRET} is not set: {FORWARD_WEBHOOK_URL} needs a secret to sign with")
    if url and not url.lower().startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ConfigError(f"{FORWARD_WEBHOOK_URL} must be an https URL")
    return secret


def _routes(env: Mapping[str, str]) -> Mapping[str, tuple]:
    text = _text(env, FORWARD_ROUTES)
    if text is None:
        return {}
    try:
        routes = json.loads(text)
    except ValueError:
        raise ConfigError(f"{FORWARD_ROUTES} must be a JSON object such as {{\"Event\": [\"events-in\"]}}") from None
    if not isinstance(routes, dict) or not all(
            isinstance(queues, list) and all(isinstance(q, str) and q for q in queues) for queues in routes.values()):
        raise ConfigError(f"{FORWARD_ROUTES} must map export types to lists of queue names")
    return {kind: tuple(queues) for kind, queues in routes.items()}


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings(os.environ)


def reset_settings() -> None:
    """Forgets the cached settings, and so the clients built from them (shared.platform.storage); for tests and
    the local host."""
    get_settings.cache_clear()


if __name__ == "__main__":
    print(markdown_table(), end="")
