"""Erasure tasks: asked through the API, carried out by the EraseData queue function, in slices.

Asking (``create_erasure``) takes the *cut* (every raw blob of the app and its size: the bytes an erasure covers),
saves the ids with it, records the task and queues it; from then on every read of the raw store leaves the rows
out (shared.erasure.pending). Carrying it out (``work``) goes blob by blob (shared.erasure.rewrite), each noted in
the task's progress, for ERASE_SLICE_SECONDS at a time; then the app's Delta tables (shared.export.deltaerase);
then it lists the tasks that delivered the rows in files, and ends: the ids are deleted (only keyed hashes stay,
shared.erasure.audit) and an ``erasure.completed`` event goes through the forwarding channels.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass

from shared.erasure import audit, delivered, pending, rewrite, store
from shared.erasure.model import COUNTS, ErasureState, ErasureTask
from shared.erasure.request import parse
from shared.erasure.rewrite import BlobBusy
from shared.erasure.scrub import BrokenMember, CannotFit
from shared.erasure.store import BlobProgress, TaskChanged, Work
from shared.export import forwarding
from shared.export.deltaerase import LakeTableUnavailable, erase_rows, remove_expired_files
from shared.ingest import rawstore, snapshots
from shared.pipelines.laketables import DELTA_LAKE, lake_tables
from shared.platform import foreground, processes, storage
from shared.platform.apps import AppRef
from shared.platform.errors import ErasureNotFound, TransientError
from shared.platform.times import iso, parse_iso, utcnow
from shared.tasks import jobs

log = logging.getLogger(__name__)

ERASE_QUEUE = "erasure-work"
# A slice of work, then the task goes on in a message of its own: well inside the host's functionTimeout.
ERASE_SLICE_SECONDS = 240.0
# A blob leased by another rewrite, or a compaction of the snapshot state that started before the request and may
# still be writing its files: the task looks again after this long.
LOOK_AGAIN_SECONDS = 5
RETRY_AFTER_SECONDS = 10
# A DeltaLake run that started before the request is still running: the tables are erased once it has ended.
WAIT_FOR_LAKE_RUNS_SECONDS = 30
MAX_MESSAGE_DELAY_SECONDS = 7 * 24 * 3600 - 60  # a queue message waits at most 7 days
ERASE_PARALLEL_BLOBS = 2
# While Collect is busy in this instance, a rewrite is followed by a pause this many times as long as it took (at
# most YIELD_MAX_SECONDS): an erasure goes on at about a ninth of one process's pace, and Collect keeps its own
# (bench: Collect at 0.96 of its rate alone while erasures ran with 8; 0.83 with 3).
YIELD_FACTOR = 8.0
YIELD_MAX_SECONDS = 5.0
ERASE_NICENESS = 10
ERASE_IN_PROCESS = False


@dataclass(frozen=True)
class EraseMessage:
    """A slice of a task's work; or, with ``files_at``, the removal of its tables' old files at that time."""

    app_id: str
    task_id: str
    files_at: str | None = None

    def to_json(self) -> str:
        return json.dumps({"app": self.app_id, "task": self.task_id,
                           **({"filesAt": self.files_at} if self.files_at else {})})

    @classmethod
    def from_json(cls, body: bytes) -> EraseMessage:
        try:
            doc = json.loads(body)
            files_at = doc.get("filesAt")
            return cls(str(doc["app"]), str(doc["task"]), str(files_at) if files_at else None)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not an erasure message: {error!r}") from None


def _queue(app_id: str, task_id: str, *, delay_seconds: int = 0) -> None:
    storage.send_message(ERASE_QUEUE, EraseMessage(app_id, task_id).to_json(), delay_seconds=delay_seconds)


def create_erasure(app: AppRef, body: object) -> ErasureTask:
    """Records and queues an erasure; InvalidInput (naming the field) for a body that is not one."""
    request = parse(body)
    asked = utcnow()
    task = ErasureTask(app.id, str(uuid.uuid4()), asked, len(request.device_ids), len(request.user_ids),
                       request.reason, request.remove_table_files_now)
    # Every byte acknowledged before this request is in a blob listed now, at most as long as listed.
    cut = {blob.name: blob.size for blob in storage.container(rawstore.RAW_CONTAINER).list_blobs(
        name_starts_with=f"{app.id}/") if _holds_rows(blob.name)}
    store.save_work(app.id, task.id, Work(request.device_ids, request.user_ids, cut))
    # Queued before its row exists: a task is never left Queued without a message (a process that dies, or a
    # queue that refuses, in between leaves a message that finds no task and is dropped, and no 202 was given).
    try:
        _queue(app.id, task.id)
        store.create_task(task)
    except Exception:
        _forget_work(app.id, task.id)
        raise
    return task


def _forget_work(app_id: str, task_id: str) -> None:
    """Deletes the ids of a task that was never recorded (the caller got no 202)."""
    try:
        store.delete_work(app_id, task_id)
    except Exception:  # storage down: the message's last try deletes them (work_or_retry)
        log.warning("The ids of unrecorded erasure %s stay until its message's last try", task_id)


def _holds_rows(name: str) -> bool:
    """Whether a blob of the raw store holds rows (gzip JSON Lines), not a state generation's manifest."""
    return name.endswith(".jsonl.gz")


