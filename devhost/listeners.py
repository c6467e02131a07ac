"""Timer, queue and blob triggers, driven against storage with the Functions host's semantics.

- Timer: NCRONTAB or interval; `runOnStartup`; with `useMonitor` (the default) the schedule's status is kept
  in `azure-webjobs-hosts/timers/...`, and an occurrence missed while the host was down fires at start with
  `past_due` set.
- Queue: polling with backoff up to `maxPollingInterval`, and at once when a function of this host sent the
  queue a message (the host's shared queue watcher); `batchSize`/`newBatchThreshold` concurrency; the
  message is leased while the function runs (and the lease renewed); on an exception it becomes visible
  again after `visibilityTimeout`; after `maxDequeueCount` failed tries it moves to `<queue>-poison`.
- Blob: a blob (name + ETag) fires once, with a receipt blob in `azure-webjobs-hosts/blobreceipts/...` so a
  restart does not fire it again; after `maxDequeueCount` failures it is reported on
  `webjobs-blobtrigger-poison`. The polling source scans the container; the Event Grid source
  (devhost.eventgrid) runs the blobs its webhook is told of.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.blob import InputStream
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from devhost.appmodel import QueueOptions, resolve_app_setting
from devhost.invoker import LoadedFunction
from devhost.ncrontab import Schedule

log = logging.getLogger("devhost")
HOSTS_CONTAINER = "azure-webjobs-hosts"
BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"
# How long a received message stays invisible while its function runs; renewed at half-time.
QUEUE_LEASE_SECONDS = 30


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ensure_container(service: BlobServiceClient, name: str):
    client = service.get_container_client(name)
    try:
        client.create_container()
    except ResourceExistsError:
        pass
    return client


class Listener(threading.Thread):
    def __init__(self, function: LoadedFunction, stop: threading.Event) -> None:
        super().__init__(name=f"devhost-{function.spec.name}", daemon=True)
        self.function = function
        self.stop_event = stop

    def interrupt(self) -> None:
        """Cuts short a wait that does not watch the stop event."""

    def listen(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            self.listen()
        except Exception:
            log.exception("Listener for %s stopped on an error", self.function.spec.name)


class TimerListener(Listener):
    def __init__(self, function: LoadedFunction, stop: threading.Event, blobs: BlobServiceClient,
                 host_id: str) -> None:
        super().__init__(function, stop)
        trigger = function.spec.trigger
        self.schedule = Schedule(resolve_app_setting(trigger["schedule"]))
        self.run_on_startup = trigger.get("runOnStartup", False)
        self.use_monitor = trigger.get("useMonitor", True)
        self.status_blob = blobs.get_blob_client(
            HOSTS_CONTAINER, f"timers/{host_id}/{function.spec.name}/status") if self.use_monitor else None
        if self.status_blob is not None:
            _ensure_container(blobs, HOSTS_CONTAINER)

    def _read_status(self) -> dict | None:
        if self.status_blob is None:
            return None
        try:
            return json.loads(self.status_blob.download_blob().readall())
        except ResourceNotFoundError:
            return None

    def _fire(self, *, past_due: bool, last: dt.datetime | None, next_due: dt.datetime) -> None:
        status = {"Last": (last or _utcnow()).isoformat(), "Next": next_due.isoformat(),
                  "LastUpdated": _utcnow().isoformat()}
        request = TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})
        try:
            self.function.invoke(request, detail="(past due)" if past_due else "")
        except Exception:
            log.exception("Timer function %s failed", self.function.spec.name)
        if self.status_blob is not None:
            self.status_blob.upload_blob(json.dumps(status), overwrite=True)

    def listen(self) -> None:
        now = _utcnow()
        status = self._read_status()
        next_due = self.schedule.next_after(now)
        if status and dt.datetime.fromisoformat(status["Next"]) < now:
            self._fire(past_due=True, last=dt.datetime.fromisoformat(status["Next"]), next_due=next_due)
        elif self.run_on_startup:
            self._fire(past_due=False, last=None, next_due=next_due)
        elif self.status_blob is not None and status is None:
            self.status_blob.upload_blob(json.dumps(
                {"Last": None, "Next": next_due.isoformat(), "LastUpdated": now.isoformat()}), overwrite=True)
        while not self.stop_event.wait(max(0.0, (next_due - _utcnow()).total_seconds())):
            due, next_due = next_due, self.schedule.next_after(max(next_due, _utcnow()))
            self._fire(past_due=(_utcnow() - due).total_seconds() > 1.0, last=due, next_due=next_due)


class _Lease:
    """A received message with its current pop receipt, renewed while its function runs."""

    def __init__(self, message) -> None:
        self.message = message
        self.pop_receipt = message.pop_receipt
        self.lock = threading.Lock()
        self.done = False


class QueueListener(Listener):
    def __init__(self, function: LoadedFunction, stop: threading.Event, queues: QueueServiceClient,
                 options: QueueOptions) -> None:
        super().__init__(function, stop)
        self.queue_name = resolve_app_setting(function.spec.trigger["queueName"])
        self.options = options
        self.client = queues.get_queue_client(self.queue_name)
        self.poison = queues.get_queue_client(f"{self.queue_name}-poison")
        self.leases: dict[str, _Lease] = {}
        self.leases_lock = threading.Lock()
        # Set when a function of this host sent a message to this queue: poll now, not after the backoff.
        self.wake = threading.Event()

    def _decode(self, content: str) -> bytes:
        if self.options.message_encoding == "none":
            return content.encode("utf-8")
        try:
            return base64.b64decode(content.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError("the message is not base64, as the queue trigger expects "
                             "(host.json extensions.queues.messageEncoding)") from None

    def interrupt(self) -> None:
        self.wake.set()

    def _renew_leases(self) -> None:
        with self.leases_lock:
            leases = list(self.leases.values())
        for lease in leases:
            with lease.lock:
                if lease.done:
                    continue
                try:
                    receipt = self.client.update_message(lease.message.id, lease.pop_receipt,
                                                         visibility_timeout=QUEUE_LEASE_SECONDS)
                    lease.pop_receipt = receipt.pop_receipt
                except ResourceNotFoundError:
                    pass

    def _process(self, lease: _Lease) -> None:
        message = lease.message
        try:
            if message.dequeue_count > self.options.max_dequeue_count:
                self._to_poison(lease, "it was dequeued more often than maxDequeueCount")
                return
            body = self._decode(message.content)
            trigger = QueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count,
                                   expiration_time=message.expires_on, insertion_time=message.inserted_on,
                                   time_next_visible=message.next_visible_on, pop_receipt=lease.pop_receipt)
            try:
                self.function.invoke(trigger, detail=f"queue={self.queue_name} "
                                                     f"dequeueCount={message.dequeue_count}")
            except Exception as error:
                log.warning("Function %s failed on message %s (try %d of %d): %r", self.function.spec.name,
                            message.id, message.dequeue_count, self.options.max_dequeue_count, error)
                self._after_failure(lease, repr(error))
                return
            with lease.lock:
                lease.done = True
                self.client.delete_message(message.id, lease.pop_receipt)
        except ValueError as error:
            self._after_failure(lease, str(error))
        except Exception:
            log.exception("Queue listener for %s could not settle message %s", self.function.spec.name, message.id)
        finally:
            with self.leases_lock:
                self.leases.pop(message.id, None)

    def _after_failure(self, lease: _Lease, reason: str) -> None:
        if lease.message.dequeue_count >= self.options.max_dequeue_count:
            self._to_poison(lease, reason)
            return
        with lease.lock:
            lease.done = True
            self.client.update_message(lease.message.id, lease.pop_receipt,
                                       visibility_timeout=int(self.options.visibility_timeout))

    def _to_poison(self, lease: _Lease, reason: str) -> None:
        try:
            self.poison.create_queue()
        except ResourceExistsError:
            pass
        with lease.lock:
            lease.done = True
            self.poison.send_message(lease.message.content)
            self.client.delete_message(lease.message.id, lease.pop_receipt)
        log.error("Message %s moved to %s-poison after %d tries: %s", lease.message.id, self.queue_name,
                  lease.message.dequeue_count, reason)

    def listen(self) -> None:
        try:
            self.client.create_queue()
        except ResourceExistsError:
            pass
        minimum, delay = 0.1, 0.1
        renew_every = QUEUE_LEASE_SECONDS / 2
        last_renewal = _utcnow()
        with ThreadPoolExecutor(self.options.batch_size, thread_name_prefix=f"q-{self.queue_name}") as pool:
            while not self.stop_event.is_set():
                if (_utcnow() - last_renewal).total_seconds() >= renew_every:
                    self._renew_leases()
                    last_renewal = _utcnow()
                with self.leases_lock:
                    busy = len(self.leases)
                if busy > self.options.new_batch_threshold:
                    self.stop_event.wait(0.05)
                    continue
                wanted = min(32, self.options.batch_size)
                self.wake.clear()
                try:
                    messages = list(self.client.receive_messages(
                        messages_per_page=wanted, max_messages=wanted, visibility_timeout=QUEUE_LEASE_SECONDS))
                except Exception as error:
                    log.warning("Polling %s failed: %r", self.queue_name, error)
                    messages = []
                for message in messages:
                    lease = _Lease(message)
                    with self.leases_lock:
                        self.leases[message.id] = lease
                    pool.submit(self._process, lease)
                if messages:
                    delay = minimum
                elif self.wake.wait(delay):
                    delay = minimum
                else:
                    delay = min(delay * 2, self.options.max_polling_interval)


def blob_pattern(path: str):
    """(container, compiled regex over blob names, literal prefix) of a blob trigger path."""
    container, _, pattern = resolve_app_setting(path).strip("/").partition("/")
    regex, position, prefix = "", 0, None
    for match in re.finditer(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", pattern):
        literal = pattern[position:match.start()]
        if prefix is None:
            prefix = literal
        regex += re.escape(literal) + f"(?P<{match.group(1)}>.+?)"
        position = match.end()
    regex += re.escape(pattern[position:])
    return container, re.compile(f"^{regex}$"), pattern if prefix is None else prefix


def path_suffix(path: str) -> str:
    """The literal end of a blob trigger path, after its last `{...}` (what an Event Grid subscription's
    subjectEndsWith filters on); empty for a path without one."""
    head, brace, tail = path.rpartition("}")
    return tail if brace else ""


class BlobRunner:
    """Runs a blob trigger's function once per blob version (name + ETag), whichever source noticed the blob:
    a receipt blob in `azure-webjobs-hosts/blobreceipts/...` records each version handled, so a restart or a
    second notice does not fire it again; after `maxDequeueCount` failures the blob is reported on
    `webjobs-blobtrigger-poison` and handled."""

    def __init__(self, function: LoadedFunction, blobs: BlobServiceClient, queues: QueueServiceClient,
                 options: QueueOptions, host_id: str) -> None:
        self.function = function
        self.container, self.pattern, self.prefix = blob_pattern(function.spec.trigger["path"])
        self.container_client = blobs.get_container_client(self.container)
        self.receipts = _ensure_container(blobs, HOSTS_CONTAINER)
        self.receipt_prefix = f"blobreceipts/{host_id}/{function.spec.name}/"
        self.poison = queues.get_queue_client(BLOB_POISON_QUEUE)
        self.max_tries = options.max_dequeue_count
        self.tries: dict[str, int] = {}
        self.handled: set[str] = set()
        self._lock = threading.Lock()

    def load_receipts(self) -> None:
        self.handled.update(b.name for b in self.receipts.list_blobs(name_starts_with=self.receipt_prefix))

    def receipt_name(self, blob_name: str, etag: str) -> str:
        return f"{self.receipt_prefix}{etag.strip(chr(34))}/{self.container}/{blob_name}"

    def is_handled(self, blob_name: str, etag: str) -> bool:
        return self.receipt_name(blob_name, etag) in self.handled

    def run(self, blob_name: str) -> bool:
        """Fires the function on the blob's current version unless it was handled; False when the function
        failed and the blob will be tried again (the caller's source decides when)."""
        client = self.container_client.get_blob_client(blob_name)
        try:
            downloader = client.download_blob()
            data = downloader.readall()
        except ResourceNotFoundError:
            return True  # deleted since it was noticed: nothing to run
        properties = downloader.properties
        receipt = self.receipt_name(blob_name, properties.etag)
        if receipt in self.handled:
            return True
        stream = InputStream(data=data, name=f"{self.container}/{blob_name}", uri=client.url, length=len(data),
                             metadata=dict(properties.metadata or {}))
        try:
            self.function.invoke(stream, detail=f"blob={self.container}/{blob_name}")
        except Exception as error:
            with self._lock:
                tries = self.tries.get(receipt, 0) + 1
                self.tries[receipt] = tries
            log.warning("Function %s failed on blob %s (try %d of %d): %r", self.function.spec.name, blob_name,
                        tries, self.max_tries, error)
            if tries < self.max_tries:
                return False
            try:
                self.poison.create_queue()
            except ResourceExistsError:
                pass
            self.poison.send_message(base64.b64encode(json.dumps({
                "Type": "BlobTrigger", "FunctionId": self.function.spec.name, "BlobType": "BlockBlob",
                "ContainerName": self.container, "BlobName": blob_name, "ETag": properties.etag,
            }).encode()).decode())
            log.error("Blob %s/%s moved to %s after %d tries", self.container, blob_name, BLOB_POISON_QUEUE, tries)
        self.receipts.upload_blob(receipt, b"", overwrite=True)
        self.handled.add(receipt)
        return True


class BlobListener(Listener):
    """The polling source (`LogsAndContainerScan`): the container is scanned for blob versions not handled."""

    SCAN_SECONDS = 0.5

    def __init__(self, function: LoadedFunction, stop: threading.Event, runner: BlobRunner) -> None:
        super().__init__(function, stop)
        self.runner = runner

    def listen(self) -> None:
        self.runner.load_receipts()
        runner = self.runner
        with ThreadPoolExecutor(4, thread_name_prefix=f"blob-{self.function.spec.name}") as pool:
            while not self.stop_event.is_set():
                try:
                    names = [blob.name for blob in runner.container_client.list_blobs(name_starts_with=runner.prefix)
                             if runner.pattern.match(blob.name) and not runner.is_handled(blob.name, blob.etag)]
                    for future in [pool.submit(runner.run, name) for name in names]:
                        future.result()
                except ResourceNotFoundError:
                    pass  # no container yet
                except AzureError as error:  # storage unreachable: the next scan finds the same blobs
                    log.warning("Scanning %s for %s failed: %r", runner.container, self.function.spec.name, error)
                self.stop_event.wait(self.SCAN_SECONDS)
