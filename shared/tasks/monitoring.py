"""The monitor of a job (PollExport's work): it starts the job (plan, first work items), looks again later with a
growing delay while parts run, fails it, or commits its files and finishes it; the decision itself is
shared.tasks.monitor's. Also the safety net that starts jobs left Queued, and the policy of a poll's last try."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import replace

from shared.export import committer, engine
from shared.platform import telemetry
from shared.platform.config import get_settings
from shared.platform.errors import PermanentJobError
from shared.tasks import jobs, monitor, parts
from shared.tasks.ending import fail, finish
from shared.tasks.messages import MAX_DEQUEUE_COUNT, POLL_QUEUE, PollMessage, WorkMessage, send_poll, send_work

# A job still Queued this long after creation lost its start message (or the host crashed): start it again.
RESTART_QUEUED_AFTER = dt.timedelta(minutes=1)
POLL_DELAYS = (1, 1, 1, 2, 2, 3, 5, 8, 13, 21, 30)
log = logging.getLogger(__name__)


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


def _poll_later(message: PollMessage) -> None:
    delay = POLL_DELAYS[min(message.attempt, len(POLL_DELAYS) - 1)]
    send_poll(replace(message, attempt=message.attempt + 1), delay_seconds=delay)


def _start(job: jobs.ExportJob) -> jobs.ExportJob:
    """Plans the job and fans out its first work items, then marks it Started. Work goes out before the state
    changes: a crash in between leaves a Queued job that is started again, and duplicate work is harmless.

    Only EXPORT_JOB_ITEMS_IN_FLIGHT items go out now; each one that ends sends the next (``_send_next``), so a
    big job never has more than that many items on the shared queue, and another app's items wait behind at
    most those."""
    items = engine.load_or_create_plan(job.spec)
    window = get_settings().job_items_in_flight
    for item in items[:window]:
        send_work(WorkMessage(job.app_id, job.id, item.index, window, trace=job.trace_parent))
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
        finish(job, jobs.FAILED, error=decision.reason)
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
            files = committer.commit(job.spec, done)
    except PermanentJobError as error:
        finish(job, jobs.FAILED, error=str(error))
        return
    finish(job, jobs.SUCCEEDED, parts_done=len(done), record_count=sum(f["records"] for f in files),
            bytes=sum(f["bytes"] for f in files), files=[{k: f[k] for k in ("name", "records", "bytes", "md5")}
                                                         for f in files])


def poll_delivery(message: PollMessage, *, dequeue_count: int) -> None:
    """PollExport's delivery of ``message``: a poll that failed on its last try (the host would move it to the
    poison queue) fails the job first, so no job is left Started with nothing watching it."""
    try:
        poll(message)
    except Exception as error:
        if dequeue_count >= MAX_DEQUEUE_COUNT:
            fail(message.app_id, message.job_id, f"the export could not be monitored ({type(error).__name__}); create "
                                                  f"it again")
        raise
