"""The pipelines' timer step (RunPipelines): for every pipeline, what shared.pipelines.decide says, done under the
pipeline's ETag, then its alerts.

Every change is one conditional write of the pipeline's document: two instances that act at once on a pipeline
cannot both succeed, and the loser reads it again on the next tick. A crash between steps leaves a state the next
tick goes on from: a run planned but not submitted is submitted (its task id and plan were saved with it), a run
that ended is recorded, alert events saved with a change are sent (an outbox)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import replace

from shared.export import destination, forwarding, planning
from shared.export.export_request import ExportRequest
from shared.export.registry import HISTORICAL, ROUTES
from shared.export.spec import FLAT
from shared.ingest import latearrivals
from shared.pipelines import planner, runs, store
from shared.pipelines.decide import Step, next_step, retry_delay
from shared.pipelines.model import InFlight, Pipeline
from shared.pipelines.periods import period_of
from shared.pipelines.store import PipelineChanged
from shared.platform import apps, retention
from shared.platform.config import DESTINATION_STORAGE, ConfigError, get_settings
from shared.platform.errors import UnusableDestination
from shared.platform.times import iso
from shared.tasks import jobs, schedules, service

log = logging.getLogger(__name__)
# Steps one pipeline takes in one tick at most (a run ended, the next planned and submitted).
MAX_STEPS = 6
# Due periods one first run delivers at most: a backfill of a year of days takes 16 runs, not 366.
MAX_PERIODS_PER_RUN = 24


def tick(now: dt.datetime | None = None, *, app_id: str | None = None) -> dict[str, int]:
    """Advances every pipeline (of one app, given ``app_id``); returns how many pipelines took each step."""
    now = now or jobs.utcnow()
    try:
        declared = sync_operator_pipelines(now)
    except ConfigError as error:
        # A broken EXPORT_SCHEDULES stops the operator's pipelines, never the apps' own.
        log.error("EXPORT_SCHEDULES cannot be used: %s; the operator's pipelines wait until it is fixed", error)
        declared = set()
    counts: dict[str, int] = {}
    for pipeline in store.list_pipelines(app_id):
        if pipeline.operator_container is not None and (pipeline.app_id, pipeline.name) not in declared:
            continue  # its schedule was removed from EXPORT_SCHEDULES
        try:
            for step in advance(pipeline, now):
                counts[step] = counts.get(step, 0) + 1
        except PipelineChanged:
            continue  # another instance acted on it: the next tick reads it again
        except Exception:
            # One pipeline that cannot go on (its storage call failed, a setting it needs is missing) must not
            # stop the others: it is tried again on the next tick.
            log.exception("Pipeline %s of app %s could not take its next step", pipeline.name, pipeline.app_id)
            counts["failed"] = counts.get("failed", 0) + 1
    return counts


def advance(pipeline: Pipeline, now: dt.datetime) -> list[str]:
    """Takes the pipeline's steps that are due; returns their names."""
    taken: list[str] = []
    for _ in range(MAX_STEPS):
        step = next_step(pipeline, now, task_state(pipeline))
        if step in (Step.IDLE, Step.WAIT):
            break
        pipeline = _STEPS[step](pipeline, now)
        taken.append(step.value)
    _raise_alerts(pipeline, now)
    return taken


def task_state(pipeline: Pipeline) -> str | None:
    """The state of the run in flight's task (None: no run, or its task is not made yet)."""
    run = pipeline.in_flight
    if run is None:
        return None
    job = jobs.find_job(pipeline.app_id, run.job_id)
    if job is None:
        # Never submitted: a destination refused at submission counts as the attempt's failure.
        failed = pipeline.failure is not None and pipeline.failure.get("task") == run.job_id
        return "Failed" if failed else None
    return job.state.value


def _save(pipeline: Pipeline, now: dt.datetime) -> Pipeline:
    pipeline.updated = now
    return store.save_pipeline(pipeline)


# ---- planning a run


