"""Scheduled exports, the operator's pipelines: one run per period whatever fires twice, catch-up after an outage,
the settle delay; and the whole chain through the local host: a scheduled run lands, its manifest is forwarded
once, and a webhook receives a signed POST, retried after a 500."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import expected
import pytest
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient
from conftest import REPO_ROOT
from helpers import Receiver, queue_exists, wait_for
from pipelining import run_pipelines

import RunPipelines
from devhost.host import LocalHost
from sampledata import Plan, load, records
from shared.ingest import collect
from shared.pipelines import driver
from shared.platform import apps, config
from shared.tasks import joblist, jobs, schedules

UTC = dt.UTC


@pytest.fixture
def schedule_app(settings_override, names):
    collection = f"s{names.token}"
    container = names.container("sched")
    apps.register_app(collection, "game")

    def configure(**overrides):
        doc = {"name": "daily-events", "app": f"{collection}/game", "route": "events", "exportFormat": "CsvBlob",
               "cadence": "daily", "settleMinutes": 60, "container": container}
        doc.update(overrides)
        settings_override(**{config.SCHEDULES: json.dumps([doc]), config.SCHEDULE_MAX_CATCHUP: "3"})
        return f"{collection}~game"

    return configure


def scheduled(app_id):
    """The periods the app's runs delivered, in the order of the runs (a run catching up delivers several)."""
    found = sorted(joblist.list_jobs(app_id, top=100).jobs, key=lambda job: job.run.sequence)
    return [period for job in found for period in job.run.periods]


def test_a_schedule_is_a_pipeline_that_catches_up_once_whatever_fires_and_after_an_outage(schedule_app):
    app_id = schedule_app()
    first = dt.datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    threads = [threading.Thread(target=driver.tick, args=(first,), kwargs={"app_id": app_id}) for _ in range(3)]
    for thread in threads:  # three instances fire at once
        thread.start()
    for thread in threads:
        thread.join()
    run_pipelines(app_id, first)
    assert scheduled(app_id) == ["2026-03-07", "2026-03-08", "2026-03-09"]
    run_pipelines(app_id, first)  # the timer fires again: nothing new
    assert len(scheduled(app_id)) == 3
    run_pipelines(app_id, first + dt.timedelta(days=2))  # after a two-day outage
    assert scheduled(app_id) == ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10", "2026-03-11"]
    job = min(joblist.list_jobs(app_id, top=100).jobs, key=lambda job: job.run.sequence)
    assert job.export_format == "CsvBlob" and job.state == jobs.SUCCEEDED
    assert job.description == "pipeline daily-events: first delivery of 2026-03-07, 2026-03-08, 2026-03-09"
    assert job.run is not None and job.run.pipeline == "daily-events"
    assert job.run.periods == ("2026-03-07", "2026-03-08", "2026-03-09")


