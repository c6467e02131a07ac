"""The original 2014-12-01 swagger is the judge: our OpenAPI document describes its exportTasks operations
with the same ids, parameters, fields, formats and enums (plus extensions marked ``x-extension``), and every
body the original allows, field by field and enum value by enum value, is accepted."""

from __future__ import annotations

import itertools
import json
import os

import pytest
from helpers import API_VERSION
from test_export_api import TODAY, Api

from shared.api.openapi import document

SPEC = json.load(open(os.path.join(os.path.dirname(__file__), "spec", "exporttasks-2014-12-01.json")))
DOC = document()
OURS = {(method, path): operation for path, item in DOC["paths"].items() for method, operation in item.items()}
# The admin API's operations beyond the original's Apps_List (docs/api.md, "The admin API").
ADMIN_EXTENSIONS = {"Apps_Get", "Apps_Register", "Apps_Delete", "Apps_RotateKeys", "AppSettings_Get", "AppSettings_Put",
                    "Grants_ListOfApp", "Grants_PutOnApp", "Grants_DeleteOnApp", "Grants_ListOfCollection",
                    "Grants_PutOnCollection", "Grants_DeleteOnCollection"}
SPEC_OPERATIONS = {(op["method"], SPEC["basePath"] + op["path"]): op for op in SPEC["operations"]}


def resolve(schema):
    while "$ref" in schema:
        schema = DOC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def spec_enum(prop):
    return SPEC["enums"][prop["enum"]] if isinstance(prop.get("enum"), str) else prop.get("enum")


def assert_same_property(ours, theirs, where):
    ours = resolve(ours)
    assert ours["type"] == theirs["type"], where
    if "format" in theirs:
        assert ours.get("format") == theirs["format"] or (theirs["format"], ours.get("format")) == ("long", "int64") \
            or (theirs["format"] == "long" and ours["type"] == "integer"), where
    if spec_enum(theirs):
        assert set(spec_enum(theirs)) <= set(ours["enum"]), where
    if theirs["type"] == "array" and isinstance(theirs.get("items"), dict):
        assert_same_property(ours["items"], theirs["items"], where + "[]")
        assert ours.get("minItems", 0) <= theirs.get("minItems", 0) or ours["minItems"] == theirs["minItems"], where


def test_every_exporttasks_operation_of_the_original_is_described_with_its_id():
    for key, theirs in SPEC_OPERATIONS.items():
        assert key in OURS, key
        assert OURS[key]["operationId"] == theirs["operationId"]
        assert "x-extension" not in OURS[key]
        status, definition = theirs["response"]
        response = OURS[key]["responses"][status]
        result = resolve(response["content"]["application/json"]["schema"])
        assert set(result["required"]) == set(SPEC["definitions"][definition]["required"])
        if status == "202":
            assert set(SPEC["createResponseHeaders"]) <= set(response["headers"])


def test_operations_beyond_the_original_are_marked_as_extensions():
    extra = set(OURS) - set(SPEC_OPERATIONS)
    assert {operation["operationId"] for key, operation in OURS.items() if key in extra} == {
        "ExportTasks_CreateDevicesTask", "ExportTasks_Cancel", "Collect", "Schemas_List", "Schemas_Get",
        "ExportPipelines_List", "ExportPipelines_CreateOrReplace", "ExportPipelines_Get", "ExportPipelines_Delete",
        "ExportPipelines_Pause", "ExportPipelines_Resume", "ExportPipelines_ListRuns", "ErasureTasks_Create",
        "ErasureTasks_List", "ErasureTasks_Get", "Apps_List", *ADMIN_EXTENSIONS}
    assert all(OURS[key].get("x-extension") is True for key in extra if OURS[key]["operationId"] != "Apps_List")


def test_every_operation_takes_the_path_parameters_and_api_version_of_the_original():
    for key in SPEC_OPERATIONS:
        parameters = {(p["name"], p["in"]): p for p in OURS[key]["parameters"]}
        for name in SPEC["pathParameters"]:
            assert parameters[(name, "path")]["required"] is True
        version = parameters[("api-version", "query")]
        assert version["required"] is True and version["schema"]["type"] == "string"


