"""Building blocks the tests share: app paths, keys, SAS URLs on Azurite, direct HTTP requests."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import azure.functions as func
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from devhost.azurite import ACCOUNT_NAME
from devhost.host import LocalHost
from shared.platform import config
from shared.platform.config import DEVELOPMENT_CONNECTION_STRING

ACCOUNT_KEY = DEVELOPMENT_CONNECTION_STRING.split("AccountKey=")[1].split(";")[0]
API_VERSION = "2014-12-01"


def app_path(collection: str, app: str) -> str:
    return (f"/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.MobileEngagement/"
            f"appcollections/{collection}/apps/{app}/devices")


def container_sas_url(azurite, container: str, *, permission: str = "racwdl",
                      expiry: dt.datetime | None = None, create: bool = True) -> str:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    if create:
        service.create_container(container)
    expiry = expiry or dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    sas = generate_container_sas(ACCOUNT_NAME, container, account_key=ACCOUNT_KEY,
                                 permission=ContainerSasPermissions.from_string(permission), expiry=expiry)
    return f"{service.url.rstrip('/')}/{container}?{sas}"


def http_request(method: str, path: str, *, key: str | None = None, body=None, params=None,
                 route_params=None, headers=None, raw: bytes | None = None) -> func.HttpRequest:
    all_headers = {"Content-Type": "application/json"}
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    all_headers.update(headers or {})
    params = {"api-version": API_VERSION} if params is None else params
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return func.HttpRequest(method=method, url=f"http://127.0.0.1:7071{path}" + (f"?{query}" if query else ""),
                            headers=all_headers, params=params, route_params=route_params or {},
                            body=raw if raw is not None else (json.dumps(body).encode() if body is not None else b""))


def wait_for(predicate, timeout=20.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def queue_exists(client) -> bool:
    try:
        client.get_queue_properties()
        return True
    except Exception:
        return False


@contextmanager
def local_host(*functions: str) -> Iterator[LocalHost]:
    """The app's local host on a free port, running only ``functions``, stopped when the block ends."""
    host = LocalHost(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), port=0,
                     functions=list(functions)).start()
    try:
        yield host
    finally:
        host.stop(grace_seconds=5)


@contextmanager
def offline_settings(**values: object) -> Iterator[None]:
    """The app's settings with ``values``, and a placeholder for each required one, for tests that read settings
    but never reach storage (`make test-pure`); the environment is as it was afterwards."""
    placeholders = {config.STORAGE_CONNECTION: DEVELOPMENT_CONNECTION_STRING,
                    config.SAS_ENCRYPTION_KEY: "cGxhY2Vob2xkZXItb25seS1rZXktMzItYnl0ZXMtISE="}
    wanted = {**placeholders, **{name: str(value) for name, value in values.items()}}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    config.reset_settings()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        config.reset_settings()


class Receiver:
    """A webhook on loopback that answers 500 to its first POST (unless ``fail_first`` is false), then 200."""

    def __init__(self, *, fail_first: bool = True):
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(500 if fail_first and len(receiver.requests) == 1 else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
