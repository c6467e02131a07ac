"""Azurite, the Azure Storage emulator, started and stopped by the project on loopback.

The emulator comes from the repo's pinned npm dependency (`node_modules/.bin/azurite`, installed by
`make setup`). It always runs with `--disableTelemetry` and a data folder of the caller's choosing, and is
stopped by the process id it was started with.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from urllib.parse import urlparse

from shared.platform.config import DEVELOPMENT_CONNECTION_STRING

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCOUNT_NAME = "devstoreaccount1"
SERVICES = ("blob", "queue", "table")
# Azurite closes an idle connection after 5 s by default; a client that sends on a pooled connection just as
# it closes gets "connection reset", which the SDKs retry only for idempotent requests (a table transaction is
# a POST). Azure itself keeps idle connections for minutes: so does the emulator here.
KEEP_ALIVE_SECONDS = 300


class AzuriteError(Exception):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def connection_string(host: str, ports: dict[str, int]) -> str:
    """A development connection string for Azurite on ``host`` with the given per-service ports."""
    endpoints = "".join(f"{service.capitalize()}Endpoint=http://{host}:{ports[service]}/{ACCOUNT_NAME};"
                        for service in SERVICES)
    base = DEVELOPMENT_CONNECTION_STRING.split("BlobEndpoint=")[0]
    return base + endpoints


def endpoints_of(connection: str) -> dict[str, tuple]:
    """(host, port) of each service named in an Azurite connection string."""
    parts = dict(part.split("=", 1) for part in connection.split(";") if "=" in part)
    found = {}
    for service in SERVICES:
        url = parts.get(f"{service.capitalize()}Endpoint")
        if not url:
            raise AzuriteError(f"the connection string has no {service.capitalize()}Endpoint")
        parsed = urlparse(url)
        found[service] = (parsed.hostname, parsed.port or 80)
    return found


class Azurite:
    """One Azurite process serving blob, queue and table on loopback."""

    def __init__(self, *, location: str, ports: dict[str, int], host: str = "127.0.0.1",
                 log_path: str | None = None) -> None:
        self.location = location
        self.ports = dict(ports)
        self.host = host
        self.log_path = log_path or os.path.join(location, "azurite.log")
        self.process: subprocess.Popen | None = None

    @classmethod
    def on_free_ports(cls, location: str) -> Azurite:
        return cls(location=location, ports={service: free_port() for service in SERVICES})

    @property
    def pid(self) -> int:
        """The process id of the running emulator."""
        if self.process is None:
            raise AzuriteError("Azurite is not running")
        return self.process.pid

    @property
    def connection_string(self) -> str:
        return connection_string(self.host, self.ports)

    def start(self, timeout: float = 60.0) -> Azurite:
        binary = os.path.join(REPO_ROOT, "node_modules", ".bin", "azurite")
        if not os.path.exists(binary):
            raise AzuriteError(f"{binary} is missing: run `make setup` (npm install) first")
        os.makedirs(self.location, exist_ok=True)
        command = [binary, "--location", self.location, "--disableTelemetry", "--skipApiVersionCheck",
                   "--loose", "--silent"]
        for service in SERVICES:
            command += [f"--{service}Host", self.host, f"--{service}Port", str(self.ports[service]),
                        f"--{service}KeepAliveTimeout", str(KEEP_ALIVE_SECONDS)]
        log = open(self.log_path, "ab")
        try:
            # A session of its own, so stopping it reaches node and anything node spawned.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not all(port_open(self.host, port) for port in self.ports.values()):
            if self.process.poll() is not None:
                raise AzuriteError(f"Azurite exited with code {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise AzuriteError(f"Azurite did not listen within {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_running(connection: str, location: str) -> Azurite | None:
    """Starts Azurite where ``connection`` points unless it already answers there; returns what it started.

    Only loopback endpoints are ever started: a connection string to a real account is left alone.
    """
    if "AccountName=devstoreaccount1" not in connection:
        return None
    endpoints = endpoints_of(connection)
    hosts = {host for host, _ in endpoints.values()}
    if not hosts <= {"127.0.0.1", "localhost"}:
        return None
    if all(port_open(host, port) for host, port in endpoints.values()):
        return None
    if any(port_open(host, port) for host, port in endpoints.values()):
        raise AzuriteError("some Azurite ports answer and others do not: stop what holds them, then retry")
    return Azurite(location=location, ports={s: p for s, (_, p) in endpoints.items()}, host="127.0.0.1").start()
