"""Listing under every order of the 2014-12-01 contract and under filters, page by page through nextLink;
cancelling a task at each point of its life, including a cancel racing the final commit."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import API_VERSION
from test_dead_destinations import every_blob
from test_export_api import api, follow  # noqa: F401 - the fixture
from test_export_faults import Driver, assert_exact

import PollExport
from shared.export import committer, engine, exportformats
from shared.platform.errors import PermanentJobError, TaskEnded
from shared.tasks import jobs, orchestration, parts

ORDERS = ("taskId", "errorDetails", "dateCreated", "taskStatus")


@pytest.fixture
def tasks(api):  # noqa: F811
    """Seven tasks: three Queued, one Started, three Failed with different errorDetails (one cancelled)."""
    created = [api.call("POST", "tags" if i % 2 else "tokens", body=api.body("tags" if i % 2 else "tokens"))[1]["id"]
               for i in range(7)]
    app_id = f"{api.collection}~{api.app}"
    for job_id, reason in ((created[1], "b: the destination container does not exist"),
                           (created[4], "a: the SAS expired")):
        orchestration.fail(app_id, job_id, reason)
    started = jobs.get_job(app_id, created[5])
    started.move_to(jobs.STARTED)
    jobs.save_job(started)
    assert api.call("POST", f"{created[6]}/cancel")[0].status_code == 200
    _, everything = api.call("GET", params={"api-version": API_VERSION, "$top": "40"})
    assert [task["id"] for task in everything["value"]] == created
    return everything["value"]


def sort_key(task, order):
    field = {"taskStatus": "state"}.get(order, order if order != "taskId" else "id")
    return task.get(field) or "", task["id"]


@pytest.mark.parametrize("direction", ["", " asc", " desc"])
@pytest.mark.parametrize("order", ORDERS)
def test_every_order_of_the_contract_pages_consistently(api, tasks, order, direction):  # noqa: F811
    seen, pages = follow(api, {"api-version": API_VERSION, "$top": "2", "$orderby": order + direction})
    expected = sorted(tasks, key=lambda task: sort_key(task, order), reverse=direction == " desc")
    assert seen == [task["id"] for task in expected]
    assert pages == 4


@pytest.mark.parametrize("expression, wanted", [
    ("state eq 'Failed'", lambda t: t["state"] == "Failed"),
    ("State EQ 'queued'", lambda t: t["state"] == "Queued"),
    ("exportType eq 'Token' and state eq 'Queued'", lambda t: t["exportType"] == "Token" and t["state"] == "Queued"),
    ("exportType eq 'Event'", lambda t: False),
])
def test_filters_narrow_the_list_and_page_under_any_order(api, tasks, expression, wanted):  # noqa: F811
    for order in ("taskId", "taskStatus desc", "dateCreated desc"):
        seen, _ = follow(api, {"api-version": API_VERSION, "$top": "1", "$filter": expression, "$orderby": order})
        prop, descending = order.split()[0], order.endswith("desc")
        expected = sorted((task for task in tasks if wanted(task)), key=lambda task: sort_key(task, prop),
                          reverse=descending)
        assert seen == [task["id"] for task in expected], (expression, order)


def test_date_created_bounds_filter_by_time(api, tasks):  # noqa: F811
    low, high = tasks[2]["dateCreated"], tasks[4]["dateCreated"]
    seen, _ = follow(api, {"api-version": API_VERSION, "$top": "2",
                           "$filter": f"dateCreated ge {low} and dateCreated le '{high}'"})
    assert seen == [task["id"] for task in tasks if low <= task["dateCreated"] <= high]


@pytest.mark.parametrize("expression, message", [
    ("name eq 'x'", "cannot filter on 'name'; the fields are state, exportType, dateCreated"),
    ("state eq 'Done'", "compares state with 'Done', which is none of Queued, Started, Succeeded, Failed"),
    ("state eq Failed", "quote the value"),
    ("state ne 'Failed'", "compares state with 'ne'; state takes eq"),
    ("state eq 'Failed' or state eq 'Queued'", "only clauses joined with 'and' (no 'or'"),
    ("(state eq 'Failed')", "no parentheses"),
    ("dateCreated ge yesterday", "give an RFC 3339 date-time with a zone"),
    ("state eq 'Failed' and", "has an empty clause"),
])
def test_a_filter_outside_the_supported_subset_is_a_400_naming_it(api, expression, message):  # noqa: F811
    response, payload = api.call("GET", params={"api-version": API_VERSION, "$filter": expression})
    assert response.status_code == 400
    assert payload["error"]["code"] == "InvalidParameter"
    assert payload["error"]["message"].startswith("$filter ") and message in payload["error"]["message"]


def test_cancelling_a_queued_task_fails_it_saying_when_and_a_second_cancel_is_a_409(api):  # noqa: F811
    _, task = api.call("POST", "tags", body=api.body("tags"))
    response, cancelled = api.call("POST", f"{task['id']}/cancel")
    assert response.status_code == 200
    assert cancelled["state"] == "Failed" and cancelled["dateCompleted"]
    assert cancelled["errorDetails"] == (f"cancelled at {cancelled['dateCompleted']} by a request with the app's "
                                         f"export key; nothing was committed")
    response, refused = api.call("POST", f"{task['id']}/cancel")
    assert response.status_code == 409
    assert refused["error"] == {"code": "ExportTaskFinished", "message": (
        f"export task {task['id']} already ended Failed at {cancelled['dateCompleted']}; only a Queued or Started "
        f"task can be cancelled")}
    assert api.call("POST", "00000000-0000-7000-8000-000000000000/cancel")[0].status_code == 404
    response, _ = api.call("GET", f"{task['id']}/cancel")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"


@pytest.fixture
def driver(app_env, names):
    return Driver(app_env, names)


def test_a_started_task_cancelled_mid_part_stops_at_its_next_block_and_commits_nothing(driver, monkeypatch):
    monkeypatch.setattr(exportformats, "BLOCK_BYTES", 512)  # many blocks in the part
    monkeypatch.setattr(engine, "CANCEL_CHECK_SECONDS", 0)
    staged, refused, cancelled_at = [], [], []
    lock = threading.Lock()
    real_stage = engine.stage_to

    def watched_stage(job_, item, still_running):
        stage = real_stage(job_, item, still_running)

        def stage_one(identifier, data):
            began = time.monotonic()
            try:
                stage(identifier, data)
            except PermanentJobError:
                refused.append(began)
                raise
            with lock:
                staged.append(began)
                cancel_now = len(staged) == 2
            if cancel_now:
                orchestration.cancel(job_.app_id, job_.job_id)
                cancelled_at.append(time.monotonic())

        return stage_one

    monkeypatch.setattr(engine, "stage_to", watched_stage)
    job = driver.create()
    final = driver.run(job)
    assert final.state == jobs.FAILED and final.error_details.startswith("cancelled at ")
    # Blocks that began before the cancel was saved may finish (uploads run 4 at a time); none that began
    # after it is written, and the part stops at the first such block.
    (cancel_saved,) = cancelled_at
    assert len(staged) >= 2 and all(began < cancel_saved for began in staged)
    assert refused, "a block after the cancel was refused"
    (part,) = parts.list_parts(job.id)
    assert part.state is parts.PartState.FAILED and part.reason == "the export ended while part 0 ran"
    assert [name for name in every_blob(driver) if not name.endswith(".write-check")] == [
        f"Event/{job.id}/part-00000.csv.gz"]  # uncommitted blocks only: no committed file, no manifest
    assert driver.blobs() == {}


def test_a_cancel_that_arrives_before_the_commit_wins_and_nothing_is_committed(driver):
    job = driver.create()
    driver.deliver(orchestration.POLL_QUEUE, PollExport.main, driver.take(orchestration.POLL_QUEUE)[0])
    driver.run_work_only()
    orchestration.cancel(job.app_id, job.id)
    final = driver.run(job)
    assert final.state == jobs.FAILED and final.error_details.startswith("cancelled at ")
    assert driver.blobs() == {}


def test_a_cancel_that_arrives_during_the_commit_is_refused_and_the_export_succeeds(driver, monkeypatch):
    job = driver.create()
    refused = []
    real_commit = committer.commit

    def commit_with_a_cancel_arriving(job_, done):
        with pytest.raises(TaskEnded) as conflict:
            orchestration.cancel(job_.app_id, job_.job_id)
        refused.append(conflict.value)
        return real_commit(job_, done)

    monkeypatch.setattr(committer, "commit", commit_with_a_cancel_arriving)
    final = driver.run(job)
    assert [error.code for error in refused] == ["ExportTaskCommitting"]
    assert_exact(driver, final)
