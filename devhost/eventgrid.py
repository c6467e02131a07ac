"""The Event Grid source of blob triggers, as the Functions host serves it, and a stand-in for Event Grid.

In Azure (and on Flex Consumption, only so) a blob trigger with `"source": "EventGrid"` does not scan its
container: the storage account publishes a `Microsoft.Storage.BlobCreated` event, and an Event Grid
subscription POSTs it to the host's blobs extension endpoint,
`/runtime/webhooks/blobs?functionName=Host.Functions.<name>&code=<blobs_extension key>`. The host answers the
subscription's validation handshake once, then runs the function on each event's blob.

`BlobWebhook` is that endpoint: it checks each event against the trigger's path and runs the function through
the same `BlobRunner` as the polling source (one run per blob version, receipts, poison after
`maxDequeueCount`). It answers 200 when every event was handled and 500 while one should be delivered again.

Azurite publishes no events, so `EventGridEmulator` plays Event Grid for the trigger's container: it first
sends the validation handshake, then notices each blob version the subscription's filter takes (the prefix and
suffix of the trigger's path, as `infra/eventgrid.bicep` sets them) and POSTs one BlobCreated event, in the
Event Grid schema, to the endpoint over HTTP; an event that was not taken is sent again at the next scan, as
Event Grid retries. At start it sends an event for every blob already there: the receipts make that a no-op
for blobs handled before, and a blob created while the host was down is delivered, as Event Grid's retries
would deliver it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Callable
from urllib.parse import quote

import requests
from azure.core.exceptions import AzureError, ResourceNotFoundError

from devhost.invoker import LoadedFunction
from devhost.listeners import BlobRunner, Listener, path_suffix

log = logging.getLogger("devhost")
WEBHOOK_PATH = "runtime/webhooks/blobs"
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
SUBSCRIPTION_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
_SUBJECT_PREFIX = "/blobServices/default/containers/"


def function_id(name: str) -> str:
    """The functionName the host's blobs extension expects in the webhook's query."""
    return f"Host.Functions.{name}"


def subject_of(container: str, blob_name: str) -> str:
    return f"{_SUBJECT_PREFIX}{container}/blobs/{blob_name}"


def _blob_of(subject: object) -> tuple[str, str] | None:
    """(container, blob name) of a BlobCreated event's subject, or None for a subject of another shape."""
    if not isinstance(subject, str) or not subject.startswith(_SUBJECT_PREFIX):
        return None
    container, marker, name = subject[len(_SUBJECT_PREFIX):].partition("/blobs/")
    return (container, name) if marker and container and name else None


class BlobWebhook:
    """The host's `/runtime/webhooks/blobs` endpoint for the Event Grid-sourced blob triggers of the app."""

    def __init__(self) -> None:
        self.runners: dict[str, BlobRunner] = {}

    def add(self, runner: BlobRunner) -> None:
        runner.load_receipts()
        self.runners[function_id(runner.function.spec.name).lower()] = runner

    def handle(self, method: str, params: dict[str, str], headers: dict[str, str],
               body: bytes) -> tuple[int, dict]:
        """(status, JSON body) of one delivery."""
        if method != "POST":
            return 405, {"error": {"code": "MethodNotAllowed", "message": "Event Grid delivers with POST"}}
        runner = self.runners.get((params.get("functionName") or "").lower())
        if runner is None:
            return 404, {"error": {"code": "NotFound", "message": f"no Event Grid blob trigger is named "
                                   f"{params.get('functionName')!r} (expected Host.Functions.<function name>)"}}
        try:
            events = json.loads(body)
        except ValueError:
            return 400, {"error": {"code": "BadRequest", "message": "the body is not JSON"}}
        if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
            return 400, {"error": {"code": "BadRequest", "message": "the body must be an array of Event Grid "
                                                                    "events"}}
        for event in events:
            if event.get("eventType") == SUBSCRIPTION_VALIDATION:
                data = event.get("data")
                code = data.get("validationCode") if isinstance(data, dict) else None
                log.info("Event Grid subscription to %s validated", runner.function.spec.name)
                return 200, {"validationResponse": code}
        retry = False
        for event in events:
            if event.get("eventType") != BLOB_CREATED:
                continue  # the host ignores other storage events
            blob = _blob_of(event.get("subject"))
            if blob is None or blob[0] != runner.container or not runner.pattern.match(blob[1]):
                continue  # outside the trigger's path: the host does not run the function
            try:
                if not runner.run(blob[1]):
                    retry = True
            except Exception as error:  # storage unreachable: Event Grid delivers the event again
                log.warning("Blob %s/%s could not be read for %s: %r", blob[0], blob[1], runner.function.spec.name,
                            error)
                retry = True
        if retry:
            return 500, {"error": {"code": "FunctionFailed", "message": "the function failed; deliver again"}}
        return 200, {}


