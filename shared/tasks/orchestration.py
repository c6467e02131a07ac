"""The durable-style life of an export job: start, fan out, monitor, fan in.

Messages are small JSON documents on the app's own queues; every handler is idempotent, because the host
delivers a message at least once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from shared.export import committer, engine, planning
from shared.platform import storage, telemetry
from shared.platform.config import get_settings
from shared.platform.errors import PermanentJobError, TaskEnded
from shared.tasks import jobs, monitor, parts
from shared.tasks.fairslots import FairSlots

POLL_QUEUE = "export-poll"
# A job still Queued this long after creation lost its start message (or the host crashed): start it again.
RESTART_QUEUED_AFTER = dt.timedelta(minutes=1)
log = logging.getLogger(__name__)


def _hop_fields(doc: dict) -> dict:
    """The optional fields every message of a job carries: the job's trace (W3C traceparent) and when the
    message was due on its queue (epoch seconds). Ill-formed ones are dropped: they are telemetry only."""
    trace, due = doc.get("trace"), doc.get("due")
    return {"trace": trace if isinstance(trace, str) else None,
            "due": float(due) if isinstance(due, (int, float)) and not isinstance(due, bool) else None}


def _with_hop_fields(doc: dict, trace: str | None, due: float | None) -> str:
    if trace is not None:
        doc["trace"] = trace
    if due is not None:
        doc["due"] = round(due, 3)
    return json.dumps(doc)


@dataclass(frozen=True)
class PollMessage:
    app_id: str
    job_id: str
    attempt: int = 0
    trace: str | None = None
    due: float | None = None

    def to_json(self) -> str:
        return _with_hop_fields({"app": self.app_id, "job": self.job_id, "attempt": self.attempt}, self.trace,
                                self.due)

    @classmethod
    def from_json(cls, body: bytes) -> PollMessage:
        try:
            doc = json.loads(body)
            return cls(app_id=str(doc["app"]), job_id=str(doc["job"]), attempt=int(doc.get("attempt", 0)),
                       **_hop_fields(doc))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a poll message: {error!r}") from None


def send_poll(message: PollMessage, *, delay_seconds: int = 0) -> None:
    message = replace(message, due=time.time() + delay_seconds)
    storage.send_message(POLL_QUEUE, message.to_json(), delay_seconds=delay_seconds)


def request_start(job: jobs.ExportJob) -> None:
    """Puts a new job on its way now: its first poll plans it and fans out the work."""
    send_poll(PollMessage(job.app_id, job.id, trace=job.trace_parent))


def restart_stranded_jobs(now: dt.datetime) -> int:
    """Starts again the jobs left Queued (a crash between the job row and its message); returns how many.

    Harmless when run twice at once: a duplicate start message is a no-op for a job already planned.
    """
    restarted = 0
    for app_id, job_id in jobs.queued_jobs(now - RESTART_QUEUED_AFTER):
        job = jobs.find_job(app_id, job_id)
        if job is None or job.state != jobs.QUEUED:
            # An index row whose job never got written, or a job that started: nothing to start.
            if job is None:
                jobs.forget_queued(app_id, job_id)
            else:
                jobs.clear_queued(job)
            continue
        log.warning("Export task %s of app %s was still Queued; starting it again", job_id, app_id)
        request_start(job)
        restarted += 1
    return restarted


WORK_QUEUE = "export-work"
# Must equal host.json extensions.queues.maxDequeueCount: a message's last try is the one that records failure.
MAX_DEQUEUE_COUNT = 5
POLL_DELAYS = (1, 1, 1, 2, 2, 3, 5, 8, 13, 21, 30)


@dataclass(frozen=True)
class WorkMessage:
    """One work item of a job. ``window`` is how many of the job's items are on the queue at once: an item
    that ends sends the item ``window`` places after it (None: every item was sent at the start)."""

    app_id: str
    job_id: str
    index: int
    window: int | None = None
    trace: str | None = None
    due: float | None = None

    def to_json(self) -> str:
        doc = {"app": self.app_id, "job": self.job_id, "item": self.index}
        if self.window is not None:
            doc["window"] = self.window
        return _with_hop_fields(doc, self.trace, self.due)

    @classmethod
    def from_json(cls, body: bytes) -> WorkMessage:
        try:
            doc = json.loads(body)
            window = doc.get("window") if isinstance(doc, dict) else None
            if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
                raise ValueError(f"window {window!r} is not a positive integer")
            return cls(app_id=str(doc["app"]), job_id=str(doc["job"]), index=int(doc["item"]), window=window,
                       **_hop_fields(doc))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a work message: {error!r}") from None


def _send_work(message: WorkMessage) -> None:
    storage.send_message(WORK_QUEUE, replace(message, due=time.time()).to_json())


def _poll_later(message: PollMessage) -> None:
    delay = POLL_DELAYS[min(message.attempt, len(POLL_DELAYS) - 1)]
    send_poll(replace(message, attempt=message.attempt + 1), delay_seconds=delay)


def _finish(job: jobs.ExportJob, state: str, *, error: str | None = None, **fields) -> None:
    """Moves the job to a final state unless another instance already did (ETag)."""
    while not job.finished:
        job.move_to(state, error=error)
        for name, value in fields.items():
            setattr(job, name, value)
        try:
            jobs.save_job(job)
            log.info("Export task %s %s%s", job.id, state, f": {error}" if error else "")
            _report_end(job)
            return
        except jobs.JobChanged:
            job = jobs.get_job(job.app_id, job.id)


def cancel(app_id: str, job_id: str) -> jobs.ExportJob:
    """Ends a Queued or Started job as Failed, saying when it was cancelled; its parts stop at their next
    block and nothing is committed. Raises TaskEnded for a job already finished or already committing."""
    job = jobs.get_job(app_id, job_id)
    while True:
        if job.finished:
            raise TaskEnded(f"export task {job.id} already ended {job.state} at {jobs.iso(job.date_completed)}; only "
                            f"a Queued or Started task can be cancelled", code="ExportTaskFinished")
        if job.committing:
            raise TaskEnded(f"export task {job.id} has finished exporting and is committing its files; it ends in a "
                            f"moment and can no longer be cancelled", code="ExportTaskCommitting")
        now = jobs.utcnow()
        job.move_to(jobs.FAILED, now=now, error=f"cancelled at {jobs.iso(now)} by a request with the app's export "
                                                f"key; nothing was committed")
        try:
            job = jobs.save_job(job)
        except jobs.JobChanged:
            job = jobs.get_job(app_id, job_id)
            continue
        log.info("Export task %s of app %s cancelled", job.id, app_id)
        _report_end(job)
        return job


def _report_end(job: jobs.ExportJob) -> None:
    ended = job.date_completed or jobs.utcnow()
    telemetry.export_ended(app_id=job.app_id, export_type=job.export_type, export_format=job.export_format,
                           state=job.state, seconds=(ended - job.date_created).total_seconds(),
                           records=job.record_count if job.state == jobs.SUCCEEDED else None,
                           size=job.bytes if job.state == jobs.SUCCEEDED else None)


def fail(app_id: str, job_id: str, reason: str) -> None:
    job = jobs.find_job(app_id, job_id)
    if job is not None and not job.finished:
        _finish(job, jobs.FAILED, error=reason)


def _start(job: jobs.ExportJob) -> jobs.ExportJob:
    """Plans the job and fans out its first work items, then marks it Started. Work goes out before the state
    changes: a crash in between leaves a Queued job that is started again, and duplicate work is harmless.

    Only EXPORT_JOB_ITEMS_IN_FLIGHT items go out now; each one that ends sends the next (``_send_next``), so a
    big job never has more than that many items on the shared queue, and another app's items wait behind at
    most those."""
    items = engine.load_or_create_plan(job)
    window = get_settings().job_items_in_flight
    for item in items[:window]:
        _send_work(WorkMessage(job.app_id, job.id, item.index, window, trace=job.trace_parent))
    job.parts_total = len(items)
    job.move_to(jobs.STARTED)
    try:
        return jobs.save_job(job)
    except jobs.JobChanged:
        return jobs.get_job(job.app_id, job.id)


def poll(message: PollMessage) -> None:
    """One look at a job: start it, fail it, finish it, or look again later (the decision: shared.tasks.monitor)."""
    with telemetry.job_scope("export.poll", job_id=message.job_id, app_id=message.app_id, traceparent=message.trace,
                             queue=POLL_QUEUE, due=message.due, attributes={"export.poll_attempt": message.attempt}):
        _poll(message)


def _poll(message: PollMessage) -> None:
    job = jobs.find_job(message.app_id, message.job_id)
    if job is None:
        log.warning("Poll for unknown export task %s of app %s dropped", message.job_id, message.app_id)
        jobs.forget_queued(message.app_id, message.job_id)
        return
    now = jobs.utcnow()
    deadline_hours = get_settings().job_deadline_hours

    def parts_of(job: jobs.ExportJob) -> parts.Summary | None:
        return None if job.state == jobs.QUEUED else parts.summarize(job.id, job.parts_total or 0)

    summary = parts_of(job)
    decision = monitor.decide(job, summary, now, deadline_hours=deadline_hours)
    if decision.action is monitor.Action.START:
        job = _start(job)
        summary = parts_of(job)
        decision = monitor.decide(job, summary, now, deadline_hours=deadline_hours)
    if decision.action is monitor.Action.FAIL:
        _finish(job, jobs.FAILED, error=decision.reason)
    elif summary is not None and decision.action is monitor.Action.WAIT:
        _report_progress(job, len(summary.done))
        _poll_later(message)
    elif summary is not None and decision.action is monitor.Action.COMMIT:
        _commit(job, summary.done)


def _report_progress(job: jobs.ExportJob, parts_ended: int) -> None:
    if job.parts_done != parts_ended:
        job.parts_done = parts_ended
        try:
            jobs.save_job(job)
        except jobs.JobChanged:
            pass  # progress is advisory; the next poll writes it


def _commit(job: jobs.ExportJob, done: Sequence[parts.Part]) -> None:
    # The commit is claimed under the job's ETag before anything is written: a cancel that got in first wins
    # and nothing is committed; once the claim is saved, a cancel is refused (409) and the commit decides.
    while not job.committing:
        job.committing = True
        try:
            job = jobs.save_job(job)
        except jobs.JobChanged:
            job = jobs.get_job(job.app_id, job.id)
            if job.finished:
                return
    try:
        with telemetry.job_scope("export.commit", job_id=job.id, app_id=job.app_id,
                                 attributes={"export.parts": len(done)}):
            files = committer.commit(job, done)
    except PermanentJobError as error:
        _finish(job, jobs.FAILED, error=str(error))
        return
    _finish(job, jobs.SUCCEEDED, parts_done=len(done), record_count=sum(f["records"] for f in files),
            bytes=sum(f["bytes"] for f in files), files=[{k: f[k] for k in ("name", "records", "bytes", "md5")}
                                                         for f in files])


def _still_running(job: jobs.ExportJob) -> bool:
    current = jobs.find_job(job.app_id, job.id)
    return current is not None and not current.finished


def _send_next(message: WorkMessage, items: int) -> None:
    """Sends the item ``window`` places after ``message``'s, unless the job has no such item or its part is
    already recorded. Sent again when an item is delivered again (a crash after its part was recorded), which
    is harmless: items are idempotent."""
    if message.window is None:
        return
    following = message.index + message.window
    if following >= items:
        return
    recorded = parts.find_part(message.job_id, following)
    if recorded is None:
        _send_work(replace(message, index=following))


def run_item(app_id: str, job_id: str, index: int, *, last_try: bool,
             on_done: Callable[[int], None] | None = None) -> bool:
    """The worker's activity: produce one file's blocks (shared.export.engine) and record the part. Idempotent.
    Returns True when this call recorded the job's last outstanding part (so the monitor can finish the job
    now). ``on_done(items in the plan)`` runs once the part is recorded done, also when it already was."""
    job = jobs.find_job(app_id, job_id)
    if job is None or job.finished:
        return False
    existing = parts.find_part(job.id, index)
    if existing is not None and existing.done:
        if on_done is not None:
            on_done(len(planning.read_plan(app_id, job_id)))
        return False
    plan = planning.read_plan(app_id, job_id)
    item = plan[index]
    try:
        result = engine.produce(job, item, engine.stage_to(job, item, lambda: _still_running(job)))
    except PermanentJobError as error:
        parts.record(parts.failed(job.id, index, item.file, str(error)))
        return True  # a failed part decides the job: no need to wait for the others
    except Exception as error:
        if last_try:
            parts.record(parts.failed(job.id, index, item.file, (
                f"part {index} failed on every try ({type(error).__name__}); the export service could not read "
                f"the data or write the file")))
        raise
    parts.record(parts.done(job.id, index, item.file, records=result.records, size=result.bytes, md5=result.md5,
                            blocks=result.blocks))
    telemetry.annotate(records=result.records, bytes=result.bytes)
    log.info("Export %s part %d: %d records, %d bytes", job.id, index, result.records, result.bytes)
    if on_done is not None:
        on_done(len(plan))
    return parts.all_recorded(job.id, len(plan))


_work_slots: FairSlots | None = None
_work_slots_lock = threading.Lock()


def _slots() -> FairSlots:
    global _work_slots
    with _work_slots_lock:
        if _work_slots is None:
            # One slot beyond the concurrency is kept for apps that hold none: a small export starts at once
            # beside a big one that holds every other slot.
            _work_slots = FairSlots(get_settings().worker_concurrency, reserved_for_newcomers=1)
        return _work_slots


def work(message: WorkMessage, *, last_try: bool) -> None:
    """Runs one work item; when it was the last one, wakes the monitor at once instead of at its next poll.

    At most EXPORT_WORKER_CONCURRENCY items run at once in a process, whatever the host's queue batch size,
    so memory stays flat however many parts an export has; the others wait with their message leased, and a
    freed slot goes to the app that holds the fewest (shared.tasks.fairslots)."""
    with telemetry.job_scope("export.part", job_id=message.job_id, app_id=message.app_id, part=message.index,
                             traceparent=message.trace, queue=WORK_QUEUE, due=message.due):
        try:
            with _slots().slot(message.app_id):
                last = run_item(message.app_id, message.job_id, message.index, last_try=last_try,
                                on_done=lambda items: _send_next(message, items))
        except Exception:
            if last_try:
                # the part was recorded as failed
                send_poll(PollMessage(message.app_id, message.job_id, trace=message.trace))
            raise
        if last:
            send_poll(PollMessage(message.app_id, message.job_id, trace=message.trace))
