"""Forwarding: when a manifest lands in the destination container, one message per result file goes to the
downstream queue(s) routed for the export's data type.

Once per manifest: each (job, file, queue) sent is recorded, and a second firing for the same manifest
sends only what was not recorded (a crash between a send and its record may repeat that one message, so
consumers should treat (jobId, name) as the key). A message that cannot be sent goes to `<queue>-poison`
with the reason; a malformed manifest is reported on `<default queue>-poison` and forwards nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import List, Optional, Tuple

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueServiceClient, TextBase64EncodePolicy

from shared import storage
from shared.config import DESTINATION_STORAGE, ConfigError, get_settings

FORWARDED_TABLE = "forwarded"
log = logging.getLogger(__name__)
_lock = threading.Lock()
_service: Optional[QueueServiceClient] = None


class ManifestError(ValueError):
    """The blob is not a manifest this service wrote."""


def _queues() -> QueueServiceClient:
    global _service
    with _lock:
        if _service is None:
            connection = get_settings().destination_connection
            if not connection:
                raise ConfigError(f"{DESTINATION_STORAGE} is not set: the connection string of the destination "
                                  f"storage that OnBlobCreated watches")
            _service = QueueServiceClient.from_connection_string(connection)
        return _service


def reset() -> None:
    global _service
    with _lock:
        _service = None


def _queue(name: str):
    service = _queues()
    from azure.storage.queue import QueueClient
    client = QueueClient(service.url, name, credential=service.credential,
                         message_encode_policy=TextBase64EncodePolicy())
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
    return client


def parse_manifest(data: bytes) -> dict:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ManifestError(f"not JSON: {error}") from None
    if not isinstance(manifest, dict):
        raise ManifestError("not a JSON object")
    for field, kind in (("jobId", str), ("exportType", str), ("exportFormat", str), ("files", list),
                        ("app", dict)):
        if not isinstance(manifest.get(field), kind):
            raise ManifestError(f"{field} is missing or not a {kind.__name__}")
    for index, entry in enumerate(manifest["files"]):
        if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), t) for k, t in (("name", str), ("url", str), ("records", int),
                                                         ("bytes", int), ("md5", str))):
            raise ManifestError(f"files[{index}] needs name, url, records, bytes and md5")
        if "?" in entry["url"]:
            raise ManifestError(f"files[{index}].url carries a query; refusing to forward a possible secret")
    return manifest


def routes_for(export_type: str) -> Tuple[str, ...]:
    settings = get_settings()
    return settings.forward_routes.get(export_type) or (settings.forward_default_queue,)


def messages(manifest: dict) -> List[dict]:
    base = {"jobId": manifest["jobId"], "app": manifest["app"], "exportType": manifest["exportType"],
            "exportFormat": manifest["exportFormat"]}
    for key in ("range", "campaignWindow", "campaignIds", "campaignType", "schedule"):
        if key in manifest:
            base[key] = manifest[key]
    return [dict(base, name=entry["name"], url=entry["url"], bytes=entry["bytes"], records=entry["records"],
                 md5=entry["md5"]) for entry in manifest["files"]]


def _already_sent(job_id: str, key: str) -> bool:
    try:
        storage.table(FORWARDED_TABLE).get_entity(job_id, key)
        return True
    except ResourceNotFoundError:
        return False


def _send(queue_name: str, body: str) -> None:
    try:
        _queue(queue_name).send_message(body)
    except AzureError as error:
        log.error("Forwarding to %s failed after retries (%r); the message goes to %s-poison",
                  queue_name, error, queue_name)
        _queue(f"{queue_name}-poison").send_message(json.dumps({"reason": f"{type(error).__name__}: {error}",
                                                                "message": json.loads(body)}))


def forward(blob_name: str, data: bytes) -> int:
    """Forwards one landed manifest; returns how many messages were sent now."""
    try:
        manifest = parse_manifest(data)
    except ManifestError as error:
        queue = f"{get_settings().forward_default_queue}-poison"
        log.error("Manifest %s is malformed (%s); nothing forwarded, reported on %s", blob_name, error, queue)
        _queue(queue).send_message(json.dumps({"reason": f"malformed manifest: {error}", "blob": blob_name}))
        return 0
    sent = 0
    for index, message in enumerate(messages(manifest)):
        for queue_name in routes_for(manifest["exportType"]):
            key = f"{index:05d}|{queue_name}"
            if _already_sent(manifest["jobId"], key):
                continue
            _send(queue_name, json.dumps(message))
            storage.table(FORWARDED_TABLE).upsert_entity({"PartitionKey": manifest["jobId"], "RowKey": key,
                                                          "blob": blob_name})
            sent += 1
    log.info("Manifest %s forwarded: %d message(s)", blob_name, sent)
    return sent
