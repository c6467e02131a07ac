"""Per-app ingestion quotas: COLLECT_RATE_LIMIT_RECORDS_PER_SECOND records a second per app and instance, so one
app's flood cannot take the writes of the others. A token bucket per app: it holds up to two seconds of the
rate, and a batch larger than that is let through when the bucket is full (it then owes the difference), so
every batch the contract allows can get in. A refused batch is told when to come back."""

from __future__ import annotations

import math
import threading
import time

from shared.platform.config import get_settings
from shared.platform.errors import RateLimited

BURST_SECONDS = 2.0

_buckets: dict[str, tuple[float, float]] = {}  # app id -> (tokens, when counted)
_lock = threading.Lock()


def admit(app_id: str, records: int) -> None:
    """Takes ``records`` from the app's bucket, or raises RateLimited with the seconds to wait."""
    rate = get_settings().collect_rate_limit
    if not rate or not records:
        return
    capacity = rate * BURST_SECONDS
    now = time.monotonic()
    with _lock:
        tokens, counted = _buckets.get(app_id, (capacity, now))
        tokens = min(capacity, tokens + (now - counted) * rate)
        needed = min(records, capacity)
        if tokens < needed:
            _buckets[app_id] = (tokens, now)
            wait = math.ceil((needed - tokens) / rate)
            raise RateLimited(f"the app sends more than its {rate} records a second; send this batch again after "
                              f"{wait} seconds", retry_after=wait)
        _buckets[app_id] = (tokens - records, now)
