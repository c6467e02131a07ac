"""The local host as a child process, for the commands that measure it or kill it (make bench, make chaos)."""

from __future__ import annotations

import subprocess
import sys
import time

from devhost.azurite import REPO_ROOT, port_open


def start_host(env: dict[str, str], port: int, log_path: str) -> subprocess.Popen:
    """`python -m devhost serve --port <port>` with ``env``, its output appended to ``log_path``; returns once
    it listens, or raises RuntimeError naming the log."""
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "devhost", "serve", "--port", str(port)], cwd=REPO_ROOT,
                                   env=env, stdout=log_file, stderr=log_file)
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the local host on port {port} did not start; see {log_path}")
        time.sleep(0.05)
    return process


def stop_host(process: subprocess.Popen, *, grace_seconds: float = 40) -> None:
    """SIGTERM (the host lets running invocations finish), then SIGKILL past ``grace_seconds``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
