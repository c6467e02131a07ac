"""Worker slots shared fairly between tenants.

A process runs at most a fixed number of work items at once. When a slot frees, it goes to the waiting item
whose tenant holds the fewest slots (the earliest such item on a tie), not to whichever thread wakes first:
a tenant whose items are slow, such as one whose destination stopped answering, cannot take every slot that
frees while another tenant's item waits. Slots reserved for newcomers go only to tenants that hold none, so
a tenant arriving while another holds every ordinary slot starts at once instead of after a whole item.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class _Waiter:
    __slots__ = ("tenant", "granted")

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.granted = False


class FairSlots:
    def __init__(self, slots: int, *, reserved_for_newcomers: int = 0) -> None:
        if slots < 1 or reserved_for_newcomers < 0:
            raise ValueError("at least one slot, and no negative reserve")
        self._free = slots + reserved_for_newcomers
        self._reserved = reserved_for_newcomers
        self._held: Counter = Counter()
        self._waiting: list[_Waiter] = []
        self._changed = threading.Condition()

    @contextmanager
    def slot(self, tenant: str) -> Iterator[None]:
        """Holds one slot for ``tenant`` while the block runs."""
        self._acquire(tenant)
        try:
            yield
        finally:
            self._release(tenant)

    def held(self, tenant: str) -> int:
        with self._changed:
            return self._held[tenant]

    def waiting(self) -> int:
        with self._changed:
            return len(self._waiting)

    def _acquire(self, tenant: str) -> None:
        with self._changed:
            waiter = _Waiter(tenant)
            self._waiting.append(waiter)
            self._grant()
            while not waiter.granted:
                self._changed.wait()

    def _release(self, tenant: str) -> None:
        with self._changed:
            self._held[tenant] -= 1
            if not self._held[tenant]:
                del self._held[tenant]
            self._free += 1
            self._grant()

    def _grant(self) -> None:
        granted = False
        while self._free and self._waiting:
            waiter = min(self._waiting, key=lambda w: self._held[w.tenant])  # min keeps the earliest on a tie
            if self._held[waiter.tenant] and self._free <= self._reserved:
                break  # only reserved slots are free, and every waiting tenant already holds one
            self._waiting.remove(waiter)
            waiter.granted = True
            self._held[waiter.tenant] += 1
            self._free -= 1
            granted = True
        if granted:
            self._changed.notify_all()
