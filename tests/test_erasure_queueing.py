"""An erasure task is queued before its row is written: a request whose message could not be queued leaves no
task (the client is answered 503 and asks again), so no task is ever left Queued without a message; and a
message that comes before its task's row is tried again, not dropped."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ServiceRequestError
from erasing import crank_erasures
from test_erasure import BackendApp

from shared.erasure import service, store
from shared.platform import storage
from shared.platform.errors import ErasureNotFound


def test_a_request_whose_message_cannot_be_queued_leaves_no_task(app_env, monkeypatch):
    backend = BackendApp()
    device = sorted({r["deviceId"] for r in backend.sent})[0]

    def refused(*args, **kwargs):
        raise ServiceRequestError("the queue's storage is down")

    with monkeypatch.context() as patched:
        patched.setattr(service, "_queue", refused)
        status, answer, _ = backend.erase({"deviceIds": [device]})
    assert status == 503, answer
    assert backend.get()[1]["value"] == [] and store.pending_task_ids(backend.id) == []
    # and the ids it was given are not kept
    assert not list(storage.container(store.WORK_CONTAINER).list_blobs(name_starts_with=f"{backend.id}/"))

    status, task, _ = backend.erase({"deviceIds": [device]})  # asked again, it is taken and carried out
    assert status == 202, task
    crank_erasures(backend.id, task["id"])
    assert [each["state"] for each in backend.get()[1]["value"]] == ["Succeeded"]


def test_a_message_that_comes_before_its_task_is_tried_again_then_dropped(app_env):
    message = service.EraseMessage("nobody~none", "not-written-yet")
    with pytest.raises(ErasureNotFound):
        service.work_or_retry(message, last_try=False)
    store.save_work("nobody~none", "not-written-yet", store.Work(("d1",), (), {}))
    service.work_or_retry(message, last_try=True)  # dropped, with a warning, and its ids with it
    assert store.read_work("nobody~none", "not-written-yet") is None