def _plan_first(pipeline: Pipeline, now: dt.datetime) -> Pipeline:
    """The first run of the due periods, oldest first: a pipeline catching up (a backfill, a resume) delivers
    up to MAX_PERIODS_PER_RUN of them in one run; a snapshot pipeline one. Periods older than the app keeps raw
    records (a pipeline paused or failing that long) are skipped: their records are gone, the next run starts at
    the oldest day kept."""
    if pipeline.historical:
        oldest = retention.oldest_day_kept(pipeline.app_id, now.date())
        if pipeline.next.day < oldest:
            skipping = pipeline.copy()
            skipping.next_period = dt.datetime.combine(oldest, dt.time(), dt.UTC)
            log.warning("Pipeline %s of app %s skips the periods from %s to %s: older than the app keeps raw records",
                        pipeline.name, pipeline.app_id, pipeline.next.label, oldest - dt.timedelta(days=1))
            return _save(skipping, now)
    periods = [pipeline.next]
    while (pipeline.historical and len(periods) < MAX_PERIODS_PER_RUN
           and periods[-1].next().due(pipeline.settle) <= now):
        periods.append(periods[-1].next())
    plan = planner.first_run(pipeline, periods, pipeline.sequence + 1)
    changed = pipeline.copy()
    changed.next_period = periods[-1].end
    return _commit_plan(changed, plan, now)


def _look_late(pipeline: Pipeline, now: dt.datetime) -> Pipeline:
    noted = latearrivals.noted_since(pipeline.app_id, pipeline.late_looked_at or pipeline.created, now=now)
    touched = planner.touched_periods(pipeline, noted)
    plan = planner.late_run(pipeline, touched, pipeline.sequence + 1) if touched else None
    changed = pipeline.copy()
    changed.late_looked_at = now
    if plan is None:
        return _save(changed, now)
    return _commit_plan(changed, plan, now)


def _commit_plan(pipeline: Pipeline, plan: planner.RunPlan, now: dt.datetime) -> Pipeline:
    """Saves what the run reads (its marks, its plan) and then the pipeline naming them; submits the run."""
    sequence = pipeline.sequence + 1
    key = f"{sequence:06d}-{uuid.uuid4().hex[:8]}"
    for label, marks in plan.marks.items():
        store.write_marks(pipeline, label, key, marks)
    job_id = jobs.new_job_id(jobs.utcnow())  # a task id tells when the task was made
    planning.save_plan(pipeline.app_id, job_id, plan.items)
    superseded = [(label, pipeline.periods[label]) for label in plan.marks if label in pipeline.periods]
    pipeline.sequence = sequence
    pipeline.periods.update({label: key for label in plan.marks})
    pipeline.in_flight = InFlight(sequence, job_id, 1, tuple(p.label for p in plan.periods), plan.late, now,
                                  plan.raw_bytes, plan.newest_acknowledged, plan.replaces)
    pipeline = _save(pipeline, now)
    store.delete_marks_of(pipeline, superseded)  # what the earlier runs had read: the new marks hold it too
    log.info("Pipeline %s of app %s: run %s planned (%s delivery of %s)", pipeline.name, pipeline.app_id,
             pipeline.run_name(sequence), "late" if plan.late else "first", ", ".join(p.label for p in plan.periods))
    return _submit(pipeline, now)


# ---- the run in flight


def _record(pipeline: Pipeline, run: InFlight) -> runs.RunRecord:
    record = runs.get_run(pipeline.uid, run.sequence) or runs.RunRecord(
        uid=pipeline.uid, sequence=run.sequence, run=pipeline.run_name(run.sequence), periods=run.periods,
        late=run.late, planned=run.planned, raw_bytes=run.raw_bytes, newest_acknowledged=run.newest_acknowledged,
        replaces=run.replaces)
    if run.job_id not in record.tasks:
        record.tasks.append(run.job_id)
        record.state, record.error, record.completed = "Queued", None, None
    return record


