"""The export destination: a blob container URL with a SAS token, given by the app's owner.

Checked before any job exists: `https` on an Azure blob endpoint (public and sovereign clouds; `http` on a
loopback host only when development allows it, for Azurite), a SAS that grants write and create and has
not expired. The SAS signature is a secret: the job keeps the container URL without its query, and the
query encrypted (Fernet) for the workers (a SealedDestination); neither a response, a log line nor an error
ever holds it. Every failed call to a destination is classified here, once: permanent (the job fails with a
reason a person can act on) or transient (raised again, so the host retries).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobClient,
    BlobServiceClient,
    ContainerClient,
    ContainerSasPermissions,
    ExponentialRetry,
    generate_container_sas,
)
from cryptography.fernet import Fernet, InvalidToken

from shared.platform.config import get_settings
from shared.platform.errors import PermanentJobError, UnusableDestination
from shared.platform.times import iso, utcnow

BLOB_HOST_SUFFIXES = (
    ".blob.core.windows.net",  # Azure public cloud
    ".blob.core.chinacloudapi.cn",  # Azure China
    ".blob.core.usgovcloudapi.net",  # Azure US Government
    ".blob.storage.azure.net",  # Azure DNS-zone endpoints
)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_FIELD = "containerUrl"


@dataclass(frozen=True)
class Destination:
    """A checked container URL: ``url`` has no query; ``sas`` is the query (a secret); ``expires`` its end."""

    url: str
    sas: str
    expires: dt.datetime

    def container_client(self, **kwargs) -> ContainerClient:
        """A client whose every call is bounded and never follows a redirect (see ``transport_options``)."""
        return ContainerClient.from_container_url(f"{self.url}?{self.sas}", **{**transport_options(), **kwargs})

    def blob_client(self, name: str, **kwargs) -> BlobClient:
        return self.container_client(**kwargs).get_blob_client(name)

    def seal(self) -> SealedDestination:
        """The destination as a job stores it: the SAS encrypted."""
        return SealedDestination(url=self.url, sealed_sas=seal(self.sas), expires=self.expires)

    def failure(self, error: Exception) -> Exception:
        """The error to raise for a failed call of a job's write to this destination: PermanentJobError with the
        reason when no retry can succeed (the SAS expired, the container is gone, ...), else ``error``."""
        if utcnow() >= self.expires:
            return PermanentJobError(expired_reason(self.expires))
        reason = failure_reason(error, self.url)
        return PermanentJobError(reason) if reason else error


@dataclass(frozen=True)
class SealedDestination:
    """A destination as a job row keeps it: the URL, the SAS encrypted, and when it expires."""

    url: str
    sealed_sas: str
    expires: dt.datetime

    def open(self) -> Destination:
        """The destination, its SAS decrypted; PermanentJobError when the key that sealed it is gone."""
        return Destination(url=self.url, sas=unseal(self.sealed_sas), expires=self.expires)


def expired_reason(expires: dt.datetime) -> str:
    return (f"the SAS token of the destination container expired at {iso(expires)} before the export "
            f"finished; create the export again with a SAS valid long enough")


# The check at creation runs inside an API request: it waits less than a job's writes do.
PROBE_TIMEOUT_SECONDS = 10
PROBE_RETRIES = 1


def transport_options(timeout_seconds: int | None = None, retries: int | None = None) -> dict:
    """How every call to a destination goes out: connect and read timeouts, a small retry budget with short
    pauses (the SDK's default waits 15 s and more between tries, so one dead destination held a worker for
    minutes), and no redirects: a destination that answers 3xx is refused, never followed to another host.
    The bounds are the job's settings unless given."""
    settings = get_settings()
    timeout = timeout_seconds or settings.destination_timeout_seconds
    return {"connection_timeout": timeout, "read_timeout": timeout,
            "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, random_jitter_range=1,
                                             retry_total=settings.destination_retries if retries is None else retries),
            "permit_redirects": False}


def _bad(problem: str) -> UnusableDestination:
    return UnusableDestination(f"{_FIELD} {problem}")


