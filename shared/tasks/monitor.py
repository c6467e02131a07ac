"""The monitor's decision, as a pure function: what to do next with a job, from the job, where its parts
stand and the time. No storage here; shared.tasks.orchestration reads the inputs and carries the decision out."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from shared.export.destination import expired_reason
from shared.tasks import jobs
from shared.tasks.parts import Summary


class Action(Enum):
    NOTHING = "nothing"  # the job already ended
    START = "start"  # plan it and fan out its work
    WAIT = "wait"  # parts are still running: look again later
    COMMIT = "commit"  # every part is done: commit the files and the manifest
    FAIL = "fail"  # end it as Failed with ``reason`` as its errorDetails


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str | None = None


def decide(job: jobs.ExportJob, parts: Summary | None, now: dt.datetime, *, deadline_hours: int) -> Decision:
    """The next step for ``job`` at ``now``; ``parts`` may be None while the job is Queued (not planned)."""
    if job.finished:
        return Decision(Action.NOTHING)
    if now >= job.sas_expires:
        return Decision(Action.FAIL, expired_reason(job.sas_expires))
    if job.state == jobs.QUEUED:
        return Decision(Action.START)
    if now >= (job.date_started or now) + dt.timedelta(hours=deadline_hours):
        return Decision(Action.FAIL, f"the export did not finish within {deadline_hours} hours "
                                     f"(EXPORT_JOB_DEADLINE_HOURS); try a shorter date range")
    if parts is None:
        raise ValueError(f"a Started job's parts are needed to decide ({job.id})")
    failure = parts.first_failure
    if failure is not None:
        return Decision(Action.FAIL, failure.reason)
    if not parts.complete:
        return Decision(Action.WAIT)
    return Decision(Action.COMMIT)