def container_url(pipeline: Pipeline) -> str:
    """The destination's URL with its SAS: the pipeline's own, or one made for an operator's container."""
    if pipeline.destination is not None:
        target = pipeline.destination.open()
        return f"{target.url}?{target.sas}"
    connection = get_settings().destination_connection
    if not connection:
        raise ConfigError(f"{DESTINATION_STORAGE} is not set: pipelines of EXPORT_SCHEDULES need the destination "
                          f"storage")
    return destination.container_sas_url(connection, pipeline.operator_container or "", permission="cw",
                                         valid_for=dt.timedelta(hours=get_settings().job_deadline_hours + 1))


def _submit(pipeline: Pipeline, now: dt.datetime) -> Pipeline:
    """Creates the run in flight's export task (nothing when it exists) and its history row."""
    run = pipeline.in_flight
    assert run is not None
    runs.save_run(_record(pipeline, run))
    periods = [pipeline.period(label) for label in run.periods]
    request = ExportRequest(ROUTES[pipeline.route], "", pipeline.scope(periods),
                            f"pipeline {pipeline.name}: {'late' if run.late else 'first'} delivery of "
                            f"{', '.join(run.periods)}")
    try:
        request = replace(request, container_url=container_url(pipeline))
        service.submit_export(apps.AppRef(*pipeline.app_id.split("~", 1)), request, job_id=run.job_id,
                              run=pipeline.run_tag(run.sequence, run.periods, run.late, run.replaces))
    except jobs.JobChanged:
        pass  # submitted before a crash, or by another instance
    except UnusableDestination as error:
        return _failed(pipeline, now, reason=error.message)
    return pipeline


def _finish(pipeline: Pipeline, now: dt.datetime) -> Pipeline:
    run = pipeline.in_flight
    assert run is not None
    record = _record(pipeline, run)
    job = jobs.get_job(pipeline.app_id, run.job_id)
    runs.take_task_state(record, job)
    runs.save_run(record)
    changed = pipeline.copy()
    changed.in_flight, changed.failure = None, None
    if not run.late:
        changed.last_delivered = {"period": run.periods[-1], "run": pipeline.run_name(run.sequence),
                                  "at": iso(job.date_completed)}
    return _save(changed, now)


def _failed(pipeline: Pipeline, now: dt.datetime, *, reason: str | None = None) -> Pipeline:
    run = pipeline.in_flight
    assert run is not None
    job = jobs.find_job(pipeline.app_id, run.job_id)
    reason = reason or (job.error_details if job is not None else None) or "the run failed"
    record = _record(pipeline, run)
    record.state, record.error, record.completed = "Failed", reason, now
    runs.save_run(record)
    changed = pipeline.copy()
    changed.failure = {"task": run.job_id, "reason": reason, "since": iso(now),
                       "retryAt": iso(now + retry_delay(run.attempt))}
    log.warning("Pipeline %s of app %s: run %s failed (%s); tried again at %s", pipeline.name, pipeline.app_id,
                pipeline.run_name(run.sequence), reason, changed.failure["retryAt"])
    return _save(changed, now)


def _retry(pipeline: Pipeline, now: dt.datetime) -> Pipeline:
    """A new attempt of the failed run: a new task with the same plan (the same bytes, the same file names)."""
    run = pipeline.in_flight
    assert run is not None
    job_id = jobs.new_job_id(jobs.utcnow())  # a task id tells when the task was made
    planning.save_plan(pipeline.app_id, job_id, planning.read_plan(pipeline.app_id, run.job_id))
    changed = pipeline.copy()
    changed.in_flight = replace(run, job_id=job_id, attempt=run.attempt + 1)
    return _submit(_save(changed, now), now)


def retry_now(pipeline: Pipeline) -> None:
    """Makes a failed run's retry due at once (its destination was just changed)."""
    if pipeline.failure is not None:
        pipeline.failure = dict(pipeline.failure, retryAt=iso(jobs.utcnow()))


_STEPS = {Step.START: _submit, Step.FINISH: _finish, Step.FAILED: _failed, Step.RETRY: _retry,
          Step.LOOK_LATE: _look_late, Step.FIRST_RUN: _plan_first}


# ---- alerts


