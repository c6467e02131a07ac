"""The durable-style life of an export job: start, fan out, monitor, fan in.

Messages are small JSON documents on the app's own queues; every handler is idempotent, because the host
delivers a message at least once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

from shared import jobs, storage

POLL_QUEUE = "export-poll"
# A job still Queued this long after creation lost its start message (or the host crashed): start it again.
RESTART_QUEUED_AFTER = dt.timedelta(minutes=1)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollMessage:
    app_id: str
    job_id: str
    attempt: int = 0

    def to_json(self) -> str:
        return json.dumps({"app": self.app_id, "job": self.job_id, "attempt": self.attempt})

    @classmethod
    def from_json(cls, body: bytes) -> "PollMessage":
        try:
            doc = json.loads(body)
            return cls(app_id=str(doc["app"]), job_id=str(doc["job"]), attempt=int(doc.get("attempt", 0)))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not a poll message: {error!r}") from None


def send_poll(message: PollMessage, *, delay_seconds: int = 0) -> None:
    storage.queue(POLL_QUEUE).send_message(message.to_json(), visibility_timeout=delay_seconds or None)


def request_start(job: jobs.ExportJob) -> None:
    """Puts a new job on its way now: its first poll plans it and fans out the work."""
    send_poll(PollMessage(job.app_id, job.id))


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
