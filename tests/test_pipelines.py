"""Pipelines: continuous exports that deliver every acknowledged record exactly once under its event-time period,
however late it arrives, driven through the API, Collect, the pipelines' timer and the export queues."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest
from pipelining import PipelineApp, event

UTC = dt.UTC


@pytest.fixture
def lake(app_env, names):
    return PipelineApp(app_env, names)


def _day(moment: dt.datetime) -> dt.datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.mark.parametrize("export_format,layout", [("JsonBlob", "flat"), ("CsvBlob", "hive"),
                                                  ("ParquetBlob", "hive")])
def test_late_records_in_waves_are_delivered_once_under_their_period(lake, export_format, layout):
    now = dt.datetime.now(UTC)
    today = _day(now)
    days = [today - dt.timedelta(days=n) for n in (3, 2, 1)]
    sent: Counter = Counter()

    def send(tag: str, moments: list[dt.datetime]) -> None:
        records = [event(f"{tag}-{i}", moment) for i, moment in enumerate(moments)]
        lake.send(records)
        for record, moment in zip(records, moments):
            folder = f"date={moment:%Y-%m-%d}" if layout == "hive" else f"{moment:%Y-%m-%d}"
            sent[(folder, record["name"])] += 1

    send("on-time", [day + dt.timedelta(hours=h, minutes=7) for day in days for h in (1, 9, 17)])
    status, body = lake.api("PUT", "daily", {
        "route": "events", "exportFormat": export_format, "layout": layout, "cadence": "daily",
        "settleMinutes": 0, "lateDeliveryMinutes": 1, "startFrom": f"{days[0]:%Y-%m-%d}",
        "containerUrl": lake.container_url()})
    assert status == 201, body
    lake.run_pipelines(now)
    assert lake.delivered("daily") == sent
    # Late waves: minutes, hours and days after their periods were delivered.
    send("wave1", [days[0] + dt.timedelta(hours=2), days[2] + dt.timedelta(hours=23, minutes=59)])
    lake.run_pipelines(now + dt.timedelta(minutes=2))
    assert lake.delivered("daily") == sent
    send("wave2", [days[1] + dt.timedelta(hours=5), days[0] + dt.timedelta(hours=2), days[0] + dt.timedelta(hours=3)])
    send("wave3", [days[2] + dt.timedelta(hours=1)])
    lake.run_pipelines(now + dt.timedelta(minutes=4))
    assert lake.delivered("daily") == sent
    manifests = lake.manifests("daily")
    assert sorted((m["pipeline"]["periods"], m["pipeline"]["late"]) for m in manifests) == sorted(
        [([f"{d:%Y-%m-%d}" for d in days], False)]  # one run catches the three days up
        + [([f"{days[0]:%Y-%m-%d}", f"{days[2]:%Y-%m-%d}"], True),
           ([f"{days[0]:%Y-%m-%d}", f"{days[1]:%Y-%m-%d}", f"{days[2]:%Y-%m-%d}"], True)])
    status, runs = lake.api("GET", "daily/runs")
    assert status == 200
    assert [run["delivery"] for run in runs["value"]] == ["late", "late", "first"]
    assert all(run["state"] == "Succeeded" and 0 <= run["lagSeconds"] < 120 for run in runs["value"])
    assert sum(run["recordCount"] for run in runs["value"]) == sum(sent.values())


def _put_body(lake, **overrides):
    body = {"route": "events", "exportFormat": "JsonBlob", "cadence": "daily", "settleMinutes": 0,
            "containerUrl": lake.container_url()}
    body.update(overrides)
    return body


@pytest.mark.parametrize("name, overrides, field, message", [
    ("p1", {"route": None}, "route", "is required"),
    ("p1", {"route": "feedbackByDate"}, "route", "must be one of"),
    ("p1", {"colour": "red"}, "colour", "is not a field of a events pipeline"),
    ("p1", {"route": "tags", "layout": "hive"}, "layout", "is not a field of a tags pipeline"),
    ("p1", {"route": "sessions", "cadence": "hourly"}, "cadence", "hourly is for"),
    ("p1", {"cadence": "weekly"}, "cadence", "must be one of"),
    ("p1", {"settleMinutes": -1}, "settleMinutes", "from 0 to 10080"),
    ("p1", {"lateDeliveryMinutes": 0}, "lateDeliveryMinutes", "from 1 to 10080"),
    ("p1", {"startFrom": "2999-01-01"}, "startFrom", "is in the future"),
    ("p1", {"startFrom": "2001-01-01"}, "startFrom", "backfills at most 366 days"),
    ("p1", {"route": "tags", "startFrom": "2026-01-01"}, "startFrom", "is for historical routes"),
    ("p1", {"exportFormat": "Xml"}, "exportFormat", "must be one of"),
    ("p1", {"containerUrl": "https://example.com/c?sig=x"}, "containerUrl", ""),
    ("Bad_Name", {}, "pipeline name", "is not valid"),
    ("delta", {}, "pipeline name", "is reserved"),
])
def test_a_bad_put_is_refused_naming_the_field(lake, name, overrides, field, message):
    body = {key: value for key, value in _put_body(lake, **overrides).items() if value is not None}
    status, answer = lake.api("PUT", name, body)
    assert status == 400, answer
    assert answer["error"]["message"].startswith(field) or field in answer["error"]["message"], answer
    assert message in answer["error"]["message"]
    assert lake.api("GET", "")[1] == {"value": []}


def test_a_sas_that_expired_or_cannot_write_is_refused(lake):
    expired = lake.container_url(expiry=dt.datetime.now(UTC) - dt.timedelta(minutes=5))
    status, answer = lake.api("PUT", "p", _put_body(lake, containerUrl=expired))
    assert (status, answer["error"]["code"]) == (400, "InvalidContainerUrl")
    assert "expired" in answer["error"]["message"]
    read_only = lake.container_url(permission="rl")
    status, answer = lake.api("PUT", "p", _put_body(lake, containerUrl=read_only))
    assert (status, answer["error"]["code"]) == (400, "InvalidContainerUrl"), answer


def test_a_pipeline_is_shown_without_its_sas_and_only_to_its_app(lake, app_env, names):
    status, created = lake.api("PUT", "hourly-errors", _put_body(lake, route="errors", cadence="hourly",
                                                                 exportFormat="ParquetBlob", fields=["deviceId",
                                                                                                     "name"]))
    assert status == 201
    status, shown = lake.api("GET", "hourly-errors")
    assert status == 200 and shown == created
    assert shown["state"] == "Active" and shown["cadence"] == "hourly" and shown["fields"] == ["deviceId", "name"]
    assert shown["lateDeliveryMinutes"] == 60 and shown["settleMinutes"] == 0
    assert "?" not in shown["containerUrl"] and "sig=" not in str(shown)
    assert dt.datetime.fromisoformat(shown["sasExpires"].replace("Z", "+00:00")) > dt.datetime.now(UTC)
    assert lake.api("GET", "")[1]["value"] == [shown]
    other = PipelineApp(app_env, names, other="b")
    assert other.api("GET", "")[1] == {"value": []}
    status, answer = other.api("GET", "hourly-errors")
    assert (status, answer["error"]["code"]) == (404, "PipelineNotFound")
    status, answer = lake.api("GET", "hourly-errors", key=other.keys.export_key)
    assert status == 401
    status, answer = lake.api("GET", "nothing-here")
    assert (status, answer["error"]["code"]) == (404, "PipelineNotFound")
    status, answer = lake.api("PATCH", "hourly-errors")
    assert status == 405 and "GET, PUT, DELETE" in answer["error"]["message"]


def test_a_put_may_change_the_destination_and_delays_but_not_what_was_delivered(lake):
    assert lake.api("PUT", "p", _put_body(lake))[0] == 201
    status, answer = lake.api("PUT", "p", _put_body(lake, exportFormat="CsvBlob"))
    assert (status, answer["error"]["code"]) == (409, "PropertyChangeNotAllowed")
    assert "exportFormat" in answer["error"]["message"]
    later = dt.datetime.now(UTC) + dt.timedelta(days=5)
    status, changed = lake.api("PUT", "p", _put_body(lake, settleMinutes=30, containerUrl=lake.container_url(
        expiry=later)))
    assert status == 200 and changed["settleMinutes"] == 30
    assert changed["sasExpires"].startswith(f"{later:%Y-%m-%dT%H:%M}")


def test_pause_stops_new_runs_and_resume_catches_up(lake):
    now = dt.datetime.now(UTC)
    start = _day(now) - dt.timedelta(days=2)
    lake.send([event("a", start + dt.timedelta(hours=3)), event("b", start + dt.timedelta(days=1, hours=3))])
    assert lake.api("PUT", "p", _put_body(lake, startFrom=f"{start:%Y-%m-%d}"))[0] == 201
    status, paused = lake.api("POST", "p/pause")
    assert status == 200 and paused["state"] == "Paused"
    lake.run_pipelines(now)
    assert lake.api("GET", "p/runs")[1] == {"value": []}
    assert lake.api("POST", "p/resume")[1]["state"] == "Active"
    lake.run_pipelines(now)
    runs = lake.api("GET", "p/runs")[1]["value"]
    assert [run["periods"] for run in runs] == [[f"{start:%Y-%m-%d}", f"{start + dt.timedelta(days=1):%Y-%m-%d}"]]
    shown = lake.api("GET", "p")[1]
    assert shown["lastDeliveredPeriod"] == f"{start + dt.timedelta(days=1):%Y-%m-%d}"
    assert shown["nextPeriod"] == f"{now:%Y-%m-%d}"


def test_runs_are_listed_newest_first_a_page_at_a_time_and_are_export_tasks(lake):
    now = dt.datetime.now(UTC)
    start = _day(now) - dt.timedelta(days=3)
    assert lake.api("PUT", "p", _put_body(lake, startFrom=f"{start:%Y-%m-%d}"))[0] == 201
    for days in range(3):  # the backfill in one run, then a run a day
        lake.run_pipelines(now + dt.timedelta(days=days))
    status, page = lake.api("GET", "p/runs", params={"api-version": "2014-12-01", "$top": "2"})
    assert status == 200 and [run["sequence"] for run in page["value"]] == [3, 2]
    token = parse_qs(urlsplit(page["nextLink"]).query)["$skiptoken"][0]
    page2 = lake.api("GET", "p/runs", params={"api-version": "2014-12-01", "$top": "2", "$skiptoken": token})[1]
    assert [run["sequence"] for run in page2["value"]] == [1] and "nextLink" not in page2
    run = page2["value"][0]
    assert run["delivery"] == "first" and run["state"] == "Succeeded" and run["recordCount"] == 0
    assert "lagSeconds" not in run  # no record, no acknowledgement to measure from
    from shared.tasks import jobs
    job = jobs.get_job(lake.app.id, run["taskId"])
    assert job.to_result()["pipeline"] == {"name": "p", "run": run["run"], "periods": run["periods"], "late": False}
    status, answer = lake.api("GET", "p/runs", params={"api-version": "2014-12-01", "$skiptoken": "abc"})
    assert status == 400


def test_delete_cancels_the_run_in_flight_and_keeps_delivered_files(lake):
    now = dt.datetime.now(UTC)
    start = _day(now) - dt.timedelta(days=2)
    lake.send([event("a", start + dt.timedelta(hours=3))])
    assert lake.api("PUT", "p", _put_body(lake, startFrom=f"{start:%Y-%m-%d}"))[0] == 201
    from shared.pipelines import driver
    from shared.tasks import jobs
    driver.tick(now, app_id=lake.app.id)  # the first run is planned and submitted, not run
    in_flight = lake.pipeline("p").in_flight
    status, deleted = lake.api("DELETE", "p")
    assert status == 200 and deleted["state"] == "Deleted" and deleted["cancelledTaskId"] == in_flight.job_id
    job = jobs.get_job(lake.app.id, in_flight.job_id)
    assert job.state == jobs.FAILED and "cancelled" in job.error_details
    assert lake.api("GET", "p")[0] == 404
    assert lake.api("DELETE", "p")[0] == 404


def _alerts(azurite, queue_name, kind=None):
    import base64
    import json

    from azure.storage.queue import QueueClient
    client = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    try:
        found = list(client.peek_messages(max_messages=32))
    except Exception:  # the queue is made with the first event
        return []
    events = [json.loads(base64.b64decode(message.content)) for message in found]
    return [e for e in events if kind is None or e["alert"] == kind]


def test_a_failed_run_is_reported_once_retried_and_its_recovery_reported(lake, app_env, settings_override, names):
    from shared.platform import config
    alerts_queue = names.queue("alerts")
    settings_override(**{config.FORWARD_DEFAULT_QUEUE: alerts_queue})
    now = dt.datetime.now(UTC)
    yesterday = _day(now) - dt.timedelta(days=1)
    lake.send([event("a", yesterday + dt.timedelta(hours=5))])
    assert lake.api("PUT", "p", _put_body(lake, startFrom=f"{yesterday:%Y-%m-%d}"))[0] == 201
    lake.service.delete_container(lake.container)  # the customer deleted the container
    lake.run_pipelines(now)
    shown = lake.api("GET", "p")[1]
    assert shown["state"] == "Failing" and "does not exist" in shown["stateDetails"], shown
    lake.run_pipelines(now + dt.timedelta(seconds=30))  # before its retry is due: nothing new
    events = _alerts(app_env, alerts_queue, "runFailed")
    assert [(e["event"], e["alert"], e["status"], e["pipeline"], e["period"]) for e in events] == [
        ("pipeline.alert", "runFailed", "raised", "p", f"{yesterday:%Y-%m-%d}")]
    assert events[0]["app"] == {"appCollection": lake.collection, "appName": "app"}
    assert f"{yesterday:%Y-%m-%d}" in events[0]["reason"]
    lake.service.create_container(lake.container)
    lake.run_pipelines(now + dt.timedelta(minutes=2))  # the retry is due: a new attempt succeeds
    assert [(e["alert"], e["status"]) for e in _alerts(app_env, alerts_queue, "runFailed")] == [
        ("runFailed", "raised"), ("runFailed", "resolved")]
    (run,) = lake.api("GET", "p/runs")[1]["value"]
    assert run["attempts"] == 2 and run["state"] == "Succeeded" and run["recordCount"] == 1
    assert lake.delivered("p") == Counter({(f"{yesterday:%Y-%m-%d}", "a"): 1})
    assert lake.api("GET", "p")[1]["state"] == "Active"


def test_a_sas_about_to_expire_makes_the_pipeline_failing_before_a_run_fails(lake, app_env, settings_override,
                                                                           names):
    import hashlib
    import hmac
    import json

    from helpers import Receiver

    from shared.platform import config
    alerts_queue = names.queue("alerts")
    webhook = Receiver(fail_first=False)
    settings_override(**{config.FORWARD_DEFAULT_QUEUE: alerts_queue, config.FORWARD_WEBHOOK_URL: webhook.url,
                         config.FORWARD_WEBHOOK_SECRET: "s3cret"})
    soon = dt.datetime.now(UTC) + dt.timedelta(hours=3)
    status, shown = lake.api("PUT", "p", _put_body(lake, settleMinutes=60, containerUrl=lake.container_url(
        expiry=soon)))
    assert status == 201 and shown["state"] == "Failing"
    assert f"expires at {soon:%Y-%m-%dT%H:%M}" in shown["stateDetails"]
    now = dt.datetime.now(UTC)
    lake.run_pipelines(now)
    lake.run_pipelines(now + dt.timedelta(seconds=20))
    assert [(e["alert"], e["status"]) for e in _alerts(app_env, alerts_queue)] == [("sasExpiring", "raised")]
    status, shown = lake.api("PUT", "p", _put_body(lake, settleMinutes=60))
    assert status == 200 and shown["state"] == "Active" and "stateDetails" not in shown
    lake.run_pipelines(now + dt.timedelta(seconds=40))
    events = _alerts(app_env, alerts_queue)
    assert [(e["alert"], e["status"]) for e in events] == [("sasExpiring", "raised"), ("sasExpiring", "resolved")]
    webhook.close()
    assert [json.loads(body) for _, body in webhook.requests] == events  # the signed webhook gets the same, once
    for headers, body in webhook.requests:
        assert headers["X-Engagement-Export-Signature"] == "sha256=" + hmac.new(b"s3cret", body,
                                                                                 hashlib.sha256).hexdigest()


def test_a_pipeline_behind_its_periods_is_reported_once_and_its_catching_up_too(lake, app_env, settings_override,
                                                                                names):
    from shared.platform import config
    alerts_queue = names.queue("alerts")
    settings_override(**{config.FORWARD_DEFAULT_QUEUE: alerts_queue})
    now = dt.datetime.now(UTC)
    first = _day(now) - dt.timedelta(days=2)
    status, created = lake.api("PUT", "p", _put_body(lake, startFrom=f"{first:%Y-%m-%d}"))
    assert status == 201
    lake.service.delete_container(lake.container)
    lake.run_pipelines(now)  # a backfill is not behind: its periods could not be delivered before it was made
    assert _alerts(app_env, alerts_queue, "behind") == []
    lake.run_pipelines(now + dt.timedelta(minutes=61))
    lake.run_pipelines(now + dt.timedelta(minutes=62))
    (behind,) = _alerts(app_env, alerts_queue, "behind")
    assert behind["status"] == "raised" and behind["period"] == f"{first:%Y-%m-%d}"
    assert behind["reason"] == f"period {first:%Y-%m-%d} was due at {created['dateCreated']} and is not delivered yet"
    lake.service.create_container(lake.container)
    lake.run_pipelines(now + dt.timedelta(minutes=90))
    assert [e["status"] for e in _alerts(app_env, alerts_queue, "behind")] == ["raised", "resolved"]
    assert lake.api("GET", "p")[1]["lastDeliveredPeriod"] == f"{now - dt.timedelta(days=1):%Y-%m-%d}"


def activity(name: str, session: str, start: dt.datetime, minutes: int = 5) -> dict:
    end = start + dt.timedelta(minutes=minutes)
    return {"type": "activity", "deviceId": "dev-1", "userId": "u1", "sessionId": session, "name": name,
            "start": start.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "end": end.strftime("%Y-%m-%dT%H:%M:%S.000Z")}


def test_a_late_activity_delivers_the_sessions_of_its_days_again_whole_replacing_the_earlier_runs(lake):
    from exporting import run_export
    now = dt.datetime.now(UTC)
    first, second = _day(now) - dt.timedelta(days=2), _day(now) - dt.timedelta(days=1)
    lake.send([activity("home", "s1", first + dt.timedelta(hours=8)),
               activity("shop", "s1", first + dt.timedelta(hours=8, minutes=6)),
               activity("home", "s2", second + dt.timedelta(hours=9))])
    assert lake.api("PUT", "sessions", _put_body(lake, route="sessions", lateDeliveryMinutes=1,
                                                 startFrom=f"{first:%Y-%m-%d}"))[0] == 201
    lake.run_pipelines(now)
    # Late: s1 goes on (a third activity), and a new session starts the second day.
    lake.send([activity("pay", "s1", first + dt.timedelta(hours=8, minutes=12)),
               activity("home", "s3", second + dt.timedelta(hours=20))])
    lake.run_pipelines(now + dt.timedelta(minutes=2))
    manifests = lake.manifests("sessions")
    late = [m for m in manifests if m["pipeline"]["late"]]
    (late,) = late
    (earlier,) = [m for m in manifests if not m["pipeline"]["late"]]
    assert earlier["pipeline"]["periods"] == late["pipeline"]["periods"] == [f"{first:%Y-%m-%d}", f"{second:%Y-%m-%d}"]
    assert late["pipeline"]["replaces"] == [earlier["pipeline"]["run"]]
    # The reader's rule: for each day, the files of the newest run that delivered it.
    newest: dict[str, int] = {}
    for manifest in manifests:
        for period in manifest["pipeline"]["periods"]:
            newest[period] = max(newest.get(period, 0), manifest["pipeline"]["sequence"])
    kept = {m["pipeline"]["run"] for m in manifests if any(newest[p] == m["pipeline"]["sequence"]
                                                           for p in m["pipeline"]["periods"])}
    rows = []
    from pipelining import read_rows
    for name, data in lake.blobs("sessions/").items():
        if not name.startswith("sessions/_") and name.split("/")[-1].split("-part-")[0] in kept:
            rows += read_rows(name, data, "Session")
    want = run_export(lake.app.id, "sessions", "JsonBlob", start_date=first.date(), end_date=second.date())
    assert sorted((r["sessionId"], r["activityCount"], r["lastActivity"]) for r in rows) == sorted(
        (r["sessionId"], r["activityCount"], r["lastActivity"]) for r in want) == [
        ("s1", 3, "pay"), ("s2", 1, "home"), ("s3", 1, "home")]


def test_a_snapshot_pipeline_delivers_the_whole_snapshot_at_each_period(lake):
    now = dt.datetime.now(UTC)
    lake.send([{"type": "tag", "deviceId": "dev-1", "name": "plan", "value": "gold"}])
    assert lake.api("PUT", "tags", _put_body(lake, route="tags", exportFormat="CsvBlob"))[0] == 201
    lake.run_pipelines(now)
    assert lake.api("GET", "tags/runs")[1] == {"value": []}  # today is delivered once it has ended
    tomorrow = _day(now) + dt.timedelta(days=1, minutes=1)
    lake.run_pipelines(tomorrow)
    lake.send([{"type": "tag", "deviceId": "dev-2", "name": "plan", "value": "free"}])
    lake.run_pipelines(tomorrow + dt.timedelta(days=1))
    delivered = lake.delivered("tags", "Tag")
    # Each period's file is the snapshot when its run read it: dev-2's tag came after the first.
    assert delivered == Counter({(f"{now:%Y-%m-%d}", "plan"): 1, (f"{tomorrow:%Y-%m-%d}", "plan"): 2})
    runs = lake.api("GET", "tags/runs")[1]["value"]
    assert [(run["periods"], run["delivery"]) for run in runs] == [([f"{tomorrow:%Y-%m-%d}"], "first"),
                                                                  ([f"{now:%Y-%m-%d}"], "first")]


def test_an_hourly_pipeline_delivers_a_late_record_under_its_hour(lake):
    now = dt.datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=2)
    lake.send([event("on-time", hour + dt.timedelta(minutes=10))])
    status, body = lake.api("PUT", "hourly", _put_body(lake, cadence="hourly", lateDeliveryMinutes=1,
                                                       startFrom=f"{now:%Y-%m-%d}"))
    assert status == 201, body
    lake.run_pipelines(now)
    lake.send([event("late", hour + dt.timedelta(minutes=50))])
    lake.run_pipelines(now + dt.timedelta(minutes=2))
    label = f"{hour:%Y-%m-%dT%H}"
    assert lake.delivered("hourly") == Counter({(label, "on-time"): 1, (label, "late"): 1})
    (late,) = [run for run in lake.api("GET", "hourly/runs")[1]["value"] if run["delivery"] == "late"]
    assert late["periods"] == [label] and late["recordCount"] == 1


def test_a_timer_killed_between_planning_a_run_and_submitting_it_submits_it_on_the_next_tick(lake, monkeypatch):
    from shared.pipelines import driver
    now = dt.datetime.now(UTC)
    yesterday = _day(now) - dt.timedelta(days=1)
    lake.send([event("a", yesterday + dt.timedelta(hours=1)), event("b", yesterday + dt.timedelta(hours=22))])
    assert lake.api("PUT", "p", _put_body(lake, startFrom=f"{yesterday:%Y-%m-%d}"))[0] == 201
    real_submit = driver.service.submit_export

    def killed(*args, **kwargs):
        raise SystemExit("the host was killed")

    monkeypatch.setattr(driver.service, "submit_export", killed)
    with pytest.raises(SystemExit):
        driver.tick(now, app_id=lake.app.id)
    planned = lake.pipeline("p").in_flight
    assert planned is not None and driver.task_state(lake.pipeline("p")) is None
    monkeypatch.setattr(driver.service, "submit_export", real_submit)
    lake.run_pipelines(now)
    (run,) = lake.api("GET", "p/runs")[1]["value"]
    assert run["taskId"] == planned.job_id and run["attempts"] == 1 and run["state"] == "Succeeded"
    assert lake.delivered("p") == Counter({(f"{yesterday:%Y-%m-%d}", "a"): 1, (f"{yesterday:%Y-%m-%d}", "b"): 1})


def test_timers_firing_at_once_on_many_instances_deliver_every_late_record_once(lake):
    import threading

    from pipelining import crank

    from shared.pipelines import driver
    now = dt.datetime.now(UTC)
    days = [_day(now) - dt.timedelta(days=n) for n in (2, 1)]
    sent: Counter = Counter()
    assert lake.api("PUT", "p", _put_body(lake, lateDeliveryMinutes=1, startFrom=f"{days[0]:%Y-%m-%d}"))[0] == 201
    for wave in range(4):
        records = [event(f"w{wave}-{i}", days[i % 2] + dt.timedelta(hours=wave, minutes=i)) for i in range(6)]
        lake.send(records)
        sent.update((f"{r['timestamp'][:10]}", r["name"]) for r in records)
        moment = now + dt.timedelta(minutes=2 * wave)
        for _ in range(4):
            threads = [threading.Thread(target=driver.tick, args=(moment,), kwargs={"app_id": lake.app.id})
                       for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            crank(lake.app.id)
    lake.run_pipelines(now + dt.timedelta(minutes=10))
    assert lake.delivered("p") == sent
    runs = lake.api("GET", "p/runs", params={"api-version": "2014-12-01", "$top": "100"})[1]["value"]
    assert [run["sequence"] for run in runs] == list(range(len(runs), 0, -1))


def test_a_pipeline_that_cannot_go_on_does_not_stop_the_others(lake, monkeypatch):
    from shared.pipelines import driver, planner
    now = dt.datetime.now(UTC)
    yesterday = _day(now) - dt.timedelta(days=1)
    lake.send([event("a", yesterday + dt.timedelta(hours=1))])
    for name in ("broken", "fine"):
        assert lake.api("PUT", name, _put_body(lake, startFrom=f"{yesterday:%Y-%m-%d}"))[0] == 201
    real_first_run = planner.first_run

    def failing_for_one(pipeline, periods, sequence):
        if pipeline.name == "broken":
            raise RuntimeError("its storage call failed")
        return real_first_run(pipeline, periods, sequence)

    monkeypatch.setattr(driver.planner, "first_run", failing_for_one)
    assert driver.tick(now, app_id=lake.app.id) == {"failed": 1, "firstRun": 1}
    from pipelining import crank
    crank(lake.app.id)
    assert lake.delivered("fine") == Counter({(f"{yesterday:%Y-%m-%d}", "a"): 1})
    assert lake.api("GET", "broken/runs")[1] == {"value": []}


def test_a_broken_export_schedules_stops_only_the_operators_pipelines(lake, settings_override):
    from shared.pipelines import driver
    from shared.platform import config
    now = dt.datetime.now(UTC)
    yesterday = _day(now) - dt.timedelta(days=1)
    assert lake.api("PUT", "p", _put_body(lake, startFrom=f"{yesterday:%Y-%m-%d}"))[0] == 201
    settings_override(**{config.SCHEDULES: "[not json"})
    assert driver.tick(now, app_id=lake.app.id) == {"firstRun": 1}
    from pipelining import crank
    crank(lake.app.id)
