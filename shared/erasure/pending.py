"""Erasure at once: every read of the raw store leaves out the rows of erasures that have not ended yet.

From the moment an erasure request is answered, an export, pipeline run or late run that starts reading the raw
store (shared.export.sources.raw_chunks, the one place that reads it) takes the app's pending erasures and reads
the bytes each one covers (before its cut) without their rows; bytes after a cut came later and are read as
they are. The one exception is the snapshot state: a generation that a compaction started before the request
folded the log as it was then, rows of the ids included, and may publish its files after the cut was taken; those
files are read without the rows too, whole (shared.erasure.service rewrites them). A generation started after the
request read the log without them, and what it holds of the ids came later: new data, read as it is. Once an
erasure has ended its rows are gone from the store itself, and reads go back to copying.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from shared.erasure import store
from shared.erasure.matching import Matcher
from shared.ingest import snapshots

# (start, end, the rows to leave out of those bytes, or None for none)
Segment = tuple[int, int, Matcher | None]


def generation_stamp(requested: dt.datetime) -> str:
    """A request time as it sorts against the names of snapshot state generations (which start with their start)."""
    return requested.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%f")


def _started_before(name: str, stamp: str) -> bool:
    """Whether blob ``name`` is a file of a snapshot state generation started before ``stamp``."""
    parts = name.split("/")
    return len(parts) == 4 and parts[1] == snapshots.STATE_TYPE and parts[2] < stamp


@dataclass(frozen=True)
class ReadFilter:
    """The pending erasures of one app, as (cut, matcher, generation_stamp of its request) each."""

    erasures: tuple[tuple[dict[str, int], Matcher, str], ...]

    def segments(self, name: str, start: int, end: int) -> list[Segment]:
        """Bytes [start, end) of blob ``name`` cut where a pending erasure's cut falls: each segment with the rows
        to leave out of it (the erasures whose cut is past it, and those asked after the generation of a state file
        they did not list started). Cuts and starts fall on gzip member boundaries."""
        cuts = sorted({cut[name] for cut, _, _ in self.erasures if name in cut and start < cut[name]})
        segments: list[Segment] = []
        position = start
        for limit in cuts + [end]:
            stop = min(limit, end)
            if stop <= position:
                continue
            covering = [matcher for cut, matcher, stamp in self.erasures
                        if (cut[name] >= stop if name in cut else _started_before(name, stamp))]
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
    for task_id, requested in sorted(store.pending_requests(app_id).items()):
        work = store.read_work(app_id, task_id)
        if work is not None:  # else it ended since the query
            erasures.append((work.cut, work.matcher, generation_stamp(requested)))
    return ReadFilter(tuple(erasures))
