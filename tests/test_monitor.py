"""The monitor's decision as a pure function, without storage: every state of a job and its parts, the SAS
expiry and the deadline, in the order they take precedence."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from shared.export.spec import ExportScope
from shared.tasks import jobs, parts
from shared.tasks.monitor import Action, Decision, decide

# Runs without Azurite or a host: `make test-pure`.
pytestmark = pytest.mark.pure

NOW = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
QUEUED = jobs.ExportJob(app_id="c~a", id="j1", route="events",
                        scope=ExportScope(export_type="Event", export_format="JsonBlob"), container_url="https://x",
                        sealed_sas="", sas_expires=NOW + 10 * HOUR, date_created=NOW - HOUR)
STARTED = dataclasses.replace(QUEUED, state=jobs.STARTED, date_started=NOW - HOUR, parts_total=3)


def done(index):
    return parts.done("j1", index, f"part-{index}", records=10, size=100, md5="m", blocks=["b"])


def failed(index, reason):
    return parts.failed("j1", index, f"part-{index}", reason)


def summary(*recorded, total=3):
    return parts.Summary(total=total, done=tuple(p for p in recorded if p.done),
                         failed=tuple(p for p in recorded if not p.done))


def test_a_queued_job_is_started():
    assert decide(QUEUED, None, NOW, deadline_hours=24) == Decision(Action.START)


@pytest.mark.parametrize("state", [jobs.SUCCEEDED, jobs.FAILED])
def test_an_ended_job_is_left_alone_whatever_its_parts_say(state):
    ended = dataclasses.replace(STARTED, state=state, date_completed=NOW)
    assert decide(ended, summary(failed(0, "x")), NOW + 100 * HOUR, deadline_hours=24) == Decision(Action.NOTHING)


def test_parts_still_running_mean_wait():
    assert decide(STARTED, summary(done(0)), NOW, deadline_hours=24) == Decision(Action.WAIT)


def test_every_part_done_means_commit():
    assert decide(STARTED, summary(done(0), done(1), done(2)), NOW, deadline_hours=24) == Decision(Action.COMMIT)


def test_a_job_with_no_data_commits_its_single_empty_part():
    empty = dataclasses.replace(STARTED, parts_total=1)
    assert decide(empty, summary(done(0), total=1), NOW, deadline_hours=24) == Decision(Action.COMMIT)


def test_a_failed_part_fails_the_job_with_the_first_reason_by_index():
    decision = decide(STARTED, parts.Summary(total=3, done=(done(0),),
                                             failed=(failed(1, "first by index"), failed(2, "second"))),
                      NOW, deadline_hours=24)
    assert decision == Decision(Action.FAIL, "first by index")


def test_an_expired_sas_fails_before_anything_else_even_a_queued_job():
    later = QUEUED.sas_expires
    for job in (QUEUED, STARTED):
        decision = decide(job, summary(done(0), done(1), done(2)), later, deadline_hours=24)
        assert decision.action is Action.FAIL
        assert decision.reason == ("the SAS token of the destination container expired at "
                                   f"{jobs.iso(later)} before the export finished; create the export again with a "
                                   f"SAS valid long enough")


def test_the_deadline_counts_from_the_start_and_fails_even_complete_parts():
    decision = decide(STARTED, summary(done(0), done(1), done(2)), STARTED.date_started + 2 * HOUR,
                      deadline_hours=2)
    assert decision == Decision(Action.FAIL, "the export did not finish within 2 hours (EXPORT_JOB_DEADLINE_HOURS); "
                                             "try a shorter date range")
    assert decide(STARTED, summary(done(0)), STARTED.date_started + 2 * HOUR - dt.timedelta(seconds=1),
                  deadline_hours=2) == Decision(Action.WAIT)


def test_a_started_job_needs_its_parts_to_decide():
    with pytest.raises(ValueError):
        decide(STARTED, None, NOW, deadline_hours=24)
