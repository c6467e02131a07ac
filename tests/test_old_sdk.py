"""A real old client: the retired service's generated Node SDK (azure-arm-mobileengagement, from npm, pinned in
package.json) against the local host, changing only its base URL and bearer key. It creates a task, pages the
list with listNext and reads every task back, and a list holding a Device task (an extension of the
contract's exportType enum) still reads: the SDK passes unknown enum values through. Signed in as Azure clients
were, with Entra ID access tokens (of a local issuer) in ms-rest-azure's TokenCredentials, it creates and reads a
task and lists the apps with apps.list."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
import requests
from conftest import REPO_ROOT
from helpers import API_VERSION, app_path, container_sas_url, local_host

from shared.platform import apps, grants
from shared.tasks import orchestration

SCRIPT = os.path.join(REPO_ROOT, "tests", "sdk", "old_client.js")
TOKEN_SCRIPT = os.path.join(REPO_ROOT, "tests", "sdk", "token_client.js")


@pytest.fixture
def host(app_env):
    with local_host("ExportTasks", "Apps") as running:
        yield running


@pytest.mark.parametrize("orderby", ["taskId", "taskStatus desc"])
def test_the_retired_node_sdk_creates_pages_and_reads_tasks_including_a_device_task(app_env, host, names, orderby):
    collection = f"sdk-{names.token}"
    keys = apps.register_app(collection, "game")
    container = container_sas_url(app_env, names.container("sdk"))
    base = f"{host.base_url}{app_path(collection, 'game')}/exportTasks"
    headers = {"Authorization": f"Bearer {keys.export_key}"}
    device_task = requests.post(f"{base}/devices", params={"api-version": API_VERSION}, headers=headers, timeout=30,
                                json={"containerUrl": container}).json()
    failed_task = requests.post(f"{base}/tokens", params={"api-version": API_VERSION}, headers=headers, timeout=30,
                                json={"containerUrl": container, "exportFormat": "JsonBlob"}).json()
    orchestration.fail(f"{collection}~game", failed_task["id"], "the SAS expired")
    finished = subprocess.run(["node", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env={
        **os.environ, "BASE_URL": host.base_url, "EXPORT_KEY": keys.export_key, "RESOURCE_GROUP": "rg-1",
        "COLLECTION": collection, "APP": "game", "CONTAINER_URL": container, "ORDERBY": orderby})
    assert finished.returncode == 0, finished.stderr
    seen = json.loads(finished.stdout)
    created = seen["created"]
    assert (created["exportType"], created["state"], created["description"]) == ("Tag", "Queued", "from the old SDK")
    listed = seen["listed"]
    assert {task["id"]: task["exportType"] for task in listed} == {
        device_task["id"]: "Device", failed_task["id"]: "Token", created["id"]: "Tag"}
    if orderby == "taskId":
        assert [task["id"] for task in listed] == [device_task["id"], failed_task["id"], created["id"]]
    else:  # state names descending (Succeeded, Started, Queued, Failed), ties by task id descending
        assert [task["state"] for task in listed] == ["Queued", "Queued", "Failed"]
    (failed,) = [task for task in listed if task["state"] == "Failed"]
    assert failed["errorDetails"] == "the SAS expired" and failed["dateCompleted"]
    assert seen["fetched"] == listed


def test_the_retired_node_sdk_signs_in_with_entra_tokens_creates_reads_and_lists_apps(app_env, host, tokens, names):
    collection = f"sdkt-{names.token}"
    for app in ("game", "chat"):
        apps.register_app(collection, app)
    reader = str(uuid.uuid4())
    grants.put_grant(reader, collection, "game", None)
    finished = subprocess.run(["node", TOKEN_SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env={
        **os.environ, "BASE_URL": host.base_url, "RESOURCE_GROUP": "rg-1", "COLLECTION": collection, "APP": "game",
        "CONTAINER_URL": container_sas_url(app_env, names.container("sdkt")),
        "TASKS_TOKEN": tokens.token(roles=[grants.EXPORT_READ, grants.EXPORT_WRITE], oid=reader),
        "ADMIN_TOKEN": tokens.token(roles=[grants.APPS_ADMIN])})
    assert finished.returncode == 0, finished.stderr
    seen = json.loads(finished.stdout)
    created = seen["created"]
    assert (created["exportType"], created["state"], created["description"]) == ("Tag", "Queued", "with a token")
    assert seen["fetched"]["id"] == created["id"]
    # The SDK's App model reads the resource's properties flattened (backendId, appState), as the swagger says.
    assert [(app["name"], app["type"], app["location"], app["backendId"], app["appState"]) for app in seen["apps"]] == [
        (name, "Microsoft.MobileEngagement/appcollections/apps", "global", f"{collection}~{name}", "active")
        for name in ("chat", "game")]
    assert seen["apps"][0]["id"].endswith(f"/appcollections/{collection}/apps/chat") and seen["nextLink"] is None
