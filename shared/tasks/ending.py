"""How a job ends: as Succeeded or Failed once (under its ETag, whatever another instance does), by a cancel, and
with its end reported to telemetry."""

from __future__ import annotations

import logging

from shared.platform import telemetry
from shared.platform.errors import TaskEnded
from shared.tasks import jobs

log = logging.getLogger(__name__)


def finish(job: jobs.ExportJob, state: jobs.JobState, *, error: str | None = None, **fields) -> None:
    """Moves the job to a final state unless another instance already did (ETag)."""
    while not job.finished:
        job.move_to(state, error=error)
        for name, value in fields.items():
            setattr(job, name, value)
        try:
            jobs.save_job(job)
            log.info("Export task %s %s%s", job.id, state, f": {error}" if error else "")
            report_end(job)
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
        report_end(job)
        return job


def report_end(job: jobs.ExportJob) -> None:
    ended = job.date_completed or jobs.utcnow()
    telemetry.export_ended(app_id=job.app_id, export_type=job.export_type, export_format=job.export_format,
                           state=job.state.value, seconds=(ended - job.date_created).total_seconds(),
                           records=job.record_count if job.state == jobs.SUCCEEDED else None,
                           size=job.bytes if job.state == jobs.SUCCEEDED else None)


def fail(app_id: str, job_id: str, reason: str) -> None:
    job = jobs.find_job(app_id, job_id)
    if job is not None and not job.finished:
        finish(job, jobs.FAILED, error=reason)
