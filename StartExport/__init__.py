"""Timer: the safety net that starts export jobs left Queued (a crash between the job row and its start
message must not strand a job). Jobs created through the API start at once and do not wait for it."""

import datetime as dt
import logging

import azure.functions as func

from shared import orchestration


def main(timer: func.TimerRequest) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    restarted = orchestration.restart_stranded_jobs(now)
    logging.info("StartExport: %d stranded job(s) started again%s", restarted,
                 " (timer was past due)" if timer.past_due else "")