def get_erasure(app: AppRef, task_id: str) -> ErasureTask:
    return store.read_task(app.id, task_id)[0]


def list_erasures(app: AppRef) -> list[ErasureTask]:
    return store.list_tasks(app.id)


# ---- carrying it out

# A task whose slice failed on every try of its message goes on in a fresh one this much later: an erasure is
# never given up on while rows of its ids may be left.
RETRY_LATER_SECONDS = 60


def work_or_retry(message: EraseMessage, *, last_try: bool) -> None:
    """``work``; a failure is raised for the host to try the message again, and on its last try the task goes on
    in a new message instead of the poison queue."""
    try:
        work(message)
    except ErasureNotFound:
        if not last_try:
            raise  # its row may not be written yet: the message is queued first (create_erasure)
        log.warning("Erasure %s of %s is not recorded; its message and ids are dropped", message.task_id,
                    message.app_id)
        store.delete_work(message.app_id, message.task_id)
    except Exception:
        if not last_try:
            raise
        log.exception("Erasure %s of %s failed on its message's last try; it goes on in %d s", message.task_id,
                      message.app_id, RETRY_LATER_SECONDS)
        _queue(message.app_id, message.task_id, delay_seconds=RETRY_LATER_SECONDS)


def work(message: EraseMessage, *, now: dt.datetime | None = None) -> None:
    """One slice of a task's work; the task goes on in another message until it ends. A message delivered twice
    (or a slice's message sent again by a try that was thought dead) may run beside another: each blob is
    rewritten once under its lease, and the one that finds the task's row changed under it leaves the task to
    the other."""
    try:
        _work(message, now=now)
    except TaskChanged:
        log.info("Erasure %s of %s is being carried out by another worker", message.task_id, message.app_id)


def _work(message: EraseMessage, *, now: dt.datetime | None = None) -> None:
    if message.files_at is not None:
        remove_table_files(message)
        return
    task, etag = store.read_task(message.app_id, message.task_id)
    if task.ended:
        if not task.event_sent:
            _send_event(task, etag)
        return
    job = store.read_work(task.app_id, task.id)
    if job is None:  # its results are recorded and its ids deleted: only the end is left
        _end(task, etag)
        return
    if task.state == ErasureState.QUEUED:
        task = task.but(state=ErasureState.STARTED, started=now or utcnow())
        etag = store.save_task(task, etag)
    try:
        try:
            finished = _erase_stores(task, job)
        except RewritersLost:  # one died (killed, out of memory, or while idle): once more with new ones
            finished = _erase_stores(task, job)
    except (BrokenMember, CannotFit) as error:
        _fail(task, etag, f"the raw store could not be rewritten: {error}; the service's operators were told")
        log.error("Erasure %s of %s failed: %s", task.id, task.app_id, error)
        return
    if finished is None:
        _queue(task.app_id, task.id, delay_seconds=LOOK_AGAIN_SECONDS)
        return
    if not finished:
        _queue(task.app_id, task.id)
        return
    if _lake_runs_in_flight(task):
        _queue(task.app_id, task.id, delay_seconds=WAIT_FOR_LAKE_RUNS_SECONDS)
        return
    _finish(task, etag, job)


