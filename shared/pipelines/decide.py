"""What a pipeline does next, and which of its alerts hold: pure decisions on its state, the time and the state of
its run in flight's task (shared.pipelines.driver reads those and acts).

One run at a time: a pipeline plans its next run only once the one in flight succeeded, so what each run read
follows from the one before. Late runs come before first runs, so late records wait at most
``lateDeliveryMinutes`` even while a backfill goes on."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from shared.pipelines.model import Pipeline
from shared.platform.times import parse_iso


class Step(StrEnum):
    IDLE = "idle"  # nothing to do now
    WAIT = "wait"  # the run in flight is under way
    START = "start"  # the run in flight has no task yet (a crash between planning and submitting): submit it
    FINISH = "finish"  # the run in flight succeeded: record it, free the pipeline
    FAILED = "failed"  # the run in flight's task failed for good: record it, retry it later
    RETRY = "retry"  # the failed run's retry is due: a new attempt, same plan
    LOOK_LATE = "lookLate"  # look for late records of delivered periods
    FIRST_RUN = "firstRun"  # deliver the next period


# A failed run is tried again after 1, 2, 4 ... minutes, then every hour; a PUT that changes the destination
# tries it at once.
RETRY_BASE_SECONDS = 60
# The RunPipelines timer's period: a look for late records is due this much before lateDeliveryMinutes have
# passed since the last one, so that a late record waits at most lateDeliveryMinutes for the look that finds it.
TIMER_PERIOD = dt.timedelta(seconds=15)
RETRY_MAX_SECONDS = 3600


def retry_delay(attempt: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1)))


def next_step(pipeline: Pipeline, now: dt.datetime, task_state: str | None) -> Step:
    """``task_state``: the state of the run in flight's task (None when it has no task or none is in flight)."""
    run = pipeline.in_flight
    if run is not None:
        if task_state is None:
            return Step.START
        if task_state == "Succeeded":
            return Step.FINISH
        if task_state == "Failed":
            if pipeline.failure is None or pipeline.failure.get("task") != run.job_id:
                return Step.FAILED
            if pipeline.paused:
                return Step.WAIT
            retry_at = parse_iso(pipeline.failure["retryAt"])
            return Step.RETRY if retry_at is not None and now >= retry_at else Step.WAIT
        return Step.WAIT
    if pipeline.paused:
        return Step.IDLE
    if pipeline.historical and pipeline.periods and (
            pipeline.late_looked_at is None or now >= pipeline.late_looked_at + pipeline.late_delivery - TIMER_PERIOD):
        return Step.LOOK_LATE
    if now >= pipeline.next.due(pipeline.settle):
        return Step.FIRST_RUN
    return Step.IDLE