class EventGridEmulator(Listener):
    """Event Grid's delivery of the trigger's container's BlobCreated events to the local host's webhook."""

    SCAN_SECONDS = 0.5

    def __init__(self, function: LoadedFunction, stop: threading.Event, runner: BlobRunner,
                 base_url: Callable[[], str]) -> None:
        super().__init__(function, stop)
        self.runner = runner
        self.base_url = base_url
        self.suffix = path_suffix(function.spec.trigger["path"])
        self.delivered: set[tuple[str, str]] = set()
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only; never through a proxy from the environment

    @property
    def endpoint(self) -> str:
        return (f"{self.base_url()}/{WEBHOOK_PATH}?functionName={quote(function_id(self.function.spec.name))}"
                f"&code=local")

    def _post(self, events: list[dict], event_type: str) -> requests.Response | None:
        try:
            return self.session.post(self.endpoint, data=json.dumps(events), timeout=60, headers={
                "Content-Type": "application/json", "aeg-event-type": event_type})
        except requests.RequestException as error:
            log.warning("Event Grid emulator: delivery to %s failed (%r); sent again at the next scan",
                        self.function.spec.name, error)
            return None

    def _validate(self) -> bool:
        code = str(uuid.uuid4())
        response = self._post([{
            "id": str(uuid.uuid4()), "topic": self._topic(), "subject": "", "eventType": SUBSCRIPTION_VALIDATION,
            "eventTime": _now(), "metadataVersion": "1", "dataVersion": "2",
            "data": {"validationCode": code}}], "SubscriptionValidation")
        return response is not None and response.ok and response.json().get("validationResponse") == code

    def _topic(self) -> str:
        account = self.runner.container_client.account_name or "devstoreaccount1"
        return (f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/"
                f"Microsoft.Storage/storageAccounts/{account}")

    def _event(self, blob) -> dict:
        return {
            "id": str(uuid.uuid4()), "topic": self._topic(), "subject": subject_of(self.runner.container, blob.name),
            "eventType": BLOB_CREATED, "eventTime": _now(), "metadataVersion": "1", "dataVersion": "",
            "data": {"api": "PutBlockList", "eTag": blob.etag, "contentType": blob.content_settings.content_type,
                     "contentLength": blob.size, "blobType": "BlockBlob",
                     "url": f"{self.runner.container_client.url}/{quote(blob.name)}",
                     "sequencer": f"{int(blob.last_modified.timestamp() * 1e6):032x}"}}

    def listen(self) -> None:
        while not self.stop_event.is_set() and not self._validate():
            self.stop_event.wait(self.SCAN_SECONDS)
        while not self.stop_event.is_set():
            try:
                fresh = [blob for blob in self.runner.container_client.list_blobs(name_starts_with=self.runner.prefix)
                         if blob.name.endswith(self.suffix) and (blob.name, blob.etag) not in self.delivered]
            except ResourceNotFoundError:
                fresh = []  # no container yet
            except AzureError as error:  # storage unreachable: the next scan finds the same blobs
                log.warning("Event Grid emulator: scanning %s failed: %r", self.runner.container, error)
                fresh = []
            for blob in fresh:  # one event per blob, as storage publishes them
                if self.stop_event.is_set():
                    return
                response = self._post([self._event(blob)], "Notification")
                if response is not None and response.ok:
                    self.delivered.add((blob.name, blob.etag))
            self.stop_event.wait(self.SCAN_SECONDS)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
