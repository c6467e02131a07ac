"""A pipeline's next step and its alerts as pure decisions, without storage: runs in flight in each state, the
settle delay, late looks, pauses, failures and their retries, a pipeline behind, a SAS about to expire; and the
checks of a PUT's body and of a name."""

from __future__ import annotations

import datetime as dt

import pytest
from helpers import offline_settings

from shared.export.destination import SealedDestination
from shared.pipelines.decide import TIMER_PERIOD, Step, next_step, retry_delay
from shared.pipelines.model import BEHIND, RUN_FAILED, SAS_EXPIRING, InFlight, Pipeline
from shared.pipelines.periods import Period, parse_label, period_of
from shared.pipelines.request import check_name, parse_pipeline
from shared.platform.errors import InvalidInput

# Runs without Azurite or a host: `make test-pure`.
pytestmark = pytest.mark.pure

UTC = dt.UTC
T0 = dt.datetime(2026, 5, 4, 0, 0, tzinfo=UTC)


def pipeline(**changes) -> Pipeline:
    values = dict(app_id="c~a", name="p", uid="0123456789abcdef", route="events",
                  shape={"export_format": "JsonBlob", "layout": "flat"}, cadence="daily", settle_minutes=60,
                  late_delivery_minutes=10, first_period=T0, created=T0, updated=T0,
                  destination=SealedDestination("https://a.blob.core.windows.net/c", "sealed",
                                                T0 + dt.timedelta(days=30)))
    values.update(changes)
    return Pipeline(**values)


def in_flight(job_id="job-1", late=False, periods=("2026-05-04",)) -> InFlight:
    return InFlight(1, job_id, 1, periods, late, T0)


def test_a_period_is_delivered_once_it_ended_and_settled():
    assert next_step(pipeline(), T0 + dt.timedelta(days=1, minutes=59), None) == Step.IDLE
    assert next_step(pipeline(), T0 + dt.timedelta(days=1, minutes=60), None) == Step.FIRST_RUN


@pytest.mark.parametrize("task_state, step", [(None, Step.START), ("Queued", Step.WAIT), ("Started", Step.WAIT),
                                              ("Succeeded", Step.FINISH), ("Failed", Step.FAILED)])
def test_the_run_in_flight_decides_first(task_state, step):
    assert next_step(pipeline(in_flight=in_flight()), T0 + dt.timedelta(days=9), task_state) == step


def test_a_failed_run_is_tried_again_when_its_retry_is_due_and_not_while_paused():
    failed = pipeline(in_flight=in_flight(), failure={"task": "job-1", "reason": "gone", "since": "x",
                                                      "retryAt": "2026-05-05T03:00:00.000Z"})
    assert next_step(failed, dt.datetime(2026, 5, 5, 2, 59, tzinfo=UTC), "Failed") == Step.WAIT
    assert next_step(failed, dt.datetime(2026, 5, 5, 3, 0, tzinfo=UTC), "Failed") == Step.RETRY
    failed.paused = True
    assert next_step(failed, dt.datetime(2026, 5, 5, 3, 0, tzinfo=UTC), "Failed") == Step.WAIT
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 7, 8, 20)] == [60, 120, 240, 3600, 3600, 3600]


def test_late_looks_come_every_late_delivery_before_first_runs_and_not_while_paused():
    delivered = pipeline(periods={"2026-05-04": "000001-aaaa"}, next_period=T0 + dt.timedelta(days=1),
                         late_looked_at=T0 + dt.timedelta(days=3))
    now = T0 + dt.timedelta(days=3)
    assert next_step(delivered, now, None) == Step.FIRST_RUN  # looked just now; the next periods are due
    assert next_step(delivered, now + dt.timedelta(minutes=10) - TIMER_PERIOD, None) == Step.LOOK_LATE
    delivered.paused = True
    assert next_step(delivered, now + dt.timedelta(minutes=10), None) == Step.IDLE
    snapshot = pipeline(route="tags", periods={"2026-05-04": "000001-aaaa"}, shape={"export_format": "JsonBlob"})
    assert next_step(snapshot, now, None) == Step.FIRST_RUN  # a snapshot has no late records


def test_alerts_hold_while_their_cause_does():
    now = T0 + dt.timedelta(days=1, hours=1)  # the first period was due at T0 + 1 day + 1 hour
    assert pipeline().current_alerts(now) == {}
    assert set(pipeline().current_alerts(now + dt.timedelta(hours=1))) == {BEHIND}
    assert pipeline(paused=True).current_alerts(now + dt.timedelta(hours=5)) == {}
    resumed = pipeline(resumed=now + dt.timedelta(hours=4))
    assert resumed.current_alerts(now + dt.timedelta(hours=4, minutes=59)) == {}
    failing = pipeline(in_flight=in_flight(), failure={"task": "job-1", "reason": "the container is gone",
                                                       "since": "x", "retryAt": "x"})
    holding = failing.current_alerts(now)
    assert holding[RUN_FAILED] == "run run-000001-01234567 of 2026-05-04 failed: the container is gone"
    assert failing.state(holding) == ("Failing", [holding[RUN_FAILED]])
    expiring = pipeline(destination=SealedDestination("https://a.blob.core.windows.net/c", "s",
                                                      now + dt.timedelta(hours=20)))
    reason = expiring.current_alerts(now)[SAS_EXPIRING]
    assert reason.startswith("the destination's SAS expires at 2026-05-05T21:00:00.000Z")
    assert expiring.to_result(now)["state"] == "Failing" and expiring.to_result(now)["stateDetails"] == reason
    assert "sealed" not in str(pipeline().to_result(now))


def test_periods_have_labels_that_parse_back():
    hour = period_of(dt.datetime(2026, 5, 4, 13, 59, tzinfo=UTC), "hourly")
    assert (hour.label, hour.end, hour.hour) == ("2026-05-04T13", dt.datetime(2026, 5, 4, 14, tzinfo=UTC), 13)
    assert parse_label("2026-05-04T13", "hourly") == hour
    day = period_of(dt.datetime(2026, 5, 4, 13, 59, tzinfo=UTC), "daily")
    assert (day.label, day.next().label, day.hour) == ("2026-05-04", "2026-05-05", None)
    assert parse_label("2026-05-04", "daily") == Period(T0, "daily")


@pytest.mark.parametrize("name", ["a", "daily-events", "x" * 40, "0-9"])
def test_a_good_name_is_taken(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Daily", "-a", "a_b", "x" * 41, "delta", "a/b", "é"])
def test_a_bad_name_is_refused(name):
    with pytest.raises(InvalidInput):
        check_name(name)


def test_a_body_gets_its_defaults_and_keeps_its_shape():
    with offline_settings():
        request = parse_pipeline({"route": "events", "containerUrl": "https://a.blob.core.windows.net/c?sig=x",
                                  "cadence": "hourly", "fields": ["name", "deviceId"]}, max_backfill_days=366,
                                 today=T0.date())
    assert (request.cadence, request.settle_minutes, request.late_delivery_minutes) == ("hourly", 60, 60)
    assert request.shape == {"export_format": "JsonBlob", "export_user_id": None, "projection": ("deviceId", "name"),
                             "name_filter": None, "layout": "flat"}
