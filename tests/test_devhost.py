"""The local host behaves as the Functions host does, on a small app of its own (tests/apps/semantics)."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
import requests
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient
from helpers import queue_exists, wait_for

from devhost.host import LocalHost

APP = os.path.join(os.path.dirname(__file__), "apps", "semantics")


@pytest.fixture
def semantics(app_env, names, monkeypatch):
    import sys
    monkeypatch.setenv("FAILING_QUEUE", names.queue("failing"))
    monkeypatch.setenv("ECHO_QUEUE", names.queue("echo"))
    monkeypatch.setenv("SLEEPY_QUEUE", names.queue("sleepy"))
    monkeypatch.setenv("WATCHED_CONTAINER", names.container("watched"))
    hosts = []

    def start(**kwargs):
        host = LocalHost(APP, port=0, host_id=f"test-{names.token}", **kwargs).start()
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.stop()
    sys.modules.pop("semantics_recorder", None)


def recorder():
    import semantics_recorder
    return semantics_recorder


def queue_client(azurite, name):
    return QueueClient.from_connection_string(azurite.connection_string, name)


def test_http_route_with_parameters_answers(semantics):
    host = semantics(functions=["Greet"])
    response = requests.post(f"{host.base_url}/api/GREET/ada/3?x=1", data=b"payload", timeout=10)
    assert response.status_code == 201
    assert response.headers["X-Who"] == "ada"
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"greeting": "hello ada hello ada hello ada", "method": "POST",
                               "query": {"x": "1"}, "body": "payload"}
    assert requests.get(f"{host.base_url}/api/greet/bob", timeout=10).json()["greeting"] == "hello bob"


def test_http_unknown_route_is_404_and_wrong_method_is_405(semantics):
    host = semantics(functions=["Greet"])
    assert requests.get(f"{host.base_url}/api/greet/ada/notanumber", timeout=10).status_code == 404
    assert requests.get(f"{host.base_url}/greet/ada", timeout=10).status_code == 404  # prefix is required
    response = requests.delete(f"{host.base_url}/api/greet/ada", timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"


def test_failing_queue_message_goes_to_poison_after_max_dequeue_count(semantics, app_env, names):
    host = semantics(functions=["AlwaysFails"])
    source = queue_client(app_env, names.queue("failing"))
    assert wait_for(lambda: queue_exists(source))
    source.send_message(base64.b64encode(b"doomed").decode())
    poison = queue_client(app_env, names.queue("failing") + "-poison")
    peeked = wait_for(lambda: _peek(poison))
    assert [base64.b64decode(m.content) for m in peeked] == [b"doomed"]
    calls = recorder().of("AlwaysFails")
    assert [c["dequeue_count"] for c in calls] == [1, 2, 3]  # host.json maxDequeueCount is 3
    assert all(c["body"] == "doomed" for c in calls)
    assert source.get_queue_properties().approximate_message_count == 0
    time.sleep(1.5)
    assert len(recorder().of("AlwaysFails")) == 3, "a poisoned message must not run again"
    assert host


def _peek(client):
    try:
        return client.peek_messages(max_messages=5)
    except Exception:
        return []


def test_queue_message_is_base64_decoded_and_deleted_after_success(semantics, app_env, names):
    semantics(functions=["Echo"])
    source = queue_client(app_env, names.queue("echo"))
    assert wait_for(lambda: queue_exists(source))
    for text in ("one", "two", "drei ü"):
        source.send_message(base64.b64encode(text.encode()).decode())
    wait_for(lambda: len(recorder().of("Echo")) == 3)
    assert sorted(c["body"] for c in recorder().of("Echo")) == ["drei ü", "one", "two"]
    assert all(c["dequeue_count"] == 1 for c in recorder().of("Echo"))
    assert wait_for(lambda: source.get_queue_properties().approximate_message_count == 0)


def test_a_message_sent_by_a_function_of_the_host_is_picked_up_at_once_not_after_the_backoff(
        semantics, app_env, names):
    import dataclasses

    from shared.platform import storage

    host = semantics(functions=["Echo"])
    (listener,) = host.listeners
    listener.options = dataclasses.replace(listener.options, max_polling_interval=30.0)
    assert wait_for(lambda: queue_exists(queue_client(app_env, names.queue("echo"))))
    time.sleep(3.5)  # the empty queue's backoff has grown to 3.2 s or more
    sent = time.monotonic()
    storage.send_message(names.queue("echo"), "woken")
    assert wait_for(lambda: recorder().of("Echo"), timeout=10)
    assert time.monotonic() - sent < 1.0
    assert [c["body"] for c in recorder().of("Echo")] == ["woken"]


def test_message_that_is_not_base64_is_poisoned_not_lost(semantics, app_env, names):
    semantics(functions=["Echo"])
    source = queue_client(app_env, names.queue("echo"))
    assert wait_for(lambda: queue_exists(source))
    source.send_message("not base64 at all!")
    poison = queue_client(app_env, names.queue("echo") + "-poison")
    peeked = wait_for(lambda: _peek(poison))
    assert [m.content for m in peeked] == ["not base64 at all!"]
    assert recorder().of("Echo") == []


@pytest.mark.parametrize("function, other", [("OnBlob", "OnBlobEvents"), ("OnBlobEvents", "OnBlob")],
                         ids=["polling-source", "event-grid-source-emulated"])
def test_blob_fires_once_also_across_a_host_restart(semantics, app_env, names, function, other):
    container = BlobServiceClient.from_connection_string(app_env.connection_string).create_container(
        names.container("watched"))
    container.upload_blob("in/first.txt", b"alpha")
    container.upload_blob("out/ignored.txt", b"not watched")
    container.upload_blob("in/other.json", b"not matching")
    first = semantics(functions=[function])
    assert wait_for(lambda: len(recorder().of(function)) == 1)
    time.sleep(1.5)
    first.stop()
    container.upload_blob("in/second.txt", b"beta")
    semantics(functions=[function])
    assert wait_for(lambda: len(recorder().of(function)) == 2)
    time.sleep(1.5)
    calls = recorder().of(function)
    expected = [(f"{names.container('watched')}/in/first.txt", "alpha", 5),
                (f"{names.container('watched')}/in/second.txt", "beta", 4)]
    assert [(c["name"], c["data"], c["length"]) for c in calls] == expected
    assert recorder().of(other) == []  # only the function started runs


@pytest.mark.parametrize("function", ["OnBlob", "OnBlobEvents"], ids=["polling-source", "event-grid-source-emulated"])
def test_a_blob_source_outlives_storage_that_stops_answering(semantics, app_env, names, function):
    from azure.core.exceptions import ServiceRequestError

    container = BlobServiceClient.from_connection_string(app_env.connection_string).create_container(
        names.container("watched"))
    host = semantics(functions=[function])
    (listener,) = host.listeners
    client = listener.runner.container_client
    real_list = client.list_blobs
    failures = []

    def unreachable(*args, **kwargs):
        if len(failures) < 3:
            failures.append(1)
            raise ServiceRequestError("connection refused")
        return real_list(*args, **kwargs)

    client.list_blobs = unreachable
    assert wait_for(lambda: len(failures) == 3)
    container.upload_blob("in/after.txt", b"delta")
    assert wait_for(lambda: [c["data"] for c in recorder().of(function)] == ["delta"])
    assert listener.is_alive()


def _deliver(host, events, function="Host.Functions.OnBlobEvents", event_type="Notification"):
    return requests.post(f"{host.base_url}/runtime/webhooks/blobs", params={"functionName": function, "code": "k"},
                         data=json.dumps(events), headers={"aeg-event-type": event_type}, timeout=30)


def _blob_created(container, name):
    return {"id": name, "eventType": "Microsoft.Storage.BlobCreated", "eventTime": "2026-11-24T00:00:00Z",
            "subject": f"/blobServices/default/containers/{container}/blobs/{name}", "dataVersion": "",
            "metadataVersion": "1", "data": {"api": "PutBlob", "blobType": "BlockBlob"}}


def test_the_blobs_webhook_validates_its_subscription_and_runs_each_event_once(semantics, app_env, names):
    watched = names.container("watched")
    container = BlobServiceClient.from_connection_string(app_env.connection_string).create_container(watched)
    container.upload_blob("in/posted.txt", b"gamma")
    container.upload_blob("in/skipped.json", b"outside the path")
    host = semantics(functions=["OnBlobEvents"], emulate_event_grid=False)
    handshake = _deliver(host, [{"id": "v", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                                 "subject": "", "data": {"validationCode": "code-123"}}],
                         event_type="SubscriptionValidation")
    assert (handshake.status_code, handshake.json()) == (200, {"validationResponse": "code-123"})
    time.sleep(1.0)
    assert recorder().of("OnBlobEvents") == []  # nothing runs until an event says so
    for _ in range(2):  # Event Grid delivers at least once
        response = _deliver(host, [_blob_created(watched, "in/posted.txt"), _blob_created(watched, "in/skipped.json"),
                                   _blob_created("elsewhere", "in/posted.txt")])
        assert response.status_code == 200
    assert [(c["name"], c["data"]) for c in recorder().of("OnBlobEvents")] == [(f"{watched}/in/posted.txt", "gamma")]
    assert _deliver(host, [_blob_created(watched, "in/posted.txt")], function="Host.Functions.Nope").status_code == 404
    assert _deliver(host, {"not": "a list"}).status_code == 400
    odd = _deliver(host, [{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": ["x"]}],
                   event_type="SubscriptionValidation")
    assert (odd.status_code, odd.json()) == (200, {"validationResponse": None})  # answered, not dropped


def test_an_event_whose_function_fails_is_refused_until_the_blob_is_poisoned(semantics, app_env, names):
    watched = names.container("watched")
    container = BlobServiceClient.from_connection_string(app_env.connection_string).create_container(watched)
    container.upload_blob("in/bad.txt", b"fail")
    host = semantics(functions=["OnBlobEvents"], emulate_event_grid=False)
    statuses = [_deliver(host, [_blob_created(watched, "in/bad.txt")]).status_code for _ in range(4)]
    assert statuses == [500, 500, 200, 200]  # maxDequeueCount is 3 in the test app's host.json
    assert len(recorder().of("OnBlobEvents")) == 3
    poison = queue_client(app_env, "webjobs-blobtrigger-poison")
    reported = [json.loads(base64.b64decode(m.content)) for m in poison.peek_messages(max_messages=32)]
    ours = [(r["FunctionId"], r["BlobName"]) for r in reported if r.get("ContainerName") == watched]
    assert ours == [("OnBlobEvents", "in/bad.txt")]


def test_timer_with_run_on_startup_fires_at_start(semantics):
    semantics(functions=["Startup"])
    calls = wait_for(lambda: recorder().of("Startup"))
    assert calls == [{"function": "Startup", "past_due": False}]


def test_stop_waits_out_its_grace_then_leaves_a_running_message_to_its_retry(semantics, app_env, names):
    host = semantics(functions=["Sleepy"])
    queue = queue_client(app_env, names.queue("sleepy"))
    assert wait_for(lambda: queue_exists(queue))  # the listener creates its queue on its own thread
    queue.send_message(base64.b64encode(b"hold").decode())
    assert wait_for(lambda: recorder().of("Sleepy"))
    try:
        started = time.monotonic()
        assert host.stop(grace_seconds=1) == ["Sleepy"]
        assert time.monotonic() - started < 5
        # Still leased by the abandoned invocation, not deleted: it comes back when the lease lapses.
        assert queue.get_queue_properties().approximate_message_count == 1
    finally:
        recorder().release.set()


def test_stop_returns_at_once_when_nothing_runs(semantics):
    host = semantics(functions=["Echo", "Startup"])
    assert wait_for(lambda: recorder().of("Startup"))
    started = time.monotonic()
    assert host.stop(grace_seconds=30) == []
    assert time.monotonic() - started < 2


def test_a_function_name_the_app_does_not_have_is_refused(semantics):
    from devhost.appmodel import AppLoadError
    with pytest.raises(AppLoadError, match="the app has no function named Nope .it has AlwaysFails, Echo, "):
        semantics(functions=["Echo", "Nope"])


def test_serve_prints_ready_answers_and_stops_cleanly_on_sigterm(app_env):
    import os
    import signal
    import subprocess
    import sys

    from conftest import REPO_ROOT

    from devhost.azurite import free_port

    port = free_port()
    # Only Health: the app's other functions would take up work other tests left in the session's storage.
    process = subprocess.Popen([sys.executable, "-m", "devhost", "serve", "--port", str(port),
                                "--functions", "Health"], cwd=REPO_ROOT,
                               env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = process.stdout.readline()
        assert ready.startswith(f"Local host ready at http://127.0.0.1:{port} (Azurite already running")
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["status"] == "healthy"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert process.stdout.read().strip() == "Local host stopped"
    finally:
        if process.poll() is None:
            process.kill()


def test_a_timer_occurrence_missed_while_the_host_was_down_fires_at_start_as_past_due(semantics, app_env, names):
    import datetime as dt
    import json as json_module

    hosts = BlobServiceClient.from_connection_string(app_env.connection_string).get_container_client(
        "azure-webjobs-hosts")
    if not hosts.exists():
        hosts.create_container()
    status = hosts.get_blob_client(f"timers/test-{names.token}/Missed/status")
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    status.upload_blob(json_module.dumps({"Last": None, "Next": yesterday.isoformat(),
                                         "LastUpdated": yesterday.isoformat()}), overwrite=True)
    semantics(functions=["Missed"])
    assert wait_for(lambda: recorder().of("Missed")) == [{"function": "Missed", "past_due": True}]

    def next_due():
        return dt.datetime.fromisoformat(json_module.loads(status.download_blob().readall())["Next"])

    # As the Functions host does, the status is written once the invocation has returned: it may lag the
    # recorder by a moment (reading it at once made this test fail now and then).
    assert wait_for(lambda: next_due() > dt.datetime.now(dt.UTC))
    time.sleep(1)
    assert len(recorder().of("Missed")) == 1


@pytest.mark.parametrize("arguments, message", [
    (["--functions", "Nope"],
     "The app cannot be loaded: the app has no function named Nope (it has ApplyRetention, Apps, "),
    (["--grace-seconds", "-1"], "argument --grace-seconds: must be a number of seconds, 0 or more, not '-1'"),
])
def test_serve_refuses_bad_arguments_with_what_was_wrong(app_env, arguments, message):
    import subprocess
    import sys

    from conftest import REPO_ROOT

    from devhost.azurite import free_port

    finished = subprocess.run([sys.executable, "-m", "devhost", "serve", "--port", str(free_port()), *arguments],
                              cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2
    assert message in finished.stderr
