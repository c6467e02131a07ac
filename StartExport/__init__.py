"""Timer: starts again jobs left Queued (a crash between the job row and its start message must not strand a
job). Jobs created through the API start at once and do not wait for it. Harmless when two instances fire at
once: a duplicate start is a no-op. Once an hour it also removes expired Idempotency-Key claims, and every ten
minutes it compacts the snapshot logs that grew (shared.export.snapshotstate). Pipelines, the scheduled exports
included, have their own timer (RunPipelines)."""

import datetime as dt
import logging

import azure.functions as func

from shared.export import snapshotstate
from shared.ingest import idempotency
from shared.tasks import orchestration


def main(timer: func.TimerRequest) -> None:
    now = dt.datetime.now(dt.UTC)
    restarted = orchestration.restart_stranded_jobs(now)
    forgotten = idempotency.forget_expired(now)
    compacted = snapshotstate.compact_due(now)
    logging.info("StartExport: %d stranded job(s) started again, %d expired "
                 "Idempotency-Key claim(s) removed, %d snapshot log(s) compacted%s", restarted,
                 forgotten, compacted, " (timer was past due)" if timer.past_due else "")
