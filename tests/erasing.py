"""Erasure tasks driven in the test's own process: asked through the API with func.HttpRequest objects, carried out
by the EraseData function fed from its queue; and the app's own storage read back whole, for a test to look for
an erased id in every blob, table row and queue message."""

from __future__ import annotations

import base64
import gzip
import json
import time

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.functions.queue import QueueMessage
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, QueueServiceClient
from helpers import app_path, http_request

import EraseData
import ErasureTasks
from shared.erasure import service
from shared.platform.config import get_settings


def erasure_api(collection: str, app: str, key: str, method: str, rest: str = "", body=None, *, params=None):
    request = http_request(method, app_path(collection, app) + f"/devices/erasureTasks/{rest}".rstrip("/"),
                           key=key, body=body, params=params,
                           route_params={"appCollection": collection, "appName": app, "rest": rest})
    response = ErasureTasks.main(request)
    return response.status_code, json.loads(response.get_body() or b"null"), response.headers


def _queue() -> QueueClient:
    queue = QueueClient.from_connection_string(get_settings().storage.connection_string, service.ERASE_QUEUE)
    try:
        queue.create_queue()
    except ResourceExistsError:
        pass
    return queue


def crank_erasures(app_id: str, task_id: str, *, timeout: float = 120.0, redeliver_failures: bool = False) -> None:
    """Delivers the erasure queue's messages until the task has ended. A function that raises fails the test,
    unless ``redeliver_failures``: then its message is delivered again, as the host does."""
    queue = _queue()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for raw in list(queue.receive_messages(max_messages=16, visibility_timeout=60)):
            try:
                EraseData.main(QueueMessage(id=raw.id, body=base64.b64decode(raw.content),
                                            dequeue_count=raw.dequeue_count))
            except Exception:
                if not redeliver_failures:
                    raise
                queue.update_message(raw, visibility_timeout=0)
            else:
                queue.delete_message(raw)
        task = service.store.read_task(app_id, task_id)[0]
        if task.ended and task.event_sent:
            return
        time.sleep(0.1)
    raise AssertionError(f"erasure {task_id} did not end")


def _readable(data: bytes) -> bytes:
    """A blob's bytes as text to search: gzip members decompressed (zero padding stays as it is)."""
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError):
            return data
    return data


def everything_stored(connection: str, *, skip_containers: tuple[str, ...] = ()) -> bytes:
    """Every blob (decompressed), table row and queue message of a storage account, as one text to search."""
    found: list[bytes] = []
    blobs = BlobServiceClient.from_connection_string(connection)
    for container in blobs.list_containers():
        if container.name in skip_containers:
            continue
        client = blobs.get_container_client(container.name)
        for blob in client.list_blobs(include=["metadata"]):
            found.append(blob.name.encode() + json.dumps(blob.metadata or {}).encode())
            found.append(_readable(client.download_blob(blob.name).readall()))
    tables = TableServiceClient.from_connection_string(connection)
    for table in tables.list_tables():
        for row in tables.get_table_client(table.name).list_entities():
            found.append(json.dumps({**row, "_keys": [row["PartitionKey"], row["RowKey"]]}, default=str,
                                    ensure_ascii=False).encode())
    queues = QueueServiceClient.from_connection_string(connection)
    for queue in queues.list_queues():
        for message in queues.get_queue_client(queue.name).peek_messages(max_messages=32):
            content = message.content
            found.append(content.encode())
            try:
                found.append(base64.b64decode(content))
            except ValueError:
                pass
    return b"\n".join(found)
