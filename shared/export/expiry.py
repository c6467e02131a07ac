"""What an app no longer keeps, removed from its stores: one app's share of the ApplyRetention timer's work
(shared.pipelines.retention decides the days; shared.platform.retention says which days an app keeps).

- ``remove_raw_days``: the raw store's historical partitions of whole UTC days before a day, oldest first.
- ``fold_out_unseen``: a generation of the snapshot state without the devices last seen before the oldest day kept
  (with their tags, tokens and push feedback), folded once each time that day moves (shared.export.snapshotstate).
- ``remove_folded_log``: the snapshot log's blobs of days before a day, each only once a generation that holds all
  of it has been published for longer than an export may run (EXPORT_JOB_DEADLINE_HOURS): every later generation
  goes on from that one, and no export in flight still reads the blob. A blob that changed since it was listed is
  not removed (the removal is conditional on its ETag).

The late-arrival notes of those days go with shared.ingest.latearrivals.forget_before.

Each step only removes what is past, so running it twice, or twice at once, removes nothing more; a crash leaves
the rest for the next run. Each stops at ``deadline`` (time.monotonic()) and says how much it removed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.export import snapshotstate
from shared.ingest import rawstore, snapshots
from shared.ingest.records import HISTORICAL_TYPES, format_time
from shared.platform import storage
from shared.platform.config import get_settings

DELETE_THREADS = 8  # blobs deleted side by side


def _children(prefix: str) -> Iterator[tuple[int, str]]:
    """(number, prefix) of the numbered folders under ``prefix`` (years, months or days of the raw store)."""
    for item in storage.container(rawstore.RAW_CONTAINER).walk_blobs(name_starts_with=prefix, delimiter="/"):
        part = item.name[len(prefix):].rstrip("/")
        if item.name.endswith("/") and part.isdigit():
            yield int(part), item.name


def old_days(app_id: str, record_type: str, before: dt.date) -> Iterator[tuple[dt.date, str]]:
    """(day, its prefix) of the record type's partitions of days before ``before``, oldest first (the raw store
    is listed a folder level at a time, so only the years and months that hold such days are read)."""
    for year, year_prefix in sorted(_children(f"{app_id}/{record_type}/")):
        if year > before.year:
            continue
        for month, month_prefix in sorted(_children(year_prefix)):
            if (year, month) > (before.year, before.month):
                continue
            for number, day_prefix in sorted(_children(month_prefix)):
                try:
                    day = dt.date(year, month, number)
                except ValueError:
                    continue  # not a folder the raw store writes
                if day < before:
                    yield day, day_prefix


def _delete(name: str, etag: str | None = None) -> bool:
    """Deletes a raw blob (only if its ETag is still ``etag``, given one); whether this call removed it."""
    try:
        if etag is None:
            storage.container(rawstore.RAW_CONTAINER).delete_blob(name)
        else:
            storage.container(rawstore.RAW_CONTAINER).delete_blob(name, etag=etag,
                                                                  match_condition=MatchConditions.IfNotModified)
    except (ResourceNotFoundError, ResourceModifiedError):
        return False
    return True


def _delete_all(names: list[str], etags: list[str | None]) -> int:
    """Deletes blobs side by side (``_delete`` each); returns how many this call removed."""
    if not names:
        return 0
    with ThreadPoolExecutor(DELETE_THREADS) as pool:
        return sum(pool.map(_delete, names, etags))


def remove_raw_days(app_id: str, before: dt.date, deadline: float) -> int:
    """Removes the app's historical partitions of days before ``before``, a day at a time; returns how many blobs
    went."""
    removed = 0
    for record_type in HISTORICAL_TYPES:
        for _, prefix in old_days(app_id, record_type, before):
            if time.monotonic() > deadline:
                return removed
            names = [blob.name for blob in storage.container(rawstore.RAW_CONTAINER).list_blobs(
                name_starts_with=prefix)]
            removed += _delete_all(names, [None] * len(names))
    return removed


def unseen_cutoff(oldest: dt.date) -> str:
    """The stored time before which a device counts as not seen: the start of the oldest day kept."""
    return format_time(dt.datetime.combine(oldest, dt.time(), dt.UTC))


def fold_out_unseen(app_id: str, oldest: dt.date, now: dt.datetime) -> snapshots.Generation | None:
    """Publishes a generation without the devices last seen before ``oldest`` when the current one was not
    folded so (None when it was, or when the app has no snapshot log)."""
    cutoff = unseen_cutoff(oldest)
    current = snapshots.current_generation(app_id)
    if current is not None and (current.unseen_before or "") >= cutoff:
        return None
    return snapshotstate.compact(app_id, now=now, unseen_before=cutoff)


def remove_folded_log(app_id: str, before: dt.date, now: dt.datetime, deadline: float) -> int:
    """Removes the snapshot log's blobs of days before ``before`` that a generation published at least
    EXPORT_JOB_DEADLINE_HOURS ago holds whole; returns how many went."""
    settled = now - dt.timedelta(hours=get_settings().job_deadline_hours)
    holder = next(snapshots.published_generations(app_id, before=settled), None)
    if holder is None:
        return 0
    removed = 0
    for _, prefix in old_days(app_id, snapshots.LOG_TYPE, before):
        if time.monotonic() > deadline:
            return removed
        held = [blob for blob in storage.container(rawstore.RAW_CONTAINER).list_blobs(name_starts_with=prefix)
                if holder.covers.get(blob.name, -1) >= blob.size]
        removed += _delete_all([blob.name for blob in held], [blob.etag for blob in held])
    return removed
