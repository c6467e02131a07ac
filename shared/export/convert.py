"""Raw JSON Lines rows converted to a result format on every core.

Parsing, encoding and compressing rows is Python work, and a process runs Python on one core at a time
whatever its threads. So the worker cuts the raw text into runs of whole lines and a pool of processes
converts each run into one gzip member (a gzip file is any number of members one after another); the
results come back in order, with only a few runs in flight, so memory stays bounded.

The pool starts on first use (never at import) with the `spawn` method, as the worker process runs threads,
and its processes import only this module and `shared.export.exportformats`. If one of them dies, the pool is
replaced and the part fails with ConversionProcessLost, which the queue retries like any transient error.
"""

from __future__ import annotations

import collections
import gc
import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Deque, Iterable, Iterator, List, Optional, Tuple

import orjson

from shared.export.exportformats import TextEncoder, gzip_member


class ConversionProcessLost(RuntimeError):
    """A conversion process died (killed, or out of memory) while converting rows of a part."""


def parse_lines(text: bytes) -> List[dict]:
    """The rows of a run of JSON Lines (blank lines skipped)."""
    loads = orjson.loads
    body = text.rstrip(b"\n")
    try:
        # One call for the whole run as a JSON array: a fifth faster than a call per line.
        rows = loads(b"[" + body.replace(b"\n", b",") + b"]")
        if len(rows) == body.count(b"\n") + 1:
            return rows
    except orjson.JSONDecodeError:
        pass
    # Blank lines, or a line that is not one JSON value: line by line, so a bad line raises its own error.
    return [loads(line) for line in text.splitlines() if line]


Encoder = Callable[[Tuple[str, ...]], TextEncoder]


def convert_lines(text: bytes, encoder: Encoder, columns: Tuple[str, ...]) -> Tuple[int, bytes]:
    """How many rows a run of JSON Lines holds, and their encoding as one gzip member. Runs in the pool (an
    encoder class is sent by name, so the processes import only its module)."""
    rows = parse_lines(text)
    return len(rows), gzip_member(encoder(columns).encode(rows))


_calls = 0


def _converting(text: bytes, encoder: Encoder, columns: Tuple[str, ...]) -> Tuple[int, bytes]:
    """convert_lines in a pool process, where the cyclic garbage collector is off (see _start_process)."""
    global _calls
    _calls += 1
    if _calls % 64 == 0:
        gc.collect()  # what an error's traceback may have left in a cycle
    return convert_lines(text, encoder, columns)


def _start_process() -> None:
    # Conversion makes thousands of dicts per run and no reference cycles; the collector's passes over
    # them took about a fifth of the time.
    gc.disable()


_lock = threading.Lock()
_pool: Optional[ProcessPoolExecutor] = None
_pool_size = 0


def _executor(processes: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != processes:
            if _pool is not None:
                _pool.shutdown(wait=False, cancel_futures=True)
            _pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_process)
            _pool_size = processes
        return _pool


def _discard(executor: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is executor:
            _pool = None
    executor.shutdown(wait=False, cancel_futures=True)


def converted(texts: Iterable[bytes], encoder: Encoder, columns: Tuple[str, ...], *,
              processes: int) -> Iterator[Tuple[int, bytes]]:
    """(rows, gzip member) of each run of ``texts``, in order, converted by ``processes`` processes with
    twice that many runs in flight at most."""
    executor = _executor(processes)
    pending: Deque[Future] = collections.deque()
    try:
        for text in texts:
            pending.append(executor.submit(_converting, text, encoder, columns))
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
