"""Compaction of the snapshot log: the app's folded state, written as a new generation, so that an export reads
the state and only the part of the log that came since, however long the log grows.

A generation (shared.ingest.snapshots.Generation) holds, for each kind (device, tag, token, push) and bucket of
devices, a gzip file of the kind's export rows sorted by device, and a manifest, written last, that names how
many bytes of each log blob it holds. A compaction folds the newest generation with the log that came since
(shared.export.snapshotfold: only the touched devices of each bucket are decoded), or, when the state has
outgrown its buckets, spreads it over twice as many. It changes nothing that exists: a crash
leaves files no manifest names, which the next compaction's clean-up removes, and two compactions at once each
write a complete generation, the later-started one being the newest.

The StartExport timer compacts, at most every COMPACT_EVERY per process, each app whose log has at least
COMPACT_TAIL_BYTES stored since its state, or anything since a state older than COMPACT_EVERY (a log smaller
than that, without a state, is folded whole by each export, quickly). A generation
is removed once a newer one has been published for longer than an export may run (EXPORT_JOB_DEADLINE_HOURS),
so no export in flight loses the files its plan names. The log blobs are removed by retention
(shared.export.expiry), once a generation that holds them has been published that long; retention also folds
a generation that leaves out the devices not seen for the app's retention.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from isal import igzip

from shared.export import planning, snapshotfold
from shared.ingest import rawstore, snapshots
from shared.platform import apps, storage
from shared.platform.config import get_settings

COMPACT_EVERY = dt.timedelta(minutes=10)
COMPACT_TAIL_BYTES = 1024 * 1024
SWEEP_SECONDS = 40.0  # a timer run compacts apps for at most about this long; the rest wait for the next
GZIP_LEVEL = 2

log = logging.getLogger(__name__)


def compact(app_id: str, *, now: dt.datetime | None = None,
            unseen_before: str | None = None) -> snapshots.Generation | None:
    """Writes and publishes the app's folded state as a new generation; None when nothing came since the last.
    With ``unseen_before`` (a stored time), the devices last seen before it are left out, with their tags, tokens
    and push feedback (shared.export.snapshotfold.unseen_devices), and a generation is written even when nothing
    came since the last."""
    now = now or dt.datetime.now(dt.UTC)
    current = snapshots.current_generation(app_id)
    blobs, tail = planning.snapshot_tail(app_id, current)
    if not tail and (unseen_before is None or current is None):
        return None
    state = [(current.file(kind, bucket), size) for kind, bucket, size in planning.state_files(current)] \
        if current is not None else []
    needed = snapshotfold.bucket_count(tail, sum(size for _, size in state))
    if current is None:  # the first state: the whole log
        buckets = needed
    else:
        # A state that outgrew its buckets is spread over about twice as many as it needs, with room to grow (a
        # multiple of its own count, so each new bucket's devices come from one of its buckets). It is never
        # folded again from the whole log: retention removes log blobs whose records only the state still holds.
        buckets = current.buckets
        if needed > 2 * buckets:
            while buckets < 2 * needed and 2 * buckets <= snapshotfold.MAX_BUCKETS:
                buckets *= 2
    generation = snapshots.new_generation(app_id, buckets, {blob.name: blob.size for blob in blobs}, now,
                                          unseen_before=unseen_before or (current.unseen_before if current else None))
    container = storage.container(rawstore.RAW_CONTAINER)
    for bucket, texts in snapshotfold.folded(snapshots.KINDS, state, buckets, tail,
                                             state_buckets=current.buckets if current else 0):
        if unseen_before is not None:
            texts = snapshotfold.without_devices(texts, snapshotfold.unseen_devices(texts, unseen_before))
        for kind, text in texts.items():
            if text:
                container.get_blob_client(generation.file(kind, bucket)).upload_blob(
                    igzip.compress(text, GZIP_LEVEL), overwrite=True)
    snapshots.publish(generation)
    remove_old_generations(app_id, now)
    return generation


def remove_old_generations(app_id: str, now: dt.datetime) -> int:
    """Removes the generations a newer one has replaced for longer than an export may run, and the files of
    compactions that never published; returns how many generations went."""
    container = storage.container(rawstore.RAW_CONTAINER)
    files: dict[str, list[str]] = {}
    published: dict[str, dt.datetime] = {}
    for blob in container.list_blobs(name_starts_with=f"{app_id}/{snapshots.STATE_TYPE}/"):
        name = blob.name.split("/")[-2]
        files.setdefault(name, []).append(blob.name)
        if blob.name.endswith("/manifest.json"):
            published[name] = blob.last_modified
    keep_for = dt.timedelta(hours=get_settings().job_deadline_hours)
    names = sorted(published)
    gone = [older for older, newer in zip(names, names[1:]) if published[newer] < now - keep_for]
    # Files without a manifest, older than an export may run: a compaction that died (one still running is newer).
    gone += [name for name in files if name not in published and name < names[-1]
             and _started(name) < now - keep_for] if names else []
    for name in gone:
        for blob_name in files[name]:
            container.delete_blob(blob_name)
    return len(gone)


def _started(name: str) -> dt.datetime:
    return dt.datetime.strptime(name.split("-")[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=dt.UTC)


def due(app_id: str, now: dt.datetime) -> bool:
    """Whether the app's log has COMPACT_TAIL_BYTES stored since its state (a log smaller than that is folded
    whole by each export, quickly), or anything since a state older than COMPACT_EVERY."""
    current = snapshots.current_generation(app_id)
    since = sum(end - start for _, start, end in planning.snapshot_tail(app_id, current)[1])
    if since >= COMPACT_TAIL_BYTES:
        return True
    return since > 0 and current is not None and _started(current.name) < now - COMPACT_EVERY


_last_sweep: float | None = None


def compact_due(now: dt.datetime) -> int:
    """The timer's sweep: compacts the apps that are due, for about SWEEP_SECONDS at most, at most every
    COMPACT_EVERY in a process; returns how many it compacted."""
    global _last_sweep
    started = time.monotonic()
    if _last_sweep is not None and started - _last_sweep < COMPACT_EVERY.total_seconds():
        return 0
    compacted = 0
    for app_id in apps.list_app_ids():
        if time.monotonic() - started > SWEEP_SECONDS:
            return compacted  # the next sweep goes on (it comes at the next tick: _last_sweep is not set)
        try:
            if due(app_id, now) and compact(app_id, now=now) is not None:
                compacted += 1
        except Exception:  # one app's failure must not stop the others'; its log is folded at export meanwhile
            log.exception("compacting the snapshot log of %s failed", app_id)
    _last_sweep = started
    return compacted
