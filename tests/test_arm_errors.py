"""Every path answers in the ARM error shape: paths nothing serves, the retired API's other operation groups,
methods nobody knows, and every endpoint while the app's storage is down."""

from __future__ import annotations

import json

import pytest
import requests
from helpers import API_VERSION, app_path, http_request, local_host

import Collect
import ErasureTasks
import ExportPipelines
import ExportTasks
from devhost.azurite import connection_string, free_port
from shared.platform import config

HTTP_FUNCTIONS = ["ExportTasks", "ExportPipelines", "Collect", "Apps", "OpenApi", "Health", "NotServed"]
SUB = "/subscriptions/s1"
PROVIDER = f"{SUB}/resourceGroups/rg/providers/Microsoft.MobileEngagement"
APP = f"{PROVIDER}/appcollections/c1/apps/a1"


@pytest.fixture(scope="module")
def host(app_env):
    with local_host(*HTTP_FUNCTIONS) as running:
        yield running


def arm_error(response):
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message"} and error["message"]
    return error


@pytest.mark.parametrize("method, path, group", [
    ("GET", f"{SUB}/providers/Microsoft.MobileEngagement/appCollections", "appCollections"),
    ("POST", f"{SUB}/providers/Microsoft.MobileEngagement/checkAppCollectionNameAvailability", "appCollections"),
    ("GET", f"{SUB}/providers/Microsoft.MobileEngagement/supportedPlatforms", "supportedPlatforms"),
    ("GET", f"{PROVIDER}/appcollections/c1", "appCollections"),
    ("PUT", f"{PROVIDER}/appcollections/c1/", "appCollections"),
    ("GET", f"{SUB}/providers/Microsoft.MobileEngagement/appcollections/c1/apps", "apps"),
    ("GET", f"{APP}/campaigns/announcements", "campaigns"),
    ("PUT", f"{APP}/campaigns/polls/12", "campaigns"),
    ("POST", f"{APP}/campaigns/announcements/12/push", "campaigns"),
    ("GET", f"{APP}/devices/dev-1", "devices"),
    ("GET", f"{APP}/devices/$query", "devices"),
    ("POST", f"{APP}/devices/tag", "devices"),
    ("GET", f"{APP}/users/u-1", "devices"),
    ("GET", f"{APP}/devices/importTasks", "importTasks"),
    ("POST", f"{APP}/devices/importTasks", "importTasks"),
    ("GET", f"{APP}/devices/importTasks/7", "importTasks"),
])
def test_the_retired_apis_other_operations_say_this_service_does_not_serve_them(host, method, path, group):
    response = requests.request(method, host.base_url + path, params={"api-version": API_VERSION}, timeout=10)
    assert response.status_code == 404
    error = arm_error(response)
    assert error["code"] == "OperationNotSupported"
    assert error["message"] == (f"this service serves the exportTasks, collect and apps operations of "
                                f"Microsoft.MobileEngagement (api-version 2014-12-01) only; the {group} operations "
                                f"of the retired Azure Mobile Engagement are not served here")


@pytest.mark.parametrize("path", ["/", "/nothing/here", "/subscriptions", "/openapi.yaml", "/api/health"])
def test_a_path_nothing_serves_is_an_arm_404_listing_what_is_served(host, path):
    response = requests.get(host.base_url + path, timeout=10)
    assert response.status_code == 404
    error = arm_error(response)
    assert error["code"] == "NotFound" and "this service serves POST .../devices/collect" in error["message"]


def test_methods_nobody_knows_and_wrong_methods_are_arm_405s(host):
    response = requests.request("QUERY", f"{host.base_url}{APP}/devices/exportTasks", timeout=10)
    assert response.status_code == 405 and arm_error(response)["code"] == "MethodNotAllowed"
    response = requests.get(f"{host.base_url}{APP}/devices/collect", params={"api-version": API_VERSION}, timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert arm_error(response)["code"] == "MethodNotAllowed"
    response = requests.request("QUERY", f"{host.base_url}/health", timeout=10)
    assert response.status_code == 405 and arm_error(response)["code"] == "MethodNotAllowed"


@pytest.fixture
def dead_storage(settings_override):
    settings_override(**{config.STORAGE_CONNECTION: connection_string(
        "127.0.0.1", {service: free_port() for service in ("blob", "queue", "table")})})


@pytest.mark.parametrize("function, method, rest, body", [
    (ExportTasks.main, "GET", "", None),
    (ExportTasks.main, "GET", "00000000-0000-7000-8000-000000000000", None),
    (ExportTasks.main, "POST", "tags", {"containerUrl": "https://a.blob.core.windows.net/c?sp=cw&se=2099-01-01&sig=x"}),
    (ExportTasks.main, "POST", "00000000-0000-7000-8000-000000000000/cancel", None),
    (Collect.main, "POST", None, {"records": [{"type": "event", "deviceId": "d", "name": "e",
                                              "timestamp": "2026-01-01T00:00:00Z"}]}),
    (ExportPipelines.main, "GET", "", None),
    (ExportPipelines.main, "GET", "daily/runs", None),
    (ExportPipelines.main, "POST", "daily/pause", None),
    (ExportPipelines.main, "DELETE", "daily", None),
    (ErasureTasks.main, "POST", "", {"deviceIds": ["d1"]}),
    (ErasureTasks.main, "GET", "", None),
    (ErasureTasks.main, "GET", "00000000-0000-4000-8000-000000000000", None),
])
def test_every_endpoint_answers_503_with_retry_after_while_storage_is_down(dead_storage, function, method, rest,
                                                                           body):
    resource = {ExportPipelines.main: "exportPipelines", ErasureTasks.main: "erasureTasks"}.get(function, "exportTasks")
    path = app_path("c1", "a1") + ("/collect" if rest is None else f"/{resource}/{rest}")
    response = function(http_request(method, path, key="some-key", body=body,
                                     route_params={"appCollection": "c1", "appName": "a1", "rest": rest or ""}))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert json.loads(response.get_body())["error"]["code"] == "ServiceUnavailable"


@pytest.mark.parametrize("method, rest, allow", [("TRACE", "tokens", "POST"), ("DELETE", "", "GET"),
                                                 ("PUT", "00000000-0000-7000-8000-000000000000", "GET"),
                                                 ("GET", "00000000-0000-7000-8000-000000000000/cancel", "POST")])
def test_a_method_an_operation_does_not_have_is_a_405_before_the_key_and_api_version_are_read(method, rest, allow):
    # Routing comes first, as on ARM: a wrong method says nothing about the app, so it needs no key.
    response = ExportTasks.main(http_request(method, app_path("c1", "a1") + f"/exportTasks/{rest}", params={},
                                             route_params={"appCollection": "c1", "appName": "a1", "rest": rest}))
    assert response.status_code == 405 and response.headers["Allow"] == allow
    assert json.loads(response.get_body())["error"]["code"] == "MethodNotAllowed"