def test_a_period_waits_for_its_settle_delay(schedule_app):
    app_id = schedule_app(settleMinutes=120)
    run_pipelines(app_id, dt.datetime(2026, 3, 10, 1, 59, tzinfo=UTC))
    assert scheduled(app_id)[-1] == "2026-03-08"
    run_pipelines(app_id, dt.datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    assert scheduled(app_id)[-1] == "2026-03-09"


def test_hourly_schedules_export_one_hour(schedule_app):
    app_id = schedule_app(cadence="hourly", settleMinutes=10)
    run_pipelines(app_id, dt.datetime(2026, 3, 10, 5, 15, tzinfo=UTC))
    assert scheduled(app_id) == ["2026-03-10T02", "2026-03-10T03", "2026-03-10T04"]


@pytest.mark.parametrize("doc, message", [
    ({"name": "Bad Name"}, "name must be"),
    ({"app": "nocollection"}, "app must be"),
    ({"route": "feedbackByDate"}, "route must be one of"),
    ({"cadence": "weekly"}, "cadence must be daily or hourly"),
    ({"cadence": "hourly", "route": "sessions"}, "hourly schedules are for"),
    ({"settleMinutes": -5}, "settleMinutes"),
    ({"colour": "red"}, "colour is not a schedule field"),
])
def test_a_bad_schedule_fails_with_the_setting_and_field(schedule_app, doc, message):
    schedule_app(**doc)
    with pytest.raises(config.ConfigError, match=message) as raised:
        schedules.load_schedules()
    assert "EXPORT_SCHEDULES" in str(raised.value)


def test_a_scheduled_export_lands_and_is_forwarded_once_to_queue_and_webhook(app_env, schedule_app, names,
                                                                            settings_override):
    receiver = Receiver()
    queue = names.queue("routed")
    app_id = schedule_app(container="scheduled-exports")
    settings_override(**{config.FORWARD_ROUTES: json.dumps({"Event": [queue]}),
                         config.FORWARD_WEBHOOK_URL: receiver.url, config.FORWARD_WEBHOOK_SECRET: "s3cret",
                         config.SCHEDULE_MAX_CATCHUP: "1"})
    due = dt.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
    plan = Plan(devices=5, days=1, last_day=due.date())
    load(app_id, plan)
    # One event certain to be in the period, whatever the generated data of that date holds.
    certain = {"type": "event", "deviceId": "sched-1", "name": "tick", "timestamp": f"{due.date()}T12:00:00.000Z"}
    assert collect.ingest(app_id, [certain])["accepted"] == 1
    want = len(expected.historical(list(records(plan)), "event", due.date(), due.date())) + 1
    host = LocalHost(REPO_ROOT, port=0, functions=["PollExport", "ExportWorker", "OnBlobCreated"]).start()
    try:
        RunPipelines.main(TimerRequest(past_due=False))
        RunPipelines.main(TimerRequest(past_due=True))
        client = QueueClient.from_connection_string(app_env.connection_string, queue)
        def peek():
            return list(client.peek_messages(max_messages=32)) if queue_exists(client) else []

        messages = wait_for(lambda: peek(), 60)
        assert wait_for(lambda: len(receiver.requests) >= 2, 30)
        import time
        time.sleep(2)  # a second forwarding, if there were one, would have arrived by now
        messages = peek()
    finally:
        host.stop()
        receiver.close()
    (job,) = joblist.list_jobs(app_id, top=10).jobs
    assert job.state == jobs.SUCCEEDED and job.run is not None
    bodies = [json.loads(base64.b64decode(m.content)) for m in messages]
    assert [(b["jobId"], b["name"]) for b in bodies] == [
        (job.id, f"daily-events/{due:%Y-%m-%d}/{job.run.run}-part-00000.csv.gz")]
    assert bodies[0]["pipeline"] == {"name": "daily-events", "run": job.run.run, "sequence": 1,
                                     "periods": [f"{due:%Y-%m-%d}"], "late": False}
    assert bodies[0]["records"] == job.record_count == want
    assert len(receiver.requests) == 2, "one 500, then the retried POST"
    for headers, body in receiver.requests:
        signature = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-Engagement-Export-Signature"] == signature
        assert json.loads(body) == bodies[0]


def test_a_webhook_that_redirects_is_not_followed_and_the_message_goes_to_poison(app_env, names, settings_override):
    from shared.export import forwarding

    target = Receiver()

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(307)
            self.send_header("Location", target.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    redirecting = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirecting.serve_forever, daemon=True).start()
    default_queue = names.queue("fwd")
    try:
        settings_override(**{config.FORWARD_WEBHOOK_URL: f"http://127.0.0.1:{redirecting.server_address[1]}/hook",
                             config.FORWARD_WEBHOOK_SECRET: "s3cret", config.FORWARD_DEFAULT_QUEUE: default_queue})
        forwarding._post_webhook(json.dumps({"jobId": "j", "name": "n"}))
    finally:
        redirecting.shutdown()
        redirecting.server_close()
        target.close()
    assert target.requests == []
    poison = QueueClient.from_connection_string(app_env.connection_string, f"{default_queue}-poison")
    (message,) = poison.peek_messages()
    assert json.loads(base64.b64decode(message.content))["reason"] == "webhook: HTTP 307 (a redirect, not followed)"


def test_a_schedule_of_an_unregistered_app_is_reported_once_by_name_and_creates_nothing(settings_override, names,
                                                                                         caplog):
    collection = f"u{names.token}"
    doc = {"name": f"orphan-{names.token}", "app": f"{collection}/ghost", "route": "events", "cadence": "daily"}
    settings_override(**{config.SCHEDULES: json.dumps([doc])})
    with caplog.at_level("ERROR", logger="shared.pipelines.driver"):
        driver.tick(dt.datetime.now(UTC), app_id=f"{collection}~ghost")
        driver.tick(dt.datetime.now(UTC), app_id=f"{collection}~ghost")
    reports = [record.getMessage() for record in caplog.records if doc["name"] in record.getMessage()]
    assert reports == [f"Schedule {doc['name']} names app {collection}/ghost, which is not registered: it creates no "
                       f"exports until the app is registered (make app COLLECTION={collection} APP=ghost)"]
    assert joblist.list_jobs(f"{collection}~ghost", top=10).jobs == []
    apps.register_app(collection, "ghost")
    run_pipelines(f"{collection}~ghost", dt.datetime.now(UTC))
    assert len(scheduled(f"{collection}~ghost")) == 7  # EXPORT_SCHEDULE_MAX_CATCHUP periods
