"""Append Block, the storage call on Collect's path, sent over kept-alive connections without the Azure SDK.

Why not azure-storage-blob here: one `BlobClient.append_block` costs about 1.8 ms of CPU in its pipeline
(policies, requests' session and environment lookups, deserialization), and Collect makes one per group of
requests under a lock the next group waits for. This client sends the same REST call (PUT ?comp=appendblock,
conditional on the append position) in about 0.2 ms (2,000 appends of 1.5 KB to Azurite, time.process_time;
docs/ingestion.md). Every other storage call stays with the SDK.

It is authorized the ways the app's storage is: the account key (Shared Key), a SAS in the container's URL, or
a token credential (a managed identity). Failures are raised as the SDK's exceptions, so callers keep one
vocabulary: HttpResponseError (with ``status_code`` and the service's ``error_code``) for an answer other than
201 Created; ServiceRequestError when the request could not be sent; ServiceResponseError when it was sent and
no answer came, so it may or may not have been stored (the append position condition tells on the next try).
Proxies from the environment are not used: the Functions host reaches its storage directly.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

TOKEN_SCOPE = "https://storage.azure.com/.default"
TOKEN_REFRESH_SECONDS = 300  # a token this close to its expiry is renewed before it is sent
CONNECT_SECONDS = 10.0
ANSWER_SECONDS = 30.0  # an append of at most 4 MiB
IDLE_SECONDS = 30.0  # connections unused this long are closed rather than reused
MAX_IDLE_CONNECTIONS = 32
MAX_JOINED_BYTES = 1024 * 1024  # larger bodies follow their head in a write of their own, not copied
_MESSAGE = re.compile(rb"<Message>(.*?)</Message>", re.S)


class AppendBlockClient:
    """Appends blocks to the append blobs of one container; thread-safe, one connection per call in flight.

    ``credential`` is what the SDK's clients hold: an object with ``account_name`` and ``account_key`` (Shared
    Key), one with ``named_key`` (AzureNamedKeyCredential), one with ``get_token`` (a token credential), or
    None when ``container_url`` carries a SAS. ``on_request`` is called once per request sent."""

    def __init__(self, container_url: str, credential: Any = None, *, api_version: str,
                 on_request: Callable[[], None] | None = None) -> None:
        split = urlsplit(container_url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError(f"{container_url.split('?')[0]!r} is not an http(s) container URL")
        https = split.scheme == "https"
        self._host, self._port = split.hostname, split.port or (443 if https else 80)
        self._host_header = split.netloc.rsplit("@", 1)[-1]
        self._path = split.path.rstrip("/")
        self._sas = split.query
        self._api_version = api_version
        self._on_request = on_request
        self._account_key: tuple[str, bytes] | None = None
        self._token_credential = None
        if credential is not None:
            if hasattr(credential, "named_key"):
                name, key = credential.named_key
                self._account_key = (name, base64.b64decode(key))
            elif hasattr(credential, "account_key"):
                self._account_key = (credential.account_name, base64.b64decode(credential.account_key))
            elif hasattr(credential, "get_token"):
                self._token_credential = credential
            else:
                raise TypeError(f"a {type(credential).__name__} cannot authorize appends; give an account key, "
                                f"a token credential, or a container URL with a SAS")
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self._idle: list[tuple[socket.socket, float]] = []
        self._ssl = ssl.create_default_context() if https else None

    @classmethod
    def for_container(cls, container, *, on_request: Callable[[], None] | None = None) -> AppendBlockClient:
        """The client of the container an azure-storage-blob ContainerClient names, with its credential."""
        return cls(container.url, container.credential, api_version=container.api_version, on_request=on_request)

    def append_block(self, blob_name: str, data: bytes, *, appendpos_condition: int) -> None:
        """Appends ``data`` as one block, only if the blob's length is ``appendpos_condition`` (else the service
        answers 412 AppendPositionConditionNotMet), so a try repeated after a lost answer is never stored twice."""
        path = f"{self._path}/{quote(blob_name, safe='/~')}"
        headers = {"x-ms-blob-condition-appendpos": str(appendpos_condition),
                   "x-ms-date": email.utils.formatdate(usegmt=True), "x-ms-version": self._api_version,
                   "Content-Length": str(len(data))}
        self._authorize(headers, path, len(data))
        target = f"{path}?comp=appendblock" + (f"&{self._sas}" if self._sas else "")
        # Head and body in one write: sent apart, the body waits on the server's delayed acknowledgement of
        # the head (Nagle), and the thread takes the interpreter lock twice more.
        request = "".join([f"PUT {target} HTTP/1.1\r\nHost: {self._host_header}\r\n",
                           *(f"{name}: {value}\r\n" for name, value in headers.items()), "\r\n"]).encode("latin-1")
        try:
            connection = self._connection()
        except OSError as error:
            raise ServiceRequestError(f"the append to {blob_name} could not be sent: storage at "
                                      f"{self._host_header} cannot be reached: {error!r}") from error
        if self._on_request is not None:
            self._on_request()
        try:
            connection.sendall(request + data if len(data) <= MAX_JOINED_BYTES else request)
            if len(data) > MAX_JOINED_BYTES:
                connection.sendall(data)
        except OSError as error:
            connection.close()
            raise ServiceRequestError(f"the append to {blob_name} could not be sent: {error!r}") from error
        try:
            response = http.client.HTTPResponse(connection, method="PUT")
            response.begin()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise ServiceResponseError(f"the append to {blob_name} got no answer: {error!r}") from error
        if response.will_close:
            connection.close()
        else:
            self._keep(connection)
        if response.status != 201:
            raise _refusal(response, body, blob_name)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.close()

    def _authorize(self, headers: dict, path: str, length: int) -> None:
        if self._account_key is not None:
            account, key = self._account_key
            # Shared Key: the verb, the standard headers (only Content-Length is sent), the x-ms- headers
            # sorted, then the resource with its query (comp) on lines of their own.
            canonical = "".join(f"{name}:{value}\n" for name, value in sorted(
                (name, value) for name, value in headers.items() if name.startswith("x-ms-")))
            to_sign = f"PUT\n\n\n{length or ''}\n\n\n\n\n\n\n\n\n{canonical}/{account}{path}\ncomp:appendblock"
            signature = base64.b64encode(hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).digest())
            headers["Authorization"] = f"SharedKey {account}:{signature.decode()}"
        elif self._token_credential is not None:
            headers["Authorization"] = f"Bearer {self._bearer()}"

    def _bearer(self) -> str:
        credential = self._token_credential
        assert credential is not None
        with self._lock:
            if self._token is None or self._token[1] - time.time() < TOKEN_REFRESH_SECONDS:
                token = credential.get_token(TOKEN_SCOPE)
                self._token = (token.token, float(token.expires_on))
            return self._token[0]

    def _connection(self) -> socket.socket:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    break
                connection, since = self._idle.pop()
            if now - since < IDLE_SECONDS and not _dropped(connection):
                return connection
            connection.close()
        connection = socket.create_connection((self._host, self._port), timeout=CONNECT_SECONDS)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.settimeout(ANSWER_SECONDS)
        if self._ssl is None:
            return connection
        try:
            return self._ssl.wrap_socket(connection, server_hostname=self._host)
        except OSError:
            connection.close()
            raise

    def _keep(self, connection: socket.socket) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append((connection, time.monotonic()))
                return
        connection.close()


def _dropped(connection: socket.socket) -> bool:
    """Whether the server closed a kept-alive connection: an idle socket that is readable holds its end."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _refusal(response: http.client.HTTPResponse, body: bytes, blob_name: str) -> HttpResponseError:
    code = response.getheader("x-ms-error-code") or ""
    found = _MESSAGE.search(body)
    detail = found.group(1).decode("utf-8", "replace").split("\n")[0] if found else response.reason
    error = HttpResponseError(message=f"the append to {blob_name} was refused: {response.status} {code}: {detail}")
    error.status_code, error.reason = response.status, response.reason
    error.error_code = code or None  # type: ignore[attr-defined]
    return error

