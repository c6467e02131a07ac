"""What the API does with an app's pipelines: create or replace, get, list, pause, resume, delete, and the runs.

For an app already authenticated (the HTTP edge, shared.api.pipeline_api, checks keys and the api-version). Every
change is conditional on the pipeline's ETag and tried again on a conflict with the timer (shared.pipelines.driver)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from shared.export import destination, registry
from shared.pipelines import driver, runs, store
from shared.pipelines.model import Pipeline
from shared.pipelines.periods import period_of
from shared.pipelines.request import FIXED_FIELDS, check_name, parse_pipeline
from shared.pipelines.store import PipelineChanged
from shared.platform import apps, retention
from shared.platform.config import get_settings
from shared.platform.errors import PipelineConflict, PipelineNotFound, TaskEnded, TaskNotFound
from shared.tasks import jobs, orchestration
from shared.tasks.jobs import utcnow

log = logging.getLogger(__name__)
MAX_PIPELINES_PER_APP = 100
_TRIES = 5


def get_pipeline(app: apps.AppRef, name: str) -> Pipeline:
    pipeline = store.get_pipeline(app.id, check_name(name))
    if pipeline is None:
        raise PipelineNotFound(f"app {app.collection}/{app.name} has no pipeline named {name!r}")
    return pipeline


def list_pipelines(app: apps.AppRef) -> list[Pipeline]:
    return list(store.list_pipelines(app.id))


def put_pipeline(app: apps.AppRef, name: str, body: Any, *, now: dt.datetime | None = None) -> tuple[Pipeline, bool]:
    """Creates the pipeline, or replaces the one of that name (its destination, delays and description; what
    its files already delivered depend on cannot change). Returns it and whether it was created. Raises
    InvalidInput for a bad body, UnusableDestination for a container URL that cannot be written."""
    check_name(name)
    now = now or utcnow()
    request = parse_pipeline(body, max_backfill_days=get_settings().max_range_days, today=now.date())
    target = destination.parse_destination(
        request.container_url, now=now, reads=registry.export_format(request.shape["export_format"]).table)
    if get_settings().probe_destination:
        destination.probe(target, f"{name}/.write-check")
    sealed = target.seal()
    for _ in range(_TRIES):
        existing = store.get_pipeline(app.id, name)
        if existing is None:
            if request.start_from is not None:  # a replacing PUT repeats the startFrom it cannot change
                retention.refuse_before(app.id, "startFrom", request.start_from, now.date())
            if store.count_pipelines(app.id) >= MAX_PIPELINES_PER_APP:
                raise PipelineConflict(f"app {app.collection}/{app.name} has {MAX_PIPELINES_PER_APP} pipelines, the "
                                       f"most an app may have; delete one first", code="TooManyPipelines")
            first = (dt.datetime.combine(request.start_from, dt.time(), dt.UTC) if request.start_from
                     else period_of(now, request.cadence).start)
            pipeline = Pipeline(
                app_id=app.id, name=name, uid=uuid.uuid4().hex, route=request.route, shape=request.shape,
                cadence=request.cadence, settle_minutes=request.settle_minutes,
                late_delivery_minutes=request.late_delivery_minutes, first_period=first, created=now, updated=now,
                destination=sealed, start_from=request.start_from, description=request.description)
            try:
                created = store.create_pipeline(pipeline)
            except PipelineChanged:
                continue
            log.info("Pipeline %s of app %s created (%s, %s, %s)", name, app.id, request.route,
                     request.shape["export_format"], request.cadence)
            return created, True
        _refuse_operator(existing, "replaced")
        for field, names in FIXED_FIELDS.items():
            if _comparable(getattr(existing, field)) != _comparable(getattr(request, field)):
                raise PipelineConflict(f"the {names} of pipeline {name} cannot change: its delivered files depend on "
                                       f"it; delete the pipeline and create it again, or use another name")
        changed = existing.copy()
        changed.settle_minutes, changed.late_delivery_minutes = request.settle_minutes, request.late_delivery_minutes
        changed.description, changed.updated = request.description, now
        if changed.destination != sealed:
            changed.destination = sealed
            driver.retry_now(changed)  # a run that failed on the old destination goes again at once
        try:
            return store.save_pipeline(changed), False
        except PipelineChanged:
            continue
    raise PipelineConflict(f"pipeline {name} kept changing while this request ran; send it again", code="Conflict")


def _comparable(value: Any) -> Any:
    """A value as its JSON form (a stored pipeline's arrays are lists, a request's tuples)."""
    return json.loads(json.dumps(value, default=str))


def _refuse_operator(pipeline: Pipeline, what: str) -> None:
    if pipeline.operator_container is not None:
        raise PipelineConflict(f"pipeline {pipeline.name} is declared by the operator in EXPORT_SCHEDULES and "
                               f"cannot be {what} through the API", code="PipelineManagedByOperator")


def _change(app: apps.AppRef, name: str, what: str, change: Callable[[Pipeline], None]) -> Pipeline:
    for _ in range(_TRIES):
        pipeline = get_pipeline(app, name)
        _refuse_operator(pipeline, what)
        changed = pipeline.copy()
        change(changed)
        changed.updated = utcnow()
        try:
            return store.save_pipeline(changed)
        except PipelineChanged:
            continue
    raise PipelineConflict(f"pipeline {name} kept changing while this request ran; send it again", code="Conflict")


def pause(app: apps.AppRef, name: str) -> Pipeline:
    """No new run starts; the run in flight finishes (a failed one is not tried again until resumed)."""
    return _change(app, name, "paused", lambda pipeline: setattr(pipeline, "paused", True))


def resume(app: apps.AppRef, name: str) -> Pipeline:
    """Runs start again: the periods that came due while paused first, oldest first, and the late records."""
    def go_on(pipeline: Pipeline) -> None:
        if pipeline.paused:
            pipeline.paused, pipeline.resumed = False, utcnow()
        driver.retry_now(pipeline)
    return _change(app, name, "resumed", go_on)


def delete(app: apps.AppRef, name: str) -> tuple[Pipeline, str | None]:
    """Deletes the pipeline; its run in flight is cancelled (its task ends Failed, nothing of it is committed)
    unless it is already committing its files, which then land. Returns the pipeline and the cancelled task's id.
    Files already delivered stay in the container."""
    for _ in range(_TRIES):
        pipeline = get_pipeline(app, name)
        _refuse_operator(pipeline, "deleted")
        try:
            store.delete_pipeline(pipeline)
        except PipelineChanged:
            continue
        cancelled = None
        if pipeline.in_flight is not None:
            try:
                orchestration.cancel(app.id, pipeline.in_flight.job_id)
                cancelled = pipeline.in_flight.job_id
            except (TaskEnded, TaskNotFound):
                pass  # ended, committing, or never submitted
        store.delete_marks(pipeline)
        runs.delete_runs(pipeline.uid)
        log.info("Pipeline %s of app %s deleted%s", name, app.id, f"; run task {cancelled} cancelled" if cancelled
                 else "")
        return pipeline, cancelled
    raise PipelineConflict(f"pipeline {name} kept changing while this request ran; send it again", code="Conflict")


def list_runs(app: apps.AppRef, name: str, *, top: int,
              after: int | None = None) -> tuple[list[runs.RunRecord], int | None]:
    """A page of the pipeline's runs; a run not recorded as ended yet shows its task as it is now (the timer
    records it on its next step)."""
    pipeline = get_pipeline(app, name)
    page, next_after = runs.list_runs(pipeline.uid, top=top, after=after)
    for record in page:
        if record.state not in ("Succeeded", "Failed") and record.tasks:
            job = jobs.find_job(app.id, record.tasks[-1])
            if job is not None:
                runs.take_task_state(record, job)
    return page, next_after