def _erase_stores(task: ErasureTask, job: Work) -> bool | None:
    """Rewrites the blobs the task covers, for a slice of time: True once all are clean, False when the slice
    ended first, None when a blob was busy or a compaction started before the request is still writing (look
    again shortly)."""
    slice_ends = time.monotonic() + ERASE_SLICE_SECONDS
    matcher = job.matcher
    done = {progress.name for progress in store.all_progress(task.app_id, task.id) if progress.done}
    covered, busy = _covered_blobs(task, job)
    todo = [(name, cut) for name, cut in covered if name not in done]
    if not todo:
        return None if busy else True
    ended_early = False
    with _rewriters() as pool:
        running: dict[Future, float] = {}  # each rewrite -> when it was handed to the pool
        for name, cut in todo:
            if time.monotonic() > slice_ends:
                ended_early = True
                break
            # Background work: while this instance stores what devices send, one rewrite at a time, each followed
            # by a pause YIELD_FACTOR times as long as it took.
            while len(running) >= (1 if foreground.busy() else 2 * ERASE_PARALLEL_BLOBS):
                finished = wait(running, return_when=FIRST_COMPLETED).done
                took = max(time.monotonic() - running[future] for future in finished)
                busy = _collect(running, finished) or busy
                _yield_to_foreground(min(YIELD_MAX_SECONDS, YIELD_FACTOR * took))
            running[pool.submit(rewrite.erase_in_blob, task.app_id, task.id, name, cut, matcher)] = time.monotonic()
        busy = _collect(running, wait(running).done) or busy
    if ended_early:
        return False
    return None if busy else True


