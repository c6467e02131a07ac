"""Schema-driven fuzzing of the API: whatever the body, query or key, the answer is a 2xx or an ARM error
with a message, never a 500 or an exception; every 2xx body matches the OpenAPI schema."""

from __future__ import annotations

import json

import pytest
from helpers import API_VERSION, app_path, container_sas_url, http_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS30Validator

import ExportTasks
from shared.api import openapi
from shared.export.registry import ROUTES
from shared.platform import apps

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)
FIELD_VALUES = {
    "startDate": st.sampled_from(["2026-01-01", "2026-02-30", "2099-01-01", "", "2026-01-01T00:00:00Z"]) | JSON_VALUES,
    "endDate": st.sampled_from(["2026-01-02", "1999-12-31", "2026-1-2"]) | JSON_VALUES,
    "exportFormat": st.sampled_from(["JsonBlob", "CsvBlob", "csvblob", "Parquet"]) | JSON_VALUES,
    "campaignType": st.sampled_from(["Announcement", "Poll", "poll", "SMS"]) | JSON_VALUES,
    "campaignIds": st.lists(st.integers(-5, 10**12), max_size=5) | JSON_VALUES,
    "campaignWindowStart": st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01", "yesterday"]) | JSON_VALUES,
    "campaignWindowEnd": st.sampled_from(["2026-01-05T00:00:00+02:00", "2026-13-01T00:00:00Z"]) | JSON_VALUES,
    "exportOptions": st.fixed_dictionaries({}, optional={"exportUserId": JSON_VALUES}) | JSON_VALUES,
    "description": st.text(max_size=50) | JSON_VALUES,
}


@pytest.fixture(scope="module")
def fuzz_app(app_env):
    keys = apps.register_app("fuzz", "app")
    container = container_sas_url(app_env, "fuzz-destination")
    return keys, container


def valid_body(route, container):
    body = {"containerUrl": container, "description": "fuzz"}
    kind = ROUTES[route].kind
    if kind == "historical":
        body.update(startDate="2026-01-01", endDate="2026-01-02")
    elif kind == "byDate":
        body.update(campaignType="Poll", campaignWindowStart="2026-01-01T00:00:00Z",
                    campaignWindowEnd="2026-01-02T00:00:00Z")
    elif kind == "byCampaign":
        body.update(campaignType="Poll", campaignIds=[1])
    return body


def bodies(container):
    """A valid body with one field changed or dropped, or anything at all."""
    def mutated(route):
        base = valid_body(route, container)
        fields = sorted(set(ROUTES[route].fields) | {"unknownField"})
        return st.tuples(st.sampled_from(fields), st.booleans(), JSON_VALUES | st.sampled_from(
            [None, ""])).map(lambda change: _apply(base, *change)) | st.just(base)

    return st.sampled_from(list(ROUTES)).flatmap(lambda route: st.tuples(
        st.just(route), mutated(route) | JSON_VALUES | st.fixed_dictionaries({}, optional={
            field: FIELD_VALUES.get(field, JSON_VALUES) for field in ROUTES[route].fields})))


def _apply(base, field, drop, value):
    body = dict(base)
    if drop:
        body.pop(field, None)
    elif field in FIELD_VALUES:
        body[field] = value
    return body


STATUSES = []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_no_input_makes_the_api_fail_with_500(fuzz_app, data):
    keys, container = fuzz_app
    route, body = data.draw(bodies(container))
    method = data.draw(st.sampled_from(["POST", "POST", "POST", "GET", "GET", "PUT", "DELETE"]))
    rest = data.draw(st.sampled_from([route, route, "", "", "x/y", route.upper()]) | st.text(
        alphabet="abcdefghijklmnopqrstuvwxyz0123456789-%", max_size=40))
    params = data.draw(st.just({"api-version": API_VERSION}) | st.fixed_dictionaries({}, optional={
        "api-version": st.sampled_from([API_VERSION, API_VERSION, "1.0", ""]),
        "$top": st.sampled_from(["1", "0", "-3", "abc", "99999999999999999999"]),
        "$skip": st.sampled_from(["0", "5", "x"]),
        "$orderby": st.sampled_from(["dateCreated", "DATECREATED desc", "x"]),
        "$skiptoken": st.text(max_size=20)}))
    key = data.draw(st.sampled_from([keys.export_key, keys.export_key, keys.collect_key, "", "nope"]))
    raw = json.dumps(body).encode()
    request = http_request(method, app_path("fuzz", "app") + "/exportTasks/" + rest, key=key, params=params,
                           route_params={"appCollection": "fuzz", "appName": "app", "rest": rest}, raw=raw)
    response = ExportTasks.main(request)
    payload = json.loads(response.get_body())
    assert response.status_code < 500, payload
    if response.status_code >= 400:
        assert set(payload) == {"error"} and payload["error"]["code"] and payload["error"]["message"]
        assert "sig=" not in payload["error"]["message"]
    else:
        schemas = openapi.document()["components"]["schemas"]
        name = "ExportTaskListResult" if "value" in payload else "ExportTaskResult"
        OAS30Validator({"components": {"schemas": schemas}, **schemas[name]}).validate(payload)
        STATUSES.append(response.status_code)


def test_the_fuzz_run_reached_successful_answers_too(fuzz_app):
    # runs after the fuzz test (file order): a fuzz run that never got past validation proves little
    assert 202 in STATUSES, STATUSES
    keys, _ = fuzz_app
    request = http_request("GET", app_path("fuzz", "app") + "/exportTasks", key=keys.export_key,
                           route_params={"appCollection": "fuzz", "appName": "app", "rest": ""})
    response = ExportTasks.main(request)
    assert response.status_code == 200
    schemas = openapi.document()["components"]["schemas"]
    page = json.loads(response.get_body())
    OAS30Validator({"components": {"schemas": schemas}, **schemas["ExportTaskListResult"]}).validate(page)
    assert page["value"], "the fuzz run created tasks, so the list is not empty"
