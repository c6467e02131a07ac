"""Foreground work of this process (Collect storing batches), which background work yields to: an erasure's
rewrites go one at a time, with pauses, while this instance is storing what devices send (shared.erasure)."""

from __future__ import annotations

import time

_last = float("-inf")


def note() -> None:
    """Foreground work happened now."""
    global _last
    _last = time.monotonic()


def busy(within_seconds: float = 1.0) -> bool:
    """Whether foreground work happened in the last ``within_seconds``."""
    return time.monotonic() - _last < within_seconds
