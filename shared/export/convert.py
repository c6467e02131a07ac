"""Raw JSON Lines rows converted to a text result format (JsonBlob re-encoded, CsvBlob) on every core.

Parsing, encoding and compressing rows is Python work, and a process runs Python on one core at a time
whatever its threads. So the worker cuts the raw text into runs of whole lines and a pool of processes
converts each run with its format's converter, into one gzip member (a gzip file is any number of members one
after another); the results come back in order, with only a few runs in flight, so memory stays bounded.
(ParquetBlob reads its rows with DuckDB in the worker itself: shared.export.jsonreader.)

The pool starts on first use (never at import) with the `spawn` method, as the worker process runs threads,
and its processes import only this module and the converter's (`shared.export.exportformats`, which imports
no pyarrow). If one of them dies, the pool is replaced and the part fails with ConversionProcessLost, which
the queue retries like any transient error.
"""

from __future__ import annotations

import collections
import gc
import multiprocessing
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from shared.export.exportformats import RunConverter
from shared.export.rows import RowSpec
from shared.platform import processes


class ConversionProcessLost(RuntimeError):
    """A conversion process died (killed, or out of memory) while converting rows of a part."""


_calls = 0


def _converting(convert_run: RunConverter, text: bytes, spec: RowSpec) -> tuple[int, Any]:
    """A format's conversion of a run in a pool process, where the cyclic garbage collector is off (see
    _start_process). The converter is sent by name, so the processes import only its module."""
    global _calls
    _calls += 1
    if _calls % 64 == 0:
        gc.collect()  # what an error's traceback may have left in a cycle
    return convert_run(text, spec)


def _start_process(parent_pid: int) -> None:
    # Conversion makes thousands of dicts per run and no reference cycles; the collector's passes over
    # them took about a fifth of the time.
    gc.disable()
    processes.exit_with_parent(parent_pid)


_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def _executor(processes: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != processes:
            if _pool is not None:
                _pool.shutdown(wait=False, cancel_futures=True)
            _pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_process, initargs=(os.getpid(),))
            _pool_size = processes
        return _pool


def _discard(executor: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is executor:
            _pool = None
    executor.shutdown(wait=False, cancel_futures=True)


def converted(texts: Iterable[bytes], convert_run: RunConverter, spec: RowSpec, *,
              processes: int) -> Iterator[tuple[int, Any]]:
    """(rows kept, converted payload) of each run of ``texts``, in order, converted by ``processes`` processes
    with twice that many runs in flight at most."""
    executor = _executor(processes)
    pending: collections.deque[Future] = collections.deque()
    try:
        for text in texts:
            pending.append(executor.submit(_converting, convert_run, text, spec))
            if len(pending) > 2 * processes:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as error:
        _discard(executor)
        raise ConversionProcessLost(f"a conversion process died ({error}); the part is retried") from None
    finally:
        for future in pending:
            future.cancel()
