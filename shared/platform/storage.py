"""Clients of the app's own storage account, created on first use and then shared by the process.

Nothing here touches the network or the settings at import time. Queue clients encode messages as base64,
which is what the Functions host's queue trigger expects by default. The clients belong to the settings they
were built from: once the settings are read again (shared.platform.config.reset_settings), the next call
builds new ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.platform.appendblock import AppendBlockClient
from shared.platform.config import DESTINATION_STORAGE, STORAGE_CONNECTION, ConfigError, Settings, get_settings

_lock = threading.Lock()
_request_count = 0
_count_lock = threading.Lock()
_clients: dict[str, Any] = {}
_created: set = set()
_built_from: Settings | None = None


def _settings() -> Settings:
    """The settings in force; the clients built from earlier settings are dropped. Called under _lock."""
    global _built_from
    settings = get_settings()
    if settings is not _built_from:
        _clients.clear()
        _created.clear()
        _built_from = settings
    return settings


def _count_request(_request) -> None:
    global _request_count
    with _count_lock:
        _request_count += 1


def requests_made() -> int:
    """How many requests (retries included) this process has sent through the clients made here."""
    return _request_count


# Every client of the app's storage counts its requests (the SDKs call this hook once per attempt).
_COUNTED: dict[str, Any] = {"raw_request_hook": _count_request}
# Blob and queue clients retry a throttled or failed request after about 1, 3, 5, 9 and 17 seconds; the SDK's
# default waits 15 s before the first retry, which stalls a whole job on one 503 ServerBusy. (Table clients
# already retry within a second or two.)
RETRY_OPTIONS: dict[str, Any] = {"retry_total": 5, "initial_backoff": 1, "increment_base": 2, "random_jitter_range": 1}


def _credential():
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _url(value: str | None) -> str:
    if not value:  # config.load_settings gives every service URL when there is no connection string
        raise ConfigError(f"{STORAGE_CONNECTION} is not set and a storage service URI is missing")
    return value


def _service(kind: str):
    with _lock:
        settings = _settings()
        client = _clients.get(kind)
        if client is not None:
            return client
        storage = settings.storage
        if kind == "blob":
            # Downloads in 4 MiB pieces (the SDK's first GET is 32 MiB by default): memory stays per block.
            sizes: dict[str, Any] = {"max_single_get_size": 4 * 1024 * 1024, "max_chunk_get_size": 4 * 1024 * 1024}
            options = dict(sizes, **_COUNTED, **RETRY_OPTIONS)
            client = (BlobServiceClient.from_connection_string(storage.connection_string, **options)
                      if storage.connection_string
                      else BlobServiceClient(_url(storage.blob_url), credential=_credential(), **options))
        elif kind == "destination-queue":
            if not settings.destination_connection:
                raise ConfigError(f"{DESTINATION_STORAGE} is not set: the connection string of the destination "
                                  f"storage that OnBlobCreated watches")
            client = QueueServiceClient.from_connection_string(settings.destination_connection)
        elif kind == "queue":
            client = (QueueServiceClient.from_connection_string(storage.connection_string, **_COUNTED, **RETRY_OPTIONS)
                      if storage.connection_string
                      else QueueServiceClient(_url(storage.queue_url), credential=_credential(), **_COUNTED,
                                              **RETRY_OPTIONS))
        else:
            client = (TableServiceClient.from_connection_string(storage.connection_string, **_COUNTED)
                      if storage.connection_string
                      else TableServiceClient(_url(storage.table_url), credential=_credential(), **_COUNTED))
        _clients[kind] = client
        return client


def blob_service() -> BlobServiceClient:
    return _service("blob")


def queue_service() -> QueueServiceClient:
    return _service("queue")


def table_service() -> TableServiceClient:
    return _service("table")


def destination_queue_service() -> QueueServiceClient:
    """The queues of the destination storage of scheduled exports (EXPORT_DESTINATION_STORAGE), where
    forwarding sends its messages."""
    return _service("destination-queue")


def _shared(key: str, build: Callable[[], Any]) -> Any:
    """The client cached under ``key`` for the settings in force, built (outside the lock: building one may
    make the service client it comes from) on first use."""
    with _lock:
        _settings()
        client = _clients.get(key)
    if client is None:
        client = build()
        with _lock:
            client = _clients.setdefault(key, client)
    return client


def _ensure_once(key: str, create) -> None:
    with _lock:
        _settings()
        if key in _created:
            return
    try:
        create()
    except ResourceExistsError:
        pass
    with _lock:
        _created.add(key)


def append_blocks(container_name: str) -> AppendBlockClient:
    """The Append Block client of a container of the app's storage (created on first use, as ``container``),
    made once and shared: Collect's appends go through it instead of the SDK (shared.platform.appendblock)."""
    return _shared("append-blocks:" + container_name, lambda: AppendBlockClient.for_container(
        container(container_name), on_request=lambda: _count_request(None)))


def container(name: str, *, create: bool = True) -> ContainerClient:
    """A container of the app's storage; created on first use in this process when ``create``. The client
    is made once and shared (clients are thread-safe): Collect asks for one for every raw blob it opens."""
    client = _shared("container:" + name, lambda: blob_service().get_container_client(name))
    if create:
        _ensure_once("blob:" + name, client.create_container)
    return client


def base64_queue(service: QueueServiceClient, name: str) -> QueueClient:
    """A client of a queue of ``service`` with base64 messages. The service client does not pass message
    codecs on to the queue clients it makes, so they are built here."""
    return QueueClient(service.url, name, credential=service.credential, **_COUNTED, **RETRY_OPTIONS,
                       message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy())


def queue(name: str, *, create: bool = True) -> QueueClient:
    """A queue of the app's storage (base64 messages); created on first use in this process when ``create``."""
    return _queue_of(queue_service, "queue:", name, create)


def destination_queue(name: str) -> QueueClient:
    """A queue of the destination storage (base64 messages); created on first use in this process."""
    return _queue_of(destination_queue_service, "destination-queue:", name, True)


def _queue_of(service: Callable[[], QueueServiceClient], prefix: str, name: str, create: bool) -> QueueClient:
    client = _shared(prefix + name, lambda: base64_queue(service(), name))
    if create:
        _ensure_once(prefix + name, client.create_queue)
    return client


def send_message(queue_name: str, content: str, *, delay_seconds: int = 0) -> None:
    """Puts a message on a queue of the app's storage, visible after ``delay_seconds``.

    Watchers hear of each message visible at once: the local host wakes that queue's listener, as the
    Functions host's shared queue watcher does for messages its functions write, instead of waiting for
    the listener's next poll."""
    queue(queue_name).send_message(content, visibility_timeout=delay_seconds or None)
    if not delay_seconds:
        for watcher in list(_send_watchers):
            watcher(queue_name)


_send_watchers: list[Callable[[str], None]] = []


def watch_sends(watcher: Callable[[str], None]) -> Callable[[], None]:
    """Calls ``watcher(queue_name)`` after each message this process sends that is visible at once; returns
    a function that stops it."""
    _send_watchers.append(watcher)
    return lambda: _send_watchers.remove(watcher)


def table(name: str, *, create: bool = True) -> TableClient:
    """A table of the app's storage; created on first use in this process when ``create``."""
    client = table_service().get_table_client(name)
    if create:
        _ensure_once("table:" + name, client.create_table)
    return client


