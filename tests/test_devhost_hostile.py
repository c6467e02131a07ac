"""The local host against careless clients and careless operators: bodies whose length cannot be read, a port
already taken, and a burst of stop signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import requests
from conftest import REPO_ROOT
from helpers import local_host

from devhost.azurite import free_port


@pytest.fixture
def health_host(app_env):
    with local_host("Health") as host:
        yield host


def raw_exchange(host, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", host.frontend.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while True:
            data = connection.recv(65536)  # the host closes the connection after a framing error
            if not data:
                return answer
            answer += data


@pytest.mark.parametrize("header", [b"Content-Length: -1", b"Content-Length: abc", b"Content-Length: 1e3",
                                    b"Content-Length: 5\r\nContent-Length: 6", b"Transfer-Encoding: chunked"])
def test_a_body_whose_length_cannot_be_read_is_a_400_and_holds_nothing(health_host, header):
    body = b"zz-not-hex\r\n" if b"chunked" in header else b""
    answer = raw_exchange(health_host, b"POST /health HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n" + body)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request"
    error = json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "BadRequest"
    assert "Content-Length" in error["message"] or "chunk size" in error["message"]
    assert requests.get(f"{health_host.base_url}/health", timeout=10).status_code == 200


def test_serve_on_a_port_in_use_says_so(app_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = subprocess.run([sys.executable, "-m", "devhost", "serve", "--port", str(port), "--functions",
                                   "Health"], cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True,
                                  timeout=60)
    assert finished.returncode == 2
    assert f"The local host cannot start: port {port} on 127.0.0.1 is already in use" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_a_burst_of_stop_signals_stops_serve_every_time(app_env):
    for _ in range(3):
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "devhost", "serve", "--port", str(port), "--functions",
                                    "Health", "--grace-seconds", "5"], cwd=REPO_ROOT, env=dict(os.environ),
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert process.stdout.readline().startswith(f"Local host ready at http://127.0.0.1:{port}")
            for _ in range(200):  # as fast as a loop sends them: handlers run inside one another
                os.kill(process.pid, signal.SIGTERM)
                os.kill(process.pid, signal.SIGINT)
            assert process.wait(timeout=30) == 0
            assert process.stdout.read().strip() == "Local host stopped"
        finally:
            if process.poll() is None:
                process.kill()
