"""The API through the local host over HTTP, as an unmodified ARM-style client calls it, and its OpenAPI
document kept true against the code."""

from __future__ import annotations

import datetime as dt

import pytest
import requests
from conftest import REPO_ROOT
from helpers import API_VERSION, app_path, container_sas_url
from openapi_spec_validator import validate

from devhost.host import LocalHost
from shared.export.registry import ROUTES
from shared.platform import apps


@pytest.fixture
def host(app_env):
    running = LocalHost(REPO_ROOT, port=0,
                        functions=["ExportTasks", "ExportPipelines", "ErasureTasks", "Collect", "Apps", "OpenApi",
                                   "ExportSchemas", "Health", "NotServed"]).start()
    yield running
    running.stop()


class ExportTasksClient:
    """Written against the contract only: a base URL, a bearer token, api-version=2014-12-01."""

    def __init__(self, base_url, subscription, resource_group, collection, app, token):
        self.base = (f"{base_url}/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
                     f"Microsoft.MobileEngagement/appcollections/{collection}/apps/{app}/devices/exportTasks")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def create(self, route, body):
        response = self.session.post(f"{self.base}/{route}", params={"api-version": API_VERSION}, json=body,
                                     timeout=30)
        response.raise_for_status()
        return response

    def get(self, task_id):
        response = self.session.get(f"{self.base}/{task_id}", params={"api-version": API_VERSION}, timeout=30)
        response.raise_for_status()
        return response.json()

    def list_all(self, top=2):
        url, params, tasks = self.base, {"api-version": API_VERSION, "$top": top}, []
        while url:
            page = self.session.get(url, params=params, timeout=30).json()
            tasks += page["value"]
            url, params = page.get("nextLink"), None
        return tasks


def test_an_arm_style_client_works_by_changing_only_the_base_url(host, app_env, names):
    keys = apps.register_app(f"c-{names.token}", "game")
    client = ExportTasksClient(host.base_url, "00000000-0000-0000-0000-000000000000", "my-rg",
                               f"c-{names.token}", "game", keys.export_key)
    container = container_sas_url(app_env, names.container("dest"))
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    created = client.create("events", {"containerUrl": container, "description": "nightly",
                                       "startDate": yesterday, "endDate": yesterday, "exportFormat": "CsvBlob"})
    assert created.status_code == 202
    task = created.json()
    assert client.session.get(created.headers["Location"], timeout=30).json()["id"] == task["id"]
    assert client.get(task["id"])["exportType"] == "Event"
    for _ in range(2):
        client.create("tags", {"containerUrl": container})
    listed = client.list_all(top=2)
    assert len(listed) == 3 and listed[0]["id"] == task["id"]  # the contract's default order: taskId asc


def test_errors_over_http_keep_the_arm_shape(host, names):
    keys = apps.register_app(f"c-{names.token}", "game")
    base = host.base_url + app_path(f"c-{names.token}", "game") + "/exportTasks"
    headers = {"Authorization": f"Bearer {keys.export_key}"}
    cases = [
        (requests.get(base, timeout=10), 401, "AuthenticationFailed"),
        (requests.get(base, headers=headers, timeout=10), 400, "MissingApiVersionParameter"),
        (requests.post(base + "/events", params={"api-version": API_VERSION}, headers=headers, data="{",
                       timeout=10), 400, "InvalidRequestContent"),
        (requests.post(base + "/nothing", params={"api-version": API_VERSION}, headers=headers, json={},
                       timeout=10), 404, "NotFound"),
        (requests.patch(base + "/events", params={"api-version": API_VERSION}, headers=headers, json={},
                        timeout=10), 405, "MethodNotAllowed"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
    assert requests.get(host.base_url + "/subscriptions/x", timeout=10).status_code == 404


def test_openapi_document_is_served_valid_and_true(host, names):
    document = requests.get(f"{host.base_url}/openapi.json", timeout=10).json()
    validate(document)
    posts = {path.rsplit("/", 1)[1] for path, item in document["paths"].items() if "post" in item}
    assert posts == set(ROUTES) | {"collect", "cancel", "pause", "resume", "rotateKeys", "erasureTasks"}
    # every documented operation exists: without a key each answers 401 (a public one 200), never 404 or 405
    for path, item in document["paths"].items():
        concrete = path.format(subscriptionId="s", resourceGroupName="r", appCollection="c", appName="a", id="x",
                               exportType="Event", name="daily",
                               principalObjectId="00000000-0000-0000-0000-0000000000a1")
        for method in item:
            response = requests.request(method.upper(), host.base_url + concrete,
                                        params={"api-version": API_VERSION}, json={}, timeout=10)
            public = item[method].get("security") == []
            assert response.status_code == (200 if public else 401), (method, path, response.status_code)


def test_health_reports_storage(host):
    response = requests.get(f"{host.base_url}/health", timeout=10)
    assert response.status_code == 200
    first = response.json()
    assert {key: first[key] for key in ("status", "storage")} == {"status": "healthy", "storage": "connection string"}
    # Each check reaches storage once, and the instance counts every request it made.
    second = requests.get(f"{host.base_url}/health", timeout=10).json()
    assert second["storageRequests"] >= first["storageRequests"] + 1 >= 2
