"""Scheduled exports: one job per period whatever fires twice, catch-up after an outage, the settle delay;
and the whole chain through the local host: a scheduled export lands, its manifest is forwarded once, and a
webhook receives a signed POST, retried after a 500."""

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
from helpers import queue_exists, wait_for

import StartExport
from devhost.host import LocalHost
from sampledata import Plan, load, records
from shared.ingest import collect
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
    page = joblist.list_jobs(app_id, top=100)
    return sorted((job.scope.start_date.isoformat(), job.id) for job in page.jobs)


def test_one_job_per_period_across_two_firings_and_a_two_day_outage(schedule_app):
    app_id = schedule_app()
    first = dt.datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    created = schedules.create_due_jobs(first)
    assert [d for d, _ in scheduled(app_id)] == ["2026-03-07", "2026-03-08", "2026-03-09"]
    assert len(created) == 3
    assert schedules.create_due_jobs(first) == []  # the timer fires again: nothing new
    threads = [threading.Thread(target=schedules.create_due_jobs, args=(first + dt.timedelta(days=2),))
               for _ in range(3)]  # after a two-day outage, three instances fire at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    days = [d for d, _ in scheduled(app_id)]
    assert days == ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10", "2026-03-11"]
    job = joblist.list_jobs(app_id, top=100).jobs[0]
    assert job.schedule == "daily-events@2026-03-07T00:00:00+00:00" and job.export_format == "CsvBlob"
    assert job.description == "scheduled: daily-events"


def test_a_period_waits_for_its_settle_delay(schedule_app):
    app_id = schedule_app(settleMinutes=120)
    schedules.create_due_jobs(dt.datetime(2026, 3, 10, 1, 59, tzinfo=UTC))
    assert [d for d, _ in scheduled(app_id)][-1] == "2026-03-08"
    schedules.create_due_jobs(dt.datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    assert [d for d, _ in scheduled(app_id)][-1] == "2026-03-09"


def test_hourly_schedules_export_one_hour(schedule_app):
    app_id = schedule_app(cadence="hourly", settleMinutes=10)
    schedules.create_due_jobs(dt.datetime(2026, 3, 10, 5, 15, tzinfo=UTC))
    found = joblist.list_jobs(app_id, top=10).jobs
    assert [(j.scope.start_date.isoformat(), j.scope.hour) for j in found] == [("2026-03-10", 2), ("2026-03-10", 3),
                                                                  ("2026-03-10", 4)]


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


class Receiver:
    """A webhook on loopback that answers 500 to its first POST, then 200."""

    def __init__(self):
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(500 if len(receiver.requests) == 1 else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_scheduled_export_lands_and_is_forwarded_once_to_queue_and_webhook(app_env, schedule_app, names,
                                                                            settings_override):
    receiver = Receiver()
    queue = names.queue("routed")
    app_id = schedule_app(container="scheduled-exports")
    settings_override(**{config.FORWARD_ROUTES: json.dumps({"Event": [queue]}),
                         config.FORWARD_WEBHOOK_URL: receiver.url, config.FORWARD_WEBHOOK_SECRET: "s3cret",
                         config.SCHEDULE_MAX_CATCHUP: "1"})
    (due,) = schedules.load_schedules()[0].due_periods(dt.datetime.now(UTC), 1)
    plan = Plan(devices=5, days=1, last_day=due.date())
    load(app_id, plan)
    # One event certain to be in the period, whatever the generated data of that date holds.
    certain = {"type": "event", "deviceId": "sched-1", "name": "tick", "timestamp": f"{due.date()}T12:00:00.000Z"}
    assert collect.ingest(app_id, [certain])["accepted"] == 1
    want = len(expected.historical(list(records(plan)), "event", due.date(), due.date())) + 1
    host = LocalHost(REPO_ROOT, port=0, functions=["PollExport", "ExportWorker", "OnBlobCreated"]).start()
    try:
        StartExport.main(TimerRequest(past_due=False))
        StartExport.main(TimerRequest(past_due=True))
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
    assert job.state == jobs.SUCCEEDED
    bodies = [json.loads(base64.b64decode(m.content)) for m in messages]
    assert [(b["jobId"], b["name"]) for b in bodies] == [(job.id, f"Event/{job.id}/part-00000.csv.gz")]
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
    with caplog.at_level("ERROR", logger="shared.tasks.schedules"):
        assert schedules.create_due_jobs(dt.datetime.now(UTC)) == []
        assert schedules.create_due_jobs(dt.datetime.now(UTC)) == []
    reports = [record.getMessage() for record in caplog.records if doc["name"] in record.getMessage()]
    assert reports == [f"Schedule {doc['name']} names app {collection}/ghost, which is not registered: it creates no "
                       f"exports until the app is registered (make app COLLECTION={collection} APP=ghost)"]
    assert joblist.list_jobs(f"{collection}~ghost", top=10).jobs == []
    apps.register_app(collection, "ghost")
    assert len(schedules.create_due_jobs(dt.datetime.now(UTC))) == 7  # EXPORT_SCHEDULE_MAX_CATCHUP periods
