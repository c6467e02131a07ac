"""A work item (ExportWorker's work): one result file of a job, produced by the engine and recorded as a part; at
most EXPORT_WORKER_CONCURRENCY at once in a process, shared fairly between apps; the last one wakes the monitor."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from shared.export import engine, planning
from shared.platform import telemetry
from shared.platform.config import get_settings
from shared.platform.errors import PermanentJobError
from shared.tasks import jobs, parts
from shared.tasks.fairslots import FairSlots
from shared.tasks.messages import WORK_QUEUE, PollMessage, WorkMessage, send_poll, send_work

log = logging.getLogger(__name__)


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
        send_work(replace(message, index=following))


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
        result = engine.produce(job.spec, item, engine.stage_to(job.spec, item, lambda: _still_running(job)))
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
                            blocks=result.blocks, stats=result.stats))
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
