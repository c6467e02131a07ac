"""The local host in a process of its own, for the benchmarks: its address, and its memory and CPU while it
works."""

from __future__ import annotations

import os
import tempfile
import threading
import time

import psutil

from devhost.azurite import free_port
from devhost.spawn import start_host, stop_host

MIB = 1024 * 1024


class HostProcess:
    """The local host in a process of its own, so its memory and CPU are measured alone; ``storage_pid`` is the
    storage emulator's process, whose CPU is measured beside (on one machine, it shares the cores)."""

    def __init__(self, env: dict[str, str], storage_pid: int | None = None) -> None:
        self.storage_pid = storage_pid
        self.port = free_port()
        self.process = start_host(env, self.port, os.path.join(tempfile.gettempdir(), "ee-bench-host.log"))
        self.url = f"http://127.0.0.1:{self.port}"
        self.peak_rss = self.peak_pss = 0
        self._sampling = False
        self._cpu_at_start = self._storage_cpu_at_start = 0.0

    def _processes(self) -> list[psutil.Process]:
        process = psutil.Process(self.process.pid)
        return [process] + process.children(recursive=True)

    def sample(self):
        """Samples the summed RSS every 20 ms and the summed PSS every 200 ms (reading a process's PSS takes
        about a millisecond of CPU, which a faster sampling would take from the export it measures), and notes
        the CPU used so far."""
        self._sampling = True
        self.peak_rss = self.peak_pss = 0
        self._cpu_at_start = tree_cpu_seconds(self.process.pid)
        if self.storage_pid is not None:
            self._storage_cpu_at_start = tree_cpu_seconds(self.storage_pid)

        def loop():
            ticks = 0
            while self._sampling:
                try:
                    processes = self._processes()
                    self.peak_rss = max(self.peak_rss, sum(p.memory_info().rss for p in processes))
                    if ticks % 10 == 0:
                        self.peak_pss = max(self.peak_pss, sum(_pss(p.pid) for p in processes))
                except (psutil.Error, OSError):
                    return
                ticks += 1
                time.sleep(0.02)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread

    def stop_sampling(self, thread) -> dict[str, float]:
        """The peaks, and the CPU seconds used since ``sample`` by the host and by the storage emulator."""
        self._sampling = False
        thread.join()
        figures = {"peak_pss_mib": self.peak_pss / MIB, "peak_rss_mib": self.peak_rss / MIB,
                   "cpu_s": tree_cpu_seconds(self.process.pid) - self._cpu_at_start}
        if self.storage_pid is not None:
            figures["storage_cpu_s"] = tree_cpu_seconds(self.storage_pid) - self._storage_cpu_at_start
        return figures

    def stop(self) -> None:
        stop_host(self.process, grace_seconds=30)


def tree_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by a process and its live descendants (the host's conversion
    processes live as long as it does, so none is missed between two readings)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root] + root.children(recursive=True):
        try:
            times = process.cpu_times()
        except psutil.Error:  # ended between the listing and the reading
            continue
        total += times.user + times.system
    return total


def _pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
        for line in rollup:
            if line.startswith(b"Pss:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no Pss in /proc/{pid}/smaps_rollup")


BENCH_KEY = "YmVuY2htYXJrLW9ubHkta2V5LW5vdC1hLXNlY3JldCE="


def use_storage(connection_string: str) -> dict[str, str]:
    """Points this process's settings (and the hosts it starts) at the bench's Azurite; returns the environment."""
    from shared.platform import config

    # The bench's day is a fixed one (its figures compare across runs): kept as long as an app can keep raw data.
    env = dict(os.environ, AzureWebJobsStorage=connection_string, EXPORT_SAS_ENCRYPTION_KEY=BENCH_KEY,
               EXPORT_ALLOW_LOOPBACK_DESTINATIONS="true", DestinationStorage=connection_string, EXPORT_SCHEDULES="[]",
               RAW_RETENTION_DAYS="3650")
    os.environ.update(env)
    config.reset_settings()
    return env
