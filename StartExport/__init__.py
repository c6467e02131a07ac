"""Timer: creates the scheduled exports that are due (catching up periods missed while the app was down)
and starts again jobs left Queued (a crash between the job row and its start message must not strand a
job). Jobs created through the API start at once and do not wait for it. Harmless when two instances
fire at once: scheduled job ids derive from schedule + period, and a duplicate start is a no-op."""

import datetime as dt
import logging

import azure.functions as func

from shared.tasks import orchestration, schedules


def main(timer: func.TimerRequest) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    created = schedules.create_due_jobs(now)
    restarted = orchestration.restart_stranded_jobs(now)
    logging.info("StartExport: %d scheduled job(s) created, %d stranded job(s) started again%s", len(created),
                 restarted, " (timer was past due)" if timer.past_due else "")
