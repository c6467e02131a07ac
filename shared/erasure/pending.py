"""Erasure at once: every read of the raw store leaves out the rows of erasures that have not ended yet.

From the moment an erasure request is answered, an export, pipeline run or late run that starts reading the raw
store (shared.export.sources.raw_chunks, the one place that reads it) takes the app's pending erasures and reads
the bytes each one covers (before its cut) without their rows; bytes after a cut came later and are read as
they are. Once an erasure has ended its rows are gone from the store itself, and reads go back to copying.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.erasure import store
from shared.erasure.matching import Matcher

# (start, end, the rows to leave out of those bytes, or None for none)
Segment = tuple[int, int, Matcher | None]


@dataclass(frozen=True)
class ReadFilter:
    """The pending erasures of one app, as (cut, matcher) each."""

    erasures: tuple[tuple[dict[str, int], Matcher], ...]

    def segments(self, name: str, start: int, end: int) -> list[Segment]:
        """Bytes [start, end) of blob ``name`` cut where a pending erasure's cut falls: each segment with the rows
        to leave out of it (the erasures whose cut is past it). Cuts and starts fall on gzip member boundaries."""
        cuts = sorted({cut[name] for cut, _ in self.erasures if name in cut and start < cut[name]})
        segments: list[Segment] = []
        position = start
        for limit in cuts + [end]:
            stop = min(limit, end)
            if stop <= position:
                continue
            covering = [matcher for cut, matcher in self.erasures if cut.get(name, 0) >= stop]
            matcher = None
            for each in covering:
                matcher = each if matcher is None else matcher.union(each)
            segments.append((position, stop, matcher))
            position = stop
        return segments


NO_FILTER = ReadFilter(())


def app_of(names: Iterable[str]) -> str | None:
    """The app whose raw store holds blobs ``names`` (each is ``{app}/...``)."""
    for name in names:
        return name.split("/", 1)[0]
    return None


def read_filter(app_id: str | None) -> ReadFilter:
    """The app's pending erasures now (one table query; their ids and cuts are read once per process)."""
    if app_id is None:
        return NO_FILTER
    erasures = []
    for task_id in store.pending_task_ids(app_id):
        work = store.read_work(app_id, task_id)
        if work is not None:  # else it ended since the query
            erasures.append((work.cut, work.matcher))
    return ReadFilter(tuple(erasures))