def _yield_to_foreground(seconds: float) -> None:
    """Waits up to ``seconds`` while Collect is busy in this instance (not at all once it is not)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until and foreground.busy():
        time.sleep(0.05)


def _collect(pending: dict, finished) -> bool:
    """Takes finished rewrites out of ``pending``, raising their errors; whether one found its blob busy (another
    erasure's rewrite, or a lease a killed worker left until it runs out: looked at again later)."""
    busy = False
    for future in finished:
        del pending[future]
        try:
            future.result()
        except BlobBusy:
            busy = True
    return busy


def _start_rewriter(parent_pid: int) -> None:
    """A rewriting process yields the CPU to Collect and exports (an erasure may take longer; nothing waits on it),
    and goes when the host goes."""
    try:
        os.nice(ERASE_NICENESS)
    except OSError:
        pass
    processes.exit_with_parent(parent_pid)


class RewritersLost(TransientError):
    """A rewriting process died: the pool is made again for the next try."""


@contextmanager
def _rewriters() -> Iterator[Executor]:
    """Where blobs are rewritten: processes of their own at a lower priority, so an erasure's decompression and
    compression take no CPU or interpreter lock from Collect in the host; kept for POOL_IDLE_SECONDS after a
    slice, as the next slice or task usually follows (ERASE_IN_PROCESS: threads of this process, for tests that
    change the rewrite's code in this process)."""
    global _pool
    if ERASE_IN_PROCESS:
        with ThreadPoolExecutor(ERASE_PARALLEL_BLOBS) as threads:
            yield threads
        return
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(ERASE_PARALLEL_BLOBS, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_rewriter, initargs=(os.getpid(),))
        pool, _pool_uses[0] = _pool, _pool_uses[0] + 1
    try:
        yield pool
    except BrokenProcessPool:  # a rewriting process died (killed, out of memory): new ones for the next try
        with _pool_lock:
            if _pool is pool:
                _pool = None
        raise RewritersLost("a process rewriting the raw store died; the slice is tried again") from None
    finally:
        _retire_later(pool, _pool_uses[0])


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()
_pool_uses = [0]
POOL_IDLE_SECONDS = 300.0


def _retire_later(pool: ProcessPoolExecutor, use: int) -> None:
    """Shuts the pool's processes down once no slice used it for POOL_IDLE_SECONDS."""
    def retire() -> None:
        global _pool
        with _pool_lock:
            if _pool is not pool or _pool_uses[0] != use:
                return
            _pool = None
        pool.shutdown(wait=False)

    timer = threading.Timer(POOL_IDLE_SECONDS, retire)
    timer.daemon = True
    timer.start()


def _covered_blobs(task: ErasureTask, job: Work) -> tuple[list[tuple[str, int]], bool]:
    """(name, bytes covered) of every blob the task rewrites: the cut, and the files of snapshot state
    generations that a compaction started before the request (built from rows that were not yet left out)
    wrote since the cut; and whether such a compaction may still be writing."""
    covered = dict(job.cut)
    stamp = pending.generation_stamp(task.requested)  # the rule reads follow while the task is pending
    container = storage.container(rawstore.RAW_CONTAINER)
    started_before: dict[str, list[tuple[str, int]]] = {}
    for blob in container.list_blobs(name_starts_with=f"{task.app_id}/{snapshots.STATE_TYPE}/"):
        generation = blob.name.split("/")[-2]
        if generation < stamp and blob.name not in covered:
            started_before.setdefault(generation, []).append((blob.name, blob.size))
    writing = False
    for files in started_before.values():
        published = any(name.endswith("/manifest.json") for name, _ in files)
        # Its files are all written once its manifest is; one without a manifest may be writing still, unless it
        # started so long ago that it died (shared.export.snapshotstate removes those).
        writing = writing or (not published and _started(files[0][0]) > utcnow() - dt.timedelta(minutes=30))
        covered.update((name, size) for name, size in files if _holds_rows(name))
    return sorted(covered.items()), writing


def _started(state_file: str) -> dt.datetime:
    return dt.datetime.strptime(state_file.split("/")[-2].split("-")[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=dt.UTC)


def _kind_of(name: str) -> str:
    """Which count a blob's rows go to."""
    return "snapshotRows" if name.split("/")[1] in (snapshots.LOG_TYPE, snapshots.STATE_TYPE) else "rawRecords"


def _counts(progress: list[BlobProgress]) -> dict[str, int]:
    counts = dict.fromkeys(COUNTS, 0)
    for each in progress:
        counts[_kind_of(each.name)] += each.removed
        counts["rawBlobsRewritten"] += 1 if each.removed else 0
    return counts


def _finish(task: ErasureTask, etag: str, job: Work) -> None:
    """Records what was erased where while the task still holds its ids, deletes them, then ends the task."""
    progress = store.all_progress(task.app_id, task.id)
    counts = _counts(progress)
    lake_tables, lake_problem = _erase_lake_tables(task, job)
    counts["lakeRows"] = sum(table.get("rowsDeleted", 0) for table in lake_tables)
    hits = {each.name: each.hits for each in progress if each.hits}
    recorded = task.but(counts=counts, lake_tables=tuple(lake_tables),
                        delivered_by=delivered.delivered_by(task.app_id, hits, task.requested),
                        id_hashes=audit.hashes(job.device_ids, job.user_ids), error_details=lake_problem,
                        completed=utcnow())
    etag = store.save_task(recorded, etag)
    store.delete_work(task.app_id, task.id)
    _end(recorded, etag)


def _end(task: ErasureTask, etag: str) -> None:
    ended = task.but(state=ErasureState.FAILED if task.error_details else ErasureState.SUCCEEDED,
                     completed=task.completed or utcnow())
    etag = store.save_task(ended, etag)
    store.delete_progress(task.app_id, task.id)
    _schedule_file_removal(ended)
    _send_event(ended, etag)


def _fail(task: ErasureTask, etag: str, details: str) -> None:
    failed = task.but(error_details=details, completed=utcnow())
    etag = store.save_task(failed, etag)
    store.delete_work(task.app_id, task.id)
    _end(failed, etag)


def _send_event(task: ErasureTask, etag: str) -> None:
    forwarding.send_event(completed_event(task))
    try:
        store.save_task(task.but(event_sent=True), etag)
    except TaskChanged:
        pass  # another worker sent it too: consumers drop the copy by its id


def completed_event(task: ErasureTask) -> dict:
    collection, _, name = task.app_id.partition("~")
    result = task.to_result()
    return {"id": f"erasure-{task.id}", "event": "erasure.completed", "at": iso(task.completed),
            "app": {"appCollection": collection, "appName": name}, "erasureTaskId": task.id,
            **{key: result[key] for key in ("state", "dateCreated", "dateCompleted", "erased", "lakeTables",
                                            "deliveredBy", "errorDetails") if key in result}}


def _erase_lake_tables(task: ErasureTask, job: Work) -> tuple[list[dict], str | None]:
    """Deletes the rows from the app's Delta tables: what each table says, and what a person must do about the
    tables that could not be reached (None when every one was)."""
    results: list[dict] = []
    unreachable: list[str] = []
    for table in lake_tables(task.app_id):
        try:
            erased = erase_rows(table, job.device_ids, job.user_ids, remove_files_now=task.remove_table_files_now,
                                erasure_id=task.id)
        except LakeTableUnavailable as error:
            results.append({"url": table.url, "path": table.path, "error": error.reason})
            unreachable.append(str(error))
            continue
        results.append(erased.to_json())
    if not unreachable:
        return results, None
    return results, ("the rows could not be deleted from these Delta tables (the raw store and the other tables are "
                     "erased): " + "; ".join(unreachable) + ". Then send the erasure again.")


def _lake_runs_in_flight(task: ErasureTask) -> bool:
    """Whether a DeltaLake export or pipeline run that started before the request is still running: it read rows
    before they were left out, and may commit them after the tables' rows are deleted, so the tables wait for it."""
    return any(job.date_created < task.requested and not job.finished
               for job in jobs.jobs_in_format(task.app_id, DELTA_LAKE))


# ---- the files of the lake tables, once no retained version needs them


def _schedule_file_removal(task: ErasureTask) -> None:
    """Queues the removal of the files that held erased rows in the tables, when each table's retention has passed
    (removeTableFilesNow removed them already)."""
    due = [parse_iso(table["removeFilesAt"]) for table in task.lake_tables if table.get("removeFilesAt")]
    if due:
        _queue_at(task.app_id, task.id, max(moment for moment in due if moment is not None))


def _queue_at(app_id: str, task_id: str, moment: dt.datetime) -> None:
    """An erasure message for ``moment``, or for as late as a queue message can wait (it waits again then)."""
    delay = max(0, min(MAX_MESSAGE_DELAY_SECONDS, int((moment - utcnow()).total_seconds()) + 1))
    storage.send_message(ERASE_QUEUE, EraseMessage(app_id, task_id, files_at=iso(moment)).to_json(),
                         delay_seconds=delay)


def remove_table_files(message: EraseMessage) -> None:
    """Removes the files of the task's tables that no retained version needs any more; notes it in the task."""
    moment = parse_iso(message.files_at)
    if moment is not None and moment > utcnow():
        _queue_at(message.app_id, message.task_id, moment)
        return
    task, etag = store.read_task(message.app_id, message.task_id)
    tables = {(table.url, table.path): table for table in lake_tables(task.app_id)}
    noted = []
    for entry in task.lake_tables:
        table = tables.get((str(entry.get("url")), str(entry.get("path"))))
        if entry.get("removeFilesAt") and table is not None:
            try:
                removed = remove_expired_files(table)
            except LakeTableUnavailable as error:
                entry = {**entry, "filesRemovedError": error.reason}
            else:
                entry = {**entry, "filesRemoved": entry.get("filesRemoved", 0) + removed, "removeFilesAt": None,
                         "filesRemovedAt": iso(utcnow())}
        noted.append(entry)
    store.save_task(task.but(lake_tables=tuple(noted)), etag)
