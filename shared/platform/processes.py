"""Processes the service starts for itself (conversion, erasure rewrites): they go when the process that started
them goes."""

from __future__ import annotations

import os
import threading
import time

# How often such a process looks whether the process that started it is still there.
PARENT_CHECK_SECONDS = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """Starts a thread that ends this process once ``parent_pid`` is no longer its parent. A pool process holds
    both ends of the pool's call queue, so it never reads an end of file when the process that started it dies
    (SIGKILL, OOM): it would wait for work for ever."""
    threading.Thread(target=_watch, args=(parent_pid,), name="parent-watch", daemon=True).start()


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)
