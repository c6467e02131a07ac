"""The export service: what the HTTP edge, schedules and tools do with an app's export tasks.

Submit, get, list and cancel, for an app already authenticated: keys and api-version belong to the HTTP edge
(shared.api.http), the request's fields to shared.export.export_request, the job's life to shared.tasks.orchestration.
"""

from __future__ import annotations

import logging

from shared.export import destination, registry
from shared.export.export_request import ExportRequest
from shared.export.spec import RunTag
from shared.platform import apps, telemetry
from shared.platform.config import get_settings
from shared.tasks import joblist, jobs, orchestration

log = logging.getLogger(__name__)


def submit_export(app: apps.AppRef, request: ExportRequest, *, schedule: str | None = None,
                  job_id: str | None = None, run: RunTag | None = None) -> jobs.ExportJob:
    """Checks the destination (live, unless disabled), stores the job Queued and puts it on its way; the job's
    trace starts here. Raises UnusableDestination for a destination that cannot be used, JobChanged when ``job_id``
    exists already. A pipeline's run (``run``) is checked when the pipeline is, not again for each run."""
    target = destination.parse_destination(
        request.container_url, reads=registry.export_format(request.scope.export_format).table)
    sealed = target.seal()
    now = jobs.utcnow()
    job_id = job_id or jobs.new_job_id(now)
    with telemetry.job_scope("export.create", job_id=job_id, app_id=app.id,
                             attributes={"export.type": request.route.export_type,
                                         "export.format": request.scope.export_format}):
        job = jobs.ExportJob(
            app_id=app.id, id=job_id, route=request.route.route, scope=request.scope, container_url=sealed.url,
            sealed_sas=sealed.sealed_sas, sas_expires=sealed.expires, date_created=now,
            description=request.description, schedule=schedule, run=run,
            trace_parent=telemetry.current_traceparent())
        if get_settings().probe_destination and run is None:
            destination.probe(target, f"{job.export_type}/{job.id}/.write-check")
        jobs.create_job(job)
        orchestration.request_start(job)
        log.info("Export task %s created for app %s (%s, %s)", job.id, app.id, job.export_type, job.export_format)
        return job


def get_export(app: apps.AppRef, job_id: str) -> jobs.ExportJob:
    """Raises TaskNotFound when the app has no such task."""
    return jobs.get_job(app.id, job_id)


def list_exports(app: apps.AppRef, query: joblist.JobQuery, *, top: int, skip: int = 0,
                 after: str | None = None) -> joblist.Page:
    return joblist.list_jobs(app.id, query=query, top=top, skip=skip, after=after)


def cancel_export(app: apps.AppRef, job_id: str) -> jobs.ExportJob:
    """Raises TaskNotFound for an unknown task, TaskEnded for one that ended or is committing."""
    return orchestration.cancel(app.id, job_id)
