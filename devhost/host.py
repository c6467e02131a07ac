"""The local host: loads the app like the Functions host and serves every trigger until stopped."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from devhost.appmodel import AppLoadError, load_functions, load_host_config
from devhost.eventgrid import WEBHOOK_PATH, BlobWebhook, EventGridEmulator
from devhost.http_server import HttpFrontend, HttpRoute
from devhost.invoker import LoadedFunction
from devhost.listeners import BlobListener, BlobRunner, Listener, QueueListener, TimerListener
from shared.platform import storage
from shared.platform.config import STORAGE_CONNECTION, expand_connection_string

log = logging.getLogger("devhost")
# How long stopping waits for running invocations before leaving them to their retries.
DEFAULT_GRACE_SECONDS = 30.0


def apply_local_settings(root: str, environ=os.environ) -> None:
    """Puts `local.settings.json` Values into the environment; variables already set win, as with Core Tools."""
    path = os.path.join(root, "local.settings.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as handle:
        values = json.load(handle).get("Values", {})
    for name, value in values.items():
        environ.setdefault(name, str(value))


class LocalHost:
    """Runs the function app in ``root``: HTTP on ``host:port`` (0 picks a free port), and every trigger."""

    def __init__(self, root: str, *, host: str = "127.0.0.1", port: int = 7071,
                 functions: Iterable[str] | None = None, host_id: str = "devhost",
                 emulate_event_grid: bool = True) -> None:
        """``emulate_event_grid``: deliver the BlobCreated events of `"source": "EventGrid"` blob triggers from
        a stand-in for Event Grid (devhost.eventgrid); without it only what is POSTed to the webhook runs."""
        self.root = os.path.abspath(root)
        self.emulate_event_grid = emulate_event_grid
        self.bind = host
        self.requested_port = port
        self.only = set(functions) if functions is not None else None
        self.host_id = host_id
        self.stop_event = threading.Event()
        self.frontend: HttpFrontend | None = None
        self.listeners: list[Listener] = []
        self.functions: list[LoadedFunction] = []
        self._unwatch: Callable[[], None] | None = None

    @property
    def base_url(self) -> str:
        if self.frontend is None:
            raise RuntimeError("the local host is not started")
        return f"http://{self.bind}:{self.frontend.port}"

    def _storage(self, binding: dict):
        setting = binding.get("connection") or STORAGE_CONNECTION
        connection = os.environ.get(setting, "").strip()
        if not connection:
            raise AppLoadError(f"{setting} is not set: the local host needs a storage connection string")
        connection = expand_connection_string(connection)
        # Throttled storage is retried within seconds, as the app's own clients do (not after the SDK's 15 s).
        return (BlobServiceClient.from_connection_string(connection, **storage.RETRY_OPTIONS),
                QueueServiceClient.from_connection_string(connection, **storage.RETRY_OPTIONS))

    def start(self) -> LocalHost:
        config = load_host_config(self.root)
        every = load_functions(self.root)
        unknown = sorted((self.only or set()) - {spec.name for spec in every})
        if unknown:
            raise AppLoadError(f"the app has no function named {', '.join(unknown)} "
                               f"(it has {', '.join(spec.name for spec in every)})")
        specs = [spec for spec in every if not spec.disabled and (self.only is None or spec.name in self.only)]
        self.functions = [LoadedFunction(spec, self.root) for spec in specs]
        routes = []
        webhook = BlobWebhook()
        for function in self.functions:
            trigger = function.spec.trigger
            kind = trigger["type"]
            if kind == "httpTrigger":
                routes.append(HttpRoute(function, config.route_prefix))
                continue
            blobs, queues = self._storage(trigger)
            if kind == "timerTrigger":
                self.listeners.append(TimerListener(function, self.stop_event, blobs, self.host_id))
            elif kind == "queueTrigger":
                self.listeners.append(QueueListener(function, self.stop_event, queues, config.queues))
            elif kind == "blobTrigger":
                runner = BlobRunner(function, blobs, queues, config.queues, self.host_id)
                if trigger.get("source") != "EventGrid":
                    self.listeners.append(BlobListener(function, self.stop_event, runner))
                    continue
                webhook.add(runner)
                if self.emulate_event_grid:
                    self.listeners.append(EventGridEmulator(function, self.stop_event, runner,
                                                            lambda: self.base_url))
        # Messages the functions send go to the app's own storage, so only its queues' listeners are woken.
        own_queues = {listener.queue_name: listener for listener in self.listeners
                      if isinstance(listener, QueueListener)
                      and (listener.function.spec.trigger.get("connection") or STORAGE_CONNECTION)
                      == STORAGE_CONNECTION}

        def wake(queue_name: str) -> None:
            listener = own_queues.get(queue_name)
            if listener is not None:
                listener.wake.set()

        # Listening first: a port in use stops the start before anything runs.
        self.frontend = HttpFrontend(routes, self.bind, self.requested_port,
                                     {WEBHOOK_PATH: webhook.handle} if webhook.runners else None)
        self.frontend.start()
        self._unwatch = storage.watch_sends(wake)
        for listener in self.listeners:
            listener.start()
        log.info("Functions loaded: %s", ", ".join(f"{f.spec.name} ({f.spec.trigger['type']})"
                                                    for f in self.functions))
        return self

    def stop(self, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> list[str]:
        """Takes no more work and waits up to ``grace_seconds`` in all for the running invocations.

        Returns the names of the functions still running then. Their work is not lost: a queue message
        is retried once its lease lapses, a timer or blob trigger fires again on the next host's start.
        """
        self.stop_event.set()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self.frontend is not None:
            self.frontend.stop()
        started = [listener for listener in self.listeners if listener.ident is not None]
        for listener in started:
            listener.interrupt()
        deadline = time.monotonic() + grace_seconds
        for listener in started:
            listener.join(timeout=max(0.0, deadline - time.monotonic()))
        still_running = sorted({listener.function.spec.name for listener in self.listeners if listener.is_alive()})
        self.listeners.clear()
        if still_running:
            log.warning("Stopped with functions still running after %.0f s: %s", grace_seconds,
                        ", ".join(still_running))
        return still_running

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