def _parse_time(value: str, name: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"has a SAS whose {name} ({value!r}) is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _check_host(scheme: str, host: str, allow_loopback: bool) -> bool:
    """True for an emulator (path-style) endpoint; raises for any host the service must not write to."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if host in LOOPBACK_HOSTS or (address is not None and address.is_loopback):
        if not allow_loopback:
            raise _bad("points at a loopback host; only Azure blob endpoints are accepted")
        if scheme not in ("http", "https"):
            raise _bad("must use https (or http for the development emulator)")
        return True
    if address is not None:
        raise _bad(f"uses an IP address ({host}); give the account's blob endpoint, "
                   f"such as https://<account>.blob.core.windows.net/<container>")
    if scheme != "https":
        raise _bad(f"must use https, not {scheme or 'no scheme'}")
    if not host.endswith(BLOB_HOST_SUFFIXES) or host.count(".") < 4:
        raise _bad(f"host {host!r} is not an Azure blob endpoint (<account>{BLOB_HOST_SUFFIXES[0]})")
    return False


def parse_destination(url: object, *, now: dt.datetime | None = None, reads: bool = False) -> Destination:
    """Checks a containerUrl as the API receives it; raises UnusableDestination saying what is wrong. ``reads``:
    the export reads the container too (a DeltaLake table's log, read before each commit), so the SAS must also
    allow read and list."""
    settings = get_settings()
    now = now or dt.datetime.now(dt.UTC)
    if not isinstance(url, str) or not url.strip():
        raise _bad("is required: the URL of a blob container with a SAS token that can write")
    if len(url) > 4096:
        raise _bad("is longer than 4096 characters")
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise _bad("is not a valid URL") from None
    if not host:
        raise _bad("is not an absolute URL (https://<account>.blob.core.windows.net/<container>?<SAS>)")
    path_style = _check_host(parts.scheme.lower(), host, settings.allow_loopback_destinations)
    segments = [segment for segment in parts.path.split("/") if segment]
    expected = 2 if path_style else 1
    if len(segments) != expected:
        shape = "/<account>/<container>" if path_style else "/<container>"
        raise _bad(f"must name exactly one container (path {shape}), not {parts.path or '/'!r}")
    query = parse_qs(parts.query, keep_blank_values=True)
    if "sig" not in query:
        raise _bad("has no SAS token (the sig parameter is missing); give a SAS with write and create rights")
    permissions = (query.get("sp") or [""])[0]
    needed = (("w", "write"), ("c", "create")) + ((("r", "read"), ("l", "list")) if reads else ())
    missing = [name for letter, name in needed if letter not in permissions]
    if missing:
        raise _bad(f"has a SAS without {' and '.join(missing)} permission (sp={permissions!r}); "
                   f"it needs at least {'rcwl' if reads else 'cw'!r}"
                   + ("; a DeltaLake table's log is read and listed before each commit" if reads else ""))
    if "srt" in query and "o" not in query["srt"][0]:
        raise _bad("has an account SAS that does not cover objects (srt must include 'o')")
    if "se" not in query:
        raise _bad("has a SAS without an expiry time (se)")
    expires = _parse_time(query["se"][0], "expiry")
    if expires <= now:
        raise _bad(f"has a SAS that expired at {expires.isoformat().replace('+00:00', 'Z')}")
    margin = dt.timedelta(minutes=settings.sas_expiry_margin_minutes)
    if expires < now + margin:
        raise _bad(f"has a SAS that expires at {expires.isoformat().replace('+00:00', 'Z')}, less than "
                   f"{settings.sas_expiry_margin_minutes} minutes from now: the export could not finish before it; "
                   f"give a SAS valid for longer (se)")
    if "st" in query and _parse_time(query["st"][0], "start") > now + dt.timedelta(minutes=5):
        raise _bad(f"has a SAS that is not valid before {query['st'][0]}")
    base = f"{parts.scheme.lower()}://{parts.netloc.split('@')[-1]}/{'/'.join(segments)}"
    return Destination(url=base, sas=parts.query, expires=expires)


def probe(destination: Destination, blob_name: str) -> None:
    """Proves the container exists and the SAS can write, leaving no blob behind.

    It stages one uncommitted block: never visible as a blob, replaced when the job writes that name, and
    discarded by the storage service after a week otherwise.
    """
    client = destination.blob_client(blob_name, **transport_options(PROBE_TIMEOUT_SECONDS, PROBE_RETRIES))
    try:
        client.stage_block(block_id=uuid.uuid4().hex, data=b"")
    except AzureError as error:
        reason = failure_reason(error, destination.url, timeout_seconds=PROBE_TIMEOUT_SECONDS, tries=PROBE_RETRIES + 1)
        reason = reason and f"cannot be used: {reason}"
        raise _bad(reason or f"could not be checked ({_storage_code(error)}); try again") from None
    except Exception as error:  # DNS, TLS, a malformed answer: the destination cannot be used as given
        raise _bad(f"could not be reached ({type(error).__name__}); check the account name") from None


def failure_reason(error: Exception, url: str, *, timeout_seconds: int | None = None,
                   tries: int | None = None) -> str | None:
    """What a person can act on when a call to the destination failed, or None when a later try may succeed.

    The one place that reads destination failures: the check at creation and the job's writes both use it
    (a job's calls are bounded by its settings unless ``timeout_seconds`` and ``tries`` say otherwise)."""
    status = getattr(error, "status_code", None)
    code = getattr(error, "error_code", None) or ""
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        settings = get_settings()
        return (f"the destination {url} did not answer within {timeout_seconds or settings.destination_timeout_seconds}"
                f" s on {tries or settings.destination_retries + 1} tries ({type(error).__name__}); check that the "
                f"storage account is up and that no firewall drops the service's requests, then export again")
    if status is not None and 300 <= status < 400:
        return (f"the destination {url} answered with a redirect (HTTP {status}) instead of storing "
                f"the data; redirects are never followed: give the container's own blob endpoint")
    if isinstance(error, ResourceNotFoundError) or code == "ContainerNotFound":
        return f"the destination container {url} does not exist (was it deleted?); create it and export again"
    if code == "InvalidBlockList":
        return (f"the blocks this export staged in {url} are gone: the container was deleted or "
                f"re-created while the export ran; export again")
    if code == "AuthorizationPermissionMismatch":
        return ("the SAS of the destination container lacks write permission; give a SAS with at least create and "
                "write ('cw')")
    if isinstance(error, ClientAuthenticationError) or status in (401, 403):
        return (f"the destination storage refused the SAS ({code or f'HTTP {status}'}): it was revoked, has expired "
                f"or its signing key was rotated; give a new SAS")
    return None


def container_sas_url(connection_string: str, container: str, *, permission: str,
                      valid_for: dt.timedelta) -> str:
    """The URL + SAS of a container of an account given by a key-based connection string (created if
    missing), for the app's own destinations: scheduled exports, the demo and the benchmark."""
    parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    if "AccountKey" not in parts or "AccountName" not in parts:
        raise ValueError("a SAS needs a connection string with AccountName and AccountKey")
    client = BlobServiceClient.from_connection_string(connection_string).get_container_client(container)
    try:
        client.create_container()
    except ResourceExistsError:
        pass
    sas = generate_container_sas(parts["AccountName"], container, account_key=parts["AccountKey"],
                                 permission=ContainerSasPermissions.from_string(permission),
                                 expiry=dt.datetime.now(dt.UTC) + valid_for)
    return f"{client.url}?{sas}"


def _storage_code(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    return getattr(error, "error_code", None) or (f"HTTP {status}" if status else type(error).__name__)


def _fernet() -> Fernet:
    return Fernet(get_settings().sas_encryption_key.encode("ascii"))


def seal(secret: str) -> str:
    """The SAS query encrypted for storage in the job row."""
    return _fernet().encrypt(secret.encode("utf-8")).decode("ascii")


def unseal(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise PermanentJobError("the stored destination SAS cannot be decrypted with the current "
                                "EXPORT_SAS_ENCRYPTION_KEY (was the key rotated?); create the export again") from None