def _raise_alerts(pipeline: Pipeline, now: dt.datetime) -> None:
    """Saves an event for each alert that started or ended (with the change, in the pipeline's outbox), then
    sends the outbox."""
    holding = pipeline.current_alerts(now)
    if holding.keys() != pipeline.alerts.keys():
        changed = pipeline.copy()
        collection, _, name = pipeline.app_id.partition("~")
        base = {"app": {"appCollection": collection, "appName": name}, "pipeline": pipeline.name, "at": iso(now)}
        period = pipeline.oldest_undelivered().label
        if pipeline.in_flight is not None:
            period = pipeline.in_flight.periods[0]
        for kind in sorted(holding.keys() - pipeline.alerts.keys()):
            changed.outbox.append({**base, "id": str(uuid.uuid4()), "event": "pipeline.alert", "alert": kind,
                                   "status": "raised", "period": period, "reason": holding[kind]})
        for kind in sorted(pipeline.alerts.keys() - holding.keys()):
            changed.outbox.append({**base, "id": str(uuid.uuid4()), "event": "pipeline.alert", "alert": kind,
                                   "status": "resolved", "period": period,
                                   "reason": f"resolved: {pipeline.alerts[kind]}"})
        changed.alerts = holding
        pipeline = _save(changed, now)
    if pipeline.outbox:
        for event in pipeline.outbox:
            forwarding.send_event(event)
        sent = pipeline.copy()
        sent.outbox = []
        _save(sent, now)


# ---- EXPORT_SCHEDULES: the operator's pipelines


_reported: set[str] = set()


def sync_operator_pipelines(now: dt.datetime) -> set[tuple[str, str]]:
    """Makes a pipeline of each schedule of EXPORT_SCHEDULES that has none, keeps its delays and container as the
    setting says; returns (app id, name) of every schedule."""
    declared: set[tuple[str, str]] = set()
    catchup = get_settings().schedule_max_catchup
    for schedule in schedules.load_schedules():
        declared.add((schedule.app.id, schedule.name))
        if not apps.is_registered(schedule.app):
            _report_once(schedule.name, "Schedule %s names app %s/%s, which is not registered: it creates no exports "
                         "until the app is registered (make app COLLECTION=%s APP=%s)", schedule.name,
                         schedule.app.collection, schedule.app.name, schedule.app.collection, schedule.app.name)
            continue
        existing = store.get_pipeline(schedule.app.id, schedule.name)
        if existing is None:
            current = period_of(now - schedule.settle, schedule.cadence)
            first = current.start - schedule.step * catchup
            pipeline = Pipeline(
                app_id=schedule.app.id, name=schedule.name, uid=uuid.uuid4().hex, route=schedule.route,
                shape={"export_format": schedule.export_format, "layout": FLAT if ROUTES[schedule.route].kind ==
                       HISTORICAL else None, "export_user_id": None, "projection": None, "name_filter": None},
                cadence=schedule.cadence, settle_minutes=int(schedule.settle.total_seconds() // 60),
                late_delivery_minutes=int(schedule.step.total_seconds() // 60), first_period=first, created=now,
                updated=now, operator_container=schedule.container, description=f"EXPORT_SCHEDULES: {schedule.name}")
            try:
                store.create_pipeline(pipeline)
                log.info("Schedule %s: pipeline made for app %s, from %s", schedule.name, schedule.app.id, first)
            except PipelineChanged:
                pass  # another instance made it first
        elif existing.operator_container is None:
            _report_once(schedule.name, "Schedule %s of app %s has the name of a pipeline the app made through the "
                         "API: the schedule is ignored; rename it", schedule.name, schedule.app.id)
        elif (existing.settle_minutes, existing.operator_container) != (
                int(schedule.settle.total_seconds() // 60), schedule.container):
            changed = existing.copy()
            changed.settle_minutes = int(schedule.settle.total_seconds() // 60)
            changed.operator_container = schedule.container
            try:
                _save(changed, now)
            except PipelineChanged:
                pass
    return declared


def _report_once(key: str, message: str, *args: object) -> None:
    if key not in _reported:
        _reported.add(key)
        log.error(message, *args)