def test_the_list_takes_the_originals_paging_and_every_order():
    (theirs,) = [op for op in SPEC["operations"] if op["operationId"] == "ExportTasks_List"]
    ours = {p["name"]: p for p in OURS[("get", SPEC["basePath"] + "/exportTasks")]["parameters"]}
    skip, top, orderby = (ours[name]["schema"] for name in ("$skip", "$top", "$orderby"))
    assert skip["type"] == "integer" and skip["minimum"] == 0 and skip["default"] == 0
    assert top["type"] == "integer" and top["minimum"] <= 1 and top["maximum"] >= 40
    assert top["default"] == theirs["query"]["$top"]["default"]
    order = theirs["query"]["$orderby"]
    assert orderby["default"] == order["default"]
    values = ours["$orderby"]["x-values"]  # the values the API takes; the schema is a string, as the original's
    assert {f"{p}{d}" for p, d in itertools.product(order["properties"], ["", " asc", " desc"])} <= set(values)
    assert orderby["type"] == order["type"] == "string"
    assert all(ours[name].get("x-extension") for name in set(ours) - {"$skip", "$top", "$orderby", "$skiptoken",
                                                                       *SPEC["pathParameters"], "api-version"})


@pytest.mark.parametrize("operation", [op for op in SPEC["operations"] if "body" in op], ids=lambda op: op["body"])
def test_every_body_field_of_the_original_has_its_type_format_and_enum(operation):
    theirs = SPEC["definitions"][operation["body"]]
    ours = OURS[(operation["method"], SPEC["basePath"] + operation["path"])]["requestBody"]["content"][
        "application/json"]["schema"]
    for name, prop in theirs["properties"].items():
        assert name in ours["properties"], name
        assert_same_property(ours["properties"][name], prop, f"{operation['body']}.{name}")
    # What we require, the original requires too (exportFormat defaults to JsonBlob here).
    assert set(ours["required"]) <= set(theirs["required"])
    for name in set(ours["properties"]) - set(theirs["properties"]):
        assert ours["properties"][name].get("x-extension") is True, name


def test_the_result_has_the_originals_fields_and_enums():
    theirs = SPEC["definitions"]["exportTaskResult"]
    ours = resolve({"$ref": "#/components/schemas/ExportTaskResult"})
    assert set(ours["required"]) == set(theirs["required"])
    for name, prop in theirs["properties"].items():
        assert_same_property(ours["properties"][name], prop, f"exportTaskResult.{name}")
        assert not ours["properties"][name].get("nullable"), name  # a key is left out until it has a value
    assert ours["properties"]["state"]["enum"] == SPEC["enums"]["exportState"]
    assert set(ours["properties"]["exportType"]["enum"]) - set(SPEC["enums"]["exportType"]) == {"Device"}
    for name in set(ours["properties"]) - set(theirs["properties"]):
        assert ours["properties"][name].get("x-extension") is True, name
    error = resolve({"$ref": "#/components/schemas/ErrorResponse"})["properties"]["error"]["properties"]
    assert {name: prop["type"] for name, prop in error.items()} == {"code": "string", "message": "string"}


@pytest.fixture
def api(app_env, names):
    return Api(app_env, names)


def original_bodies(api, definition):
    """Bodies the original allows: each with every field it defines, one per enum value, date-times with and
    without offsets; and one with its required fields only."""
    theirs = SPEC["definitions"][definition]
    day = (TODAY.replace(day=1)).isoformat()
    values = {"containerUrl": [api.container_url], "description": ["any text", ""],
              "startDate": [day], "endDate": [TODAY.isoformat()],
              "exportFormat": SPEC["enums"]["exportFormat"], "campaignType": SPEC["enums"]["CampaignType"],
              "campaignWindowStart": ["2015-01-01T00:00:00Z", "2015-01-01T09:30:00+05:30"],
              "campaignWindowEnd": ["2015-01-31T23:59:59.999Z", "2015-02-01T00:00:00-08:00"],
              "campaignIds": [[1], [7, 2**40, 9_007_199_254_740_993]]}
    names = list(theirs["properties"])
    longest = max(len(values[name]) for name in names)
    for index in range(max(longest, 4)):
        yield {name: values[name][index % len(values[name])] for name in names}
    yield {name: values[name][0] for name in theirs["required"]}


@pytest.mark.parametrize("operation", [op for op in SPEC["operations"] if "body" in op], ids=lambda op: op["path"])
def test_every_body_the_original_allows_is_accepted(api, operation):
    route = operation["path"].rsplit("/", 1)[1]
    for body in original_bodies(api, operation["body"]):
        response, task = api.call("POST", route, body=body, params={"api-version": API_VERSION})
        assert response.status_code == 202, (body, task)
        assert task["state"] == "Queued" and task["exportFormat"] == body.get("exportFormat", "JsonBlob")
