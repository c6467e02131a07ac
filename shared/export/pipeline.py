"""Small bounded pipelines, so reading, converting, compressing and uploading overlap without memory
growing: each stage holds at most a few blocks. zlib and socket I/O release the GIL, which is what lets
these threads run side by side."""

from __future__ import annotations

import ctypes
import functools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_DONE = object()
# glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_allocator_tuned = False
MMAP_THRESHOLD_BYTES = 128 * 1024


@functools.lru_cache(maxsize=1)
def _glibc():
    """The C library when it is glibc (it has malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def tune_allocator() -> None:
    """Keeps what an export frees from staying in the process. Once per process; a no-op without glibc.

    Buffers of 128 KiB and more get their own mmap, so freeing one gives it back: left alone, glibc raises
    its mmap threshold after the first such frees and then serves them from its arenas, which keep what was
    freed (a two-part JSON export grew the worker to 340 MiB that way, against about 120 with this). 128 KiB,
    not 1 MiB, because the column buffers of a converted run (20-600 KiB each) are freed in another order
    than they came, which left holes in the arenas. And two arenas at most, not eight per core: each thread
    that allocates while another does would get an arena of its own, each keeping its own freed and
    fragmented memory."""
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_ARENA_MAX, 2)


def release_free_memory() -> None:
    """Gives the free pages inside the allocator's arenas back to the system, so the fragments one part
    leaves do not add up over the parts a process runs."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yields ``items`` while a thread reads up to ``depth`` ahead; re-raises the reader's error."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple) -> bool:
        """Puts ``entry`` once there is room; False when the consumer stopped (so the reader never blocks on
        a buffer nobody empties)."""
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((_DONE, None))
        except BaseException as error:  # handed to the consumer, which raises it
            offer((_DONE, error))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()


class Background:
    """Runs ``consume(item)`` for each ``put`` item in one thread, in order, holding at most ``depth``."""

    def __init__(self, consume: Callable[[T], None], depth: int = 2) -> None:
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error:
                continue  # drain after a failure so the producer never blocks
            try:
                self._consume(item)
            except BaseException as error:
                self._error.append(error)

    def put(self, item: T) -> None:
        if self._error:
            raise self._error[0]
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if self._error:
            raise self._error[0]


class Uploads:
    """Runs uploads on a few threads with at most ``limit`` in flight; ``wait`` re-raises the first error."""

    def __init__(self, upload: Callable[..., None], limit: int = 4) -> None:
        self._upload = upload
        self._pool = ThreadPoolExecutor(limit)
        self._slots = threading.BoundedSemaphore(limit)
        self._futures: list[Future] = []
        self._errors: list[BaseException] = []

    def _done(self, future: Future) -> None:
        error = future.exception()
        if error is not None:
            self._errors.append(error)
        self._slots.release()

    def submit(self, *args) -> None:
        self._slots.acquire()
        if self._errors:
            self._slots.release()
            raise self._errors[0]
        future = self._pool.submit(self._upload, *args)
        future.add_done_callback(self._done)
        self._futures.append(future)

    def wait(self) -> None:
        try:
            for future in self._futures:
                future.result()
        finally:
            self._pool.shutdown(wait=True)
