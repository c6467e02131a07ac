"""Forwarding: when a manifest lands in the destination container, one message per result file goes to the
downstream queue(s) routed for the export's data type, and to the webhook when one is configured (a POST
signed with `X-Engagement-Export-Signature: sha256=<HMAC-SHA256 of the body>`).

Once per manifest: each (job, file, queue) sent is recorded, and a second firing for the same manifest
sends only what was not recorded (a crash between a send and its record may repeat that one message, so
consumers should treat (jobId, name) as the key). A message that cannot be sent goes to `<queue>-poison`
with the reason; a malformed manifest is reported on `<default queue>-poison` and forwards nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import requests
from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.platform import storage, telemetry
from shared.platform.apps import AppRef
from shared.platform.config import get_settings

FORWARDED_TABLE = "forwarded"
log = logging.getLogger(__name__)


class ManifestError(ValueError):
    """The blob is not a manifest this service wrote."""




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


def routes_for(export_type: str) -> tuple[str, ...]:
    settings = get_settings()
    return (settings.forward_routes or {}).get(export_type) or (settings.forward_default_queue,)


def messages(manifest: dict) -> list[dict]:
    base = {"jobId": manifest["jobId"], "app": manifest["app"], "exportType": manifest["exportType"],
            "exportFormat": manifest["exportFormat"]}
    for key in ("range", "campaignWindow", "campaignIds", "campaignType", "schedule", "pipeline"):
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
        storage.destination_queue(queue_name).send_message(body)
    except AzureError as error:
        log.error("Forwarding to %s failed after retries (%r); the message goes to %s-poison",
                  queue_name, error, queue_name)
        storage.destination_queue(f"{queue_name}-poison").send_message(json.dumps(
            {"reason": f"{type(error).__name__}: {error}", "message": json.loads(body)}))


WEBHOOK_SIGNATURE_HEADER = "X-Engagement-Export-Signature"
WEBHOOK_TRIES = 4


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the body>`, the value of the signature header."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _post_webhook(body: str) -> None:
    """POSTs one message to the configured webhook, signed; retries 5xx, 429 and network errors with backoff.
    A message the webhook never takes goes to the default queue's poison queue with the reason."""
    settings = get_settings()
    url, secret = settings.webhook_url, settings.webhook_secret
    if not url or not secret:  # config.load_settings refuses a URL without a secret
        return
    data = body.encode("utf-8")
    headers = {"Content-Type": "application/json", WEBHOOK_SIGNATURE_HEADER: signature(secret, data)}
    reason = ""
    for attempt in range(WEBHOOK_TRIES):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            # A redirect is not followed: the signed message goes only to the URL the settings name.
            response = requests.post(url, data=data, headers=headers, timeout=10,
                                     allow_redirects=False)
        except requests.RequestException as error:
            reason = f"{type(error).__name__}"
            continue
        if response.status_code < 300:
            return
        reason = f"HTTP {response.status_code}" + (" (a redirect, not followed)" if response.is_redirect else "")
        if response.status_code < 500 and response.status_code != 429:
            break  # the webhook refused the message itself: retrying cannot help
    log.error("Webhook did not take a message (%s); it goes to %s-poison", reason, settings.forward_default_queue)
    storage.destination_queue(f"{settings.forward_default_queue}-poison").send_message(json.dumps(
        {"reason": f"webhook: {reason}", "message": json.loads(body)}))


def send_event(event: dict) -> None:
    """Sends an event of the service (a pipeline's alert) through the forwarding channels: the default queue and
    the webhook, when one is configured. Each event has an ``id``: a consumer that sees one twice drops it."""
    body = json.dumps(event)
    settings = get_settings()
    if settings.destination_connection:
        _send(settings.forward_default_queue, body)
    if settings.webhook_url:
        _post_webhook(body)
    if not settings.destination_connection and not settings.webhook_url:
        log.warning("No forwarding channel is configured for this event: %s", body)


def forward(blob_name: str, data: bytes) -> int:
    """Forwards one landed manifest; returns how many messages were sent now."""
    try:
        manifest = parse_manifest(data)
    except ManifestError as error:
        queue = f"{get_settings().forward_default_queue}-poison"
        log.error("Manifest %s is malformed (%s); nothing forwarded, reported on %s", blob_name, error, queue)
        storage.destination_queue(queue).send_message(
            json.dumps({"reason": f"malformed manifest: {error}", "blob": blob_name}))
        return 0
    app = manifest["app"]
    app_id = AppRef(str(app.get("appCollection", "")), str(app.get("appName", ""))).id
    with telemetry.job_scope("export.forward", job_id=manifest["jobId"], app_id=app_id,
                             attributes={"export.type": manifest["exportType"]}):
        sent = 0
        webhook = get_settings().webhook_url
        for index, message in enumerate(messages(manifest)):
            targets: list[tuple[str | None, str]] = [(queue_name, f"{index:05d}|{queue_name}")
                                                        for queue_name in routes_for(manifest["exportType"])]
            if webhook:
                targets.append((None, f"{index:05d}|webhook"))
            for queue_name, key in targets:
                if _already_sent(manifest["jobId"], key):
                    continue
                if queue_name is None:
                    _post_webhook(json.dumps(message))
                else:
                    _send(queue_name, json.dumps(message))
                storage.table(FORWARDED_TABLE).upsert_entity({"PartitionKey": manifest["jobId"], "RowKey": key,
                                                              "blob": blob_name})
                sent += 1
        log.info("Manifest %s forwarded: %d message(s)", blob_name, sent)
    return sent
