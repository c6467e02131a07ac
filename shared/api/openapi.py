"""The OpenAPI 3 document of the API, built from the same route table and limits the code enforces.

It describes the exportTasks operations of the Microsoft.MobileEngagement 2014-12-01 swagger, and its Apps_List,
with the same operation ids, parameters and enums, plus this service's extensions (the admin API's other
operations among them), each marked ``x-extension: true`` (tests/test_openapi_spec.py holds it to the original's
facts)."""

from __future__ import annotations

import functools

from shared.api.collect_api import MAX_RECORDS
from shared.api.export_api import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from shared.api.http import API_VERSION, STORAGE_RETRY_AFTER_SECONDS
from shared.api.task_query import EXPORT_TYPES, ORDER_PROPERTIES
from shared.erasure.model import COUNTS, ErasureState
from shared.erasure.request import MAX_IDS, MAX_REASON
from shared.export import registry
from shared.export.export_request import (
    CAMPAIGN_TYPES,
    EXPORT_FORMATS,
    MAX_CAMPAIGN_IDS,
    MAX_DESCRIPTION,
    MAX_NAME_LENGTH,
    MAX_NAMES,
)
from shared.export.registry import FEEDBACK_BY_CAMPAIGN, FEEDBACK_BY_DATE, HISTORICAL, ROUTES
from shared.ingest.records import MAX_ID
from shared.pipelines.model import ACTIVE, FAILING, PAUSED
from shared.pipelines.periods import CADENCES, DAILY
from shared.pipelines.request import MAX_SETTLE_MINUTES, PIPELINE_ROUTES
from shared.platform.apps import APP_SETTINGS
from shared.platform.grants import APP_ROLES
from shared.tasks.jobs import STATES

APP_PATH = ("/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/"
            "Microsoft.MobileEngagement/appcollections/{appCollection}/apps/{appName}/devices")
_PATH_PARAMETERS = [
    {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": pattern}}
    for name, pattern in (("subscriptionId", "^[^/]+$"), ("resourceGroupName", "^[^/]+$"),
                          ("appCollection", "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
                          ("appName", "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"))]
_API_VERSION = {"name": "api-version", "in": "query", "required": True,
                "schema": {"type": "string", "enum": [API_VERSION]}}

def _error(text: str, headers: dict | None = None) -> dict:
    response = {"description": text, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    if headers:
        response["headers"] = headers
    return response


_ERRORS = {"400": _error("Invalid request: the message names the field"),
           "401": _error("Missing or wrong key, or an invalid token (WWW-Authenticate says which)",
                         {"WWW-Authenticate": {"schema": {"type": "string"}}}),
           "403": _error("AuthorizationFailed: the token's principal lacks the app role or the grant, which the "
                         "message names"),
           "404": _error("Unknown task or route"),
           "405": _error("Wrong method", {"Allow": {"schema": {"type": "string"}}}),
           "413": _error("Body too large"), "415": _error("Body is not JSON, or an unknown Content-Encoding"),
           "503": _error(f"The app's storage is down or throttling; try again after Retry-After "
                         f"({STORAGE_RETRY_AFTER_SECONDS} s)", {"Retry-After": {"schema": {"type": "integer"}}})}
_EXTENSION = {"x-extension": True}
# The contract's operation ids for the create routes; devices is an extension.
_CREATE_IDS = {"feedbackByDate": "ExportTasks_CreateFeedbackTaskByDateRange",
               "feedbackByCampaign": "ExportTasks_CreateFeedbackTaskByCampaign"}
_ORDERBY = [f"{prop}{direction}" for prop in ORDER_PROPERTIES.values() for direction in ("", " asc", " desc")]


_FIELD_SCHEMAS = {
    "containerUrl": {"type": "string", "format": "uri", "maxLength": 4096,
                     "description": "https URL of a blob container with a SAS granting write and create"},
    "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
    "exportFormat": {"type": "string", "enum": list(EXPORT_FORMATS), "default": "JsonBlob",
                     "description": "Required by the contract; JsonBlob when left out"},
    "startDate": {"type": "string", "format": "date",
                  "description": "First UTC day, included; not older than the app keeps raw records"},
    "endDate": {"type": "string", "format": "date", "description": "Last UTC day, included; not in the future"},
    "campaignType": {"type": "string", "enum": list(CAMPAIGN_TYPES)},
    "campaignIds": {"type": "array", "minItems": 1, "maxItems": MAX_CAMPAIGN_IDS,
                    "items": {"type": "integer", "minimum": 1}},
    "campaignWindowStart": {"type": "string", "format": "date-time"},
    "campaignWindowEnd": {"type": "string", "format": "date-time"},
    "exportOptions": {"type": "object", "additionalProperties": False, **_EXTENSION,
                      "properties": {"exportUserId": {"type": "boolean"}}},
}


def _request_schema(route) -> dict:
    required = ["containerUrl"]
    if route.kind == HISTORICAL:
        required += ["startDate", "endDate"]
    elif route.kind == FEEDBACK_BY_DATE:
        required += ["campaignType", "campaignWindowStart", "campaignWindowEnd"]
    elif route.kind == FEEDBACK_BY_CAMPAIGN:
        required += ["campaignType", "campaignIds"]
    extensions = {
        "fields": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": list(
            registry.export_type(route.export_type).columns)}, **_EXTENSION,
            "description": "Only these columns, in the schema's order (GET /schemas/{exportType})"},
        "names": {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
                  **_EXTENSION, "description": "Only the rows with these names (include), or all but them (exclude)",
                  "properties": {key: {"type": "array", "minItems": 1, "maxItems": MAX_NAMES, "items": {
                      "type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH}}
                      for key in ("include", "exclude")}},
        "layout": {"type": "string", "enum": list(registry.LAYOUTS), "default": registry.LAYOUTS[0], **_EXTENSION,
                   "description": "hive: files under date=YYYY-MM-DD/ folders, and a _SUCCESS marker last"},
    }
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": {name: {**_FIELD_SCHEMAS, **extensions}[name] for name in route.fields}}


def _task_result(description: str) -> dict:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ExportTaskResult"}}}}


def _operation(operation_id: str, summary: str, parameters: list, responses: dict, **extra) -> dict:
    return {"operationId": operation_id, "summary": summary,
            "parameters": _PATH_PARAMETERS + [_API_VERSION] + parameters,
            "responses": {**responses, **{status: _ERRORS[status] for status in extra.pop("errors", _ERRORS)}},
            **extra}


_TASK_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


_PIPELINE_NAME = {"name": "name", "in": "path", "required": True,
                  "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,39}$"}}
_PIPELINE_ERRORS = ("400", "401", "403", "404", "405", "503")


def _pipeline_result(description: str) -> dict:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/PipelineResult"}}}}


def _pipeline_body() -> dict:
    """The PUT body: the fields of any pipeline route (which ones a route takes is the service's to say)."""
    properties = {name: schema for name, schema in _FIELD_SCHEMAS.items() if name in (
        "containerUrl", "description", "exportFormat", "exportOptions")}
    columns = sorted({column for route in PIPELINE_ROUTES for column in registry.export_type(
        ROUTES[route].export_type).columns})
    properties.update({
        "route": {"type": "string", "enum": list(PIPELINE_ROUTES)},
        "cadence": {"type": "string", "enum": list(CADENCES), "default": DAILY},
        "settleMinutes": {"type": "integer", "minimum": 0, "maximum": MAX_SETTLE_MINUTES, "default": 60,
                          "description": "Minutes after a period ends before its first run"},
        "lateDeliveryMinutes": {"type": "integer", "minimum": 1, "maximum": MAX_SETTLE_MINUTES,
                                "description": "Longest wait of a late record; one cadence when left out"},
        "startFrom": {"type": "string", "format": "date", "description": "First UTC day: past periods are "
                      "backfilled, oldest first (historical routes); not older than the app keeps raw records"},
        "layout": {"type": "string", "enum": list(registry.LAYOUTS), "default": registry.LAYOUTS[0]},
        "fields": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": columns}},
        "names": {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
                  "properties": {key: {"type": "array", "minItems": 1, "maxItems": MAX_NAMES, "items": {
                      "type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH}} for key in ("include",
                                                                                                  "exclude")}}})
    return {"type": "object", "additionalProperties": False, "required": ["route", "containerUrl"],
            "properties": properties}


def _pipeline_paths() -> dict:
    base = f"{APP_PATH}/exportPipelines"
    return {
        base: {"get": _operation("ExportPipelines_List", "List the app's pipelines", [], {"200": {
            "description": "The app's pipelines", "content": {"application/json": {"schema": {
                "type": "object", "required": ["value"], "properties": {"value": {
                    "type": "array", "items": {"$ref": "#/components/schemas/PipelineResult"}}}}}}}},
            errors=_PIPELINE_ERRORS, **_EXTENSION)},
        f"{base}/{{name}}": {
            "put": _operation("ExportPipelines_CreateOrReplace", "Create a pipeline, or change its destination, "
                              "delays and description", [_PIPELINE_NAME],
                              {"200": _pipeline_result("Replaced"), "201": _pipeline_result("Created"),
                               "409": _error("A field its delivered files depend on cannot change")},
                              requestBody={"required": True, "content": {"application/json": {
                                  "schema": _pipeline_body()}}}, **_EXTENSION),
            "get": _operation("ExportPipelines_Get", "Get a pipeline", [_PIPELINE_NAME],
                              {"200": _pipeline_result("The pipeline")}, errors=_PIPELINE_ERRORS, **_EXTENSION),
            "delete": _operation("ExportPipelines_Delete", "Delete a pipeline; its run in flight is cancelled",
                                 [_PIPELINE_NAME], {"200": _pipeline_result("The deleted pipeline"),
                                                    "409": _error("Declared by the operator")},
                                 errors=_PIPELINE_ERRORS, **_EXTENSION)},
        **{f"{base}/{{name}}/{action}": {"post": _operation(
            f"ExportPipelines_{action.title()}", summary, [_PIPELINE_NAME],
            {"200": _pipeline_result("The pipeline"), "409": _error("Declared by the operator")},
            errors=_PIPELINE_ERRORS, **_EXTENSION)} for action, summary in (
            ("pause", "Pause: no new run starts; the run in flight finishes"),
            ("resume", "Resume: the periods that came due are delivered, oldest first"))},
        f"{base}/{{name}}/runs": {"get": _operation(
            "ExportPipelines_ListRuns", "The pipeline's runs, newest first", [_PIPELINE_NAME, {
                "name": "$top", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE,
                                                          "default": DEFAULT_PAGE_SIZE}},
                {"name": "$skiptoken", "in": "query", "description": "Given in nextLink; opaque",
                 "schema": {"type": "string"}}],
            {"200": {"description": "A page of runs", "content": {"application/json": {"schema": {
                "type": "object", "required": ["value"], "properties": {
                    "value": {"type": "array", "items": {"$ref": "#/components/schemas/PipelineRun"}},
                    "nextLink": {"type": "string", "format": "uri"}}}}}}},
            errors=_PIPELINE_ERRORS, **_EXTENSION)},
    }


_ERASURE_ERRORS = ("400", "401", "403", "404", "405", "503")
_ID_LIST = {"type": "array", "minItems": 1, "maxItems": MAX_IDS, "items": {"type": "string", "minLength": 1,
                                                                          "maxLength": MAX_ID}}


def _erasure_result(description: str, headers: dict | None = None) -> dict:
    return {"description": description, **({"headers": headers} if headers else {}),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErasureTask"}}}}


def _erasure_paths() -> dict:
    base = f"{APP_PATH}/erasureTasks"
    body = {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
        "deviceIds": _ID_LIST, "userIds": _ID_LIST,
        "reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON},
        "removeTableFilesNow": {"type": "boolean", "default": False}}}
    return {
        base: {
            "post": _operation("ErasureTasks_Create", "Erase the data of devices or users everywhere it is kept", [],
                               {"202": _erasure_result("Accepted: from now on no export holds their records", {
                                   "Location": {"schema": {"type": "string"}},
                                   "Retry-After": {"schema": {"type": "integer"}}})},
                               requestBody={"required": True, "content": {"application/json": {"schema": body}}},
                               errors=_ERASURE_ERRORS, **_EXTENSION),
            "get": _operation("ErasureTasks_List", "The app's erasure tasks, newest first", [
                {"name": "$top", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE,
                                                           "default": DEFAULT_PAGE_SIZE}},
                {"name": "$skiptoken", "in": "query", "description": "Given in nextLink; opaque",
                 "schema": {"type": "string"}}],
                {"200": {"description": "A page of erasure tasks", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["value"], "properties": {
                        "value": {"type": "array", "items": {"$ref": "#/components/schemas/ErasureTask"}},
                        "nextLink": {"type": "string", "format": "uri"}}}}}}},
                errors=_ERASURE_ERRORS, **_EXTENSION)},
        f"{base}/{{id}}": {"get": _operation("ErasureTasks_Get", "Get an erasure task", [_TASK_ID],
                                             {"200": _erasure_result("The erasure task")}, errors=_ERASURE_ERRORS,
                                             **_EXTENSION)},
    }


_ERASURE_TASK = {"type": "object", "required": ["id", "state", "dateCreated", "erased"], "properties": {
    "id": {"type": "string"}, "state": {"type": "string", "enum": [str(state) for state in ErasureState]},
    "dateCreated": {"type": "string", "format": "date-time"},
    "dateStarted": {"type": "string", "format": "date-time"},
    "dateCompleted": {"type": "string", "format": "date-time"},
    "reason": {"type": "string"}, "deviceIdCount": {"type": "integer"}, "userIdCount": {"type": "integer"},
    "removeTableFilesNow": {"type": "boolean"},
    "erased": {"type": "object", "properties": {name: {"type": "integer"} for name in COUNTS}},
    "lakeTables": {"type": "array", "items": {"type": "object"}},
    "deliveredBy": {"type": "object", "properties": {"exportTasks": {"type": "array", "items": {"type": "object"}},
                                                     "pipelineRuns": {"type": "array", "items": {"type": "object"}}}},
    "errorDetails": {"type": "string"},
    "idHashes": {"type": "array", "items": {"type": "string"},
                 "description": "Keyed hashes of the ids, once the task has ended (docs/data-rights.md)"}}}


COLLECTION_PATH = ("/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/"
                   "Microsoft.MobileEngagement/appcollections/{appCollection}")
_PRINCIPAL_ID = {"name": "principalObjectId", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": "^[0-9A-Za-z-]{1,64}$"}}
_KEYS = {"type": "object", "required": ["exportKey", "collectKey"], "properties": {
    "exportKey": {"type": "string", "pattern": "^eek_"}, "collectKey": {"type": "string", "pattern": "^eck_"}}}
_SETTINGS_DOCUMENT = {"type": "object", "additionalProperties": False, "properties": {
    name: {"type": "integer", "minimum": 1, "maximum": maximum, "nullable": True}
    for name, (_, maximum) in APP_SETTINGS.items()}}
_GRANT_BODY = {"type": "object", "additionalProperties": False, "properties": {"roles": {
    "type": "array", "minItems": 1, "items": {"type": "string", "enum": list(APP_ROLES)}}}}
_ADMIN_SCHEMAS = {
    "App": {"type": "object", "required": ["id", "name", "type", "location"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string"},
        "location": {"type": "string"}, "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "properties": {"type": "object", "properties": {"backendId": {"type": "string"},
                                                        "platform": {"type": "string"},
                                                        "appState": {"type": "string"}}}}},
    "AppListResult": {"type": "object", "required": ["value"], "properties": {
        "value": {"type": "array", "items": {"$ref": "#/components/schemas/App"}},
        "nextLink": {"type": "string", "format": "uri"}}},
    "AppKeys": _KEYS,
    "AppSettings": _SETTINGS_DOCUMENT,
    "Grant": {"type": "object", "required": ["principalObjectId", "appCollection", "roles", "dateGranted"],
              "properties": {"principalObjectId": {"type": "string"}, "appCollection": {"type": "string"},
                             "appName": {"type": "string"}, "dateGranted": {"type": "string", "format": "date-time"},
                             "roles": {"type": "array", "items": {"type": "string", "enum": list(APP_ROLES)}}}},
    "GrantListResult": {"type": "object", "required": ["value"], "properties": {
        "value": {"type": "array", "items": {"$ref": "#/components/schemas/Grant"}}}},
}


def _admin_operation(operation_id: str, summary: str, path: list, answers: dict, **extra) -> dict:
    """An operation of the admin API: an Apps.Admin token's (Apps_List: any principal with an app role)."""
    parameters = [parameter for parameter in _PATH_PARAMETERS if parameter["name"] != "appName"]
    return {"operationId": operation_id, "summary": summary, "parameters": parameters + path + [_API_VERSION],
            "responses": {**answers, **{status: _ERRORS[status] for status in ("400", "401", "403", "404", "405",
                                                                               "503")}},
            **({} if operation_id == "Apps_List" else _EXTENSION), **extra}


def _answer(description: str, schema: str | None = None) -> dict:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _json_body(schema: dict, required: bool) -> dict:
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def _admin_paths() -> dict:
    app = [parameter for parameter in _PATH_PARAMETERS if parameter["name"] == "appName"]
    grant_answers = {"200": _answer("The grant", "Grant")}
    return {
        f"{COLLECTION_PATH}/apps": {"get": _admin_operation(
            "Apps_List", "The apps of the collection the caller may see", [],
            {"200": _answer("The apps", "AppListResult")})},
        f"{COLLECTION_PATH}/apps/{{appName}}": {
            "get": _admin_operation("Apps_Get", "One app", app, {"200": _answer("The app", "App")}),
            "put": _admin_operation("Apps_Register", "Register an app: its keys, shown this once", app,
                                    {"201": _answer("The app's keys", "AppKeys"),
                                     "409": _error("AppExists: rotate its keys instead")}),
            "delete": _admin_operation("Apps_Delete", "Remove an app, its keys and its grants", app,
                                       {"204": _answer("Removed")})},
        f"{COLLECTION_PATH}/apps/{{appName}}/rotateKeys": {"post": _admin_operation(
            "Apps_RotateKeys", "New keys for an app; the old stop", app, {"200": _answer("The new keys", "AppKeys")})},
        f"{COLLECTION_PATH}/apps/{{appName}}/settings": {
            "get": _admin_operation("AppSettings_Get", "The app's settings", app,
                                    {"200": _answer("The settings", "AppSettings")}),
            "put": _admin_operation("AppSettings_Put", "Replace the app's settings", app,
                                    {"200": _answer("The settings", "AppSettings")},
                                    **_json_body(_SETTINGS_DOCUMENT, True))},
        f"{COLLECTION_PATH}/apps/{{appName}}/grants": {"get": _admin_operation(
            "Grants_ListOfApp", "The grants on an app", app, {"200": _answer("The grants", "GrantListResult")})},
        f"{COLLECTION_PATH}/apps/{{appName}}/grants/{{principalObjectId}}": {
            "put": _admin_operation("Grants_PutOnApp", "Grant a principal the app (roles narrow it)",
                                    app + [_PRINCIPAL_ID], grant_answers, **_json_body(_GRANT_BODY, False)),
            "delete": _admin_operation("Grants_DeleteOnApp", "Remove a principal's grant on the app",
                                       app + [_PRINCIPAL_ID], {"204": _answer("Removed")})},
        f"{COLLECTION_PATH}/grants": {"get": _admin_operation(
            "Grants_ListOfCollection", "The grants on the whole collection", [],
            {"200": _answer("The grants", "GrantListResult")})},
        f"{COLLECTION_PATH}/grants/{{principalObjectId}}": {
            "put": _admin_operation("Grants_PutOnCollection", "Grant a principal every app of the collection",
                                    [_PRINCIPAL_ID], grant_answers, **_json_body(_GRANT_BODY, False)),
            "delete": _admin_operation("Grants_DeleteOnCollection", "Remove a principal's grant on the collection",
                                       [_PRINCIPAL_ID], {"204": _answer("Removed")})},
    }


@functools.lru_cache(maxsize=1)
def document() -> dict:
    paths = {
        f"{APP_PATH}/exportTasks": {"get": _operation(
            "ExportTasks_List", "List the app's export tasks", [
                {"name": "$skip", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 100000,
                                                            "default": 0}},
                {"name": "$top", "in": "query", "description": "The contract allows at most 40; up to "
                 f"{MAX_PAGE_SIZE} is an extension", "schema": {"type": "integer", "minimum": 1,
                                                              "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE}},
                # A string, as in the original: names match without case and an empty value means the default,
                # so an enum would call requests the service rightly accepts invalid. x-values lists them.
                {"name": "$orderby", "in": "query", "description": "{property} [asc|desc]; names match without "
                 "case; empty or absent means taskId asc", "x-values": _ORDERBY,
                 "schema": {"type": "string", "default": "taskId asc"}},
                {"name": "$filter", "in": "query", **_EXTENSION, "description": (
                    "Clauses joined with 'and': state eq '<state>', exportType eq '<type>', dateCreated "
                    "ge|gt|le|lt <RFC 3339 date-time>"), "schema": {"type": "string", "maxLength": 1000}},
                {"name": "$skiptoken", "in": "query", "description": "Given in nextLink; opaque",
                 "schema": {"type": "string"}}],
            {"200": {"description": "A page of tasks", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ExportTaskListResult"}}}}},
            errors=("400", "401", "403", "404", "405", "503"))},
        f"{APP_PATH}/exportTasks/{{id}}": {"get": _operation(
            "ExportTasks_Get", "Get one export task", [_TASK_ID], {"200": _task_result("The task")},
            errors=("400", "401", "403", "404", "405", "503"))},
        f"{APP_PATH}/exportTasks/{{id}}/cancel": {"post": _operation(
            "ExportTasks_Cancel", "Cancel a Queued or Started task: it ends Failed and nothing is committed",
            [_TASK_ID], {"200": _task_result("The cancelled task (Failed)"),
                         "409": _error("The task already ended, or is committing its files")},
            errors=("400", "401", "403", "404", "405", "503"), **_EXTENSION)},
        f"{APP_PATH}/collect": {"post": _operation(
            "Collect", "Ingest a batch of records with the app's collect key", [],
            {"200": {"description": "Every accepted record is stored; refused ones are listed",
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CollectResult"}}}}},
            requestBody={"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["records"], "additionalProperties": False, "properties": {
                    "records": {"type": "array", "maxItems": MAX_RECORDS, "items": {
                        "description": "A record (see docs/ingestion.md, the record schema); each is checked on its "
                                       "own, and one that is refused, even one that is not an object, is listed in "
                                       "rejected while the rest are stored"}}}}}}},
            **_EXTENSION)},
    }
    for route in ROUTES.values():
        operation_id = _CREATE_IDS.get(route.route, f"ExportTasks_Create{route.route[0].upper()}{route.route[1:]}Task")
        extension = _EXTENSION if route.export_type == "Device" else {}
        paths[f"{APP_PATH}/exportTasks/{route.route}"] = {"post": _operation(
            operation_id, f"Create a {route.export_type} export task", [], {"202": {
                "description": "Accepted: the task is queued",
                "headers": {"Location": {"schema": {"type": "string"}}, "Retry-After": {"schema": {"type": "integer"}}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExportTaskResult"}}}}},
            requestBody={"required": True, "content": {"application/json": {"schema": _request_schema(route)}}},
            **extension)}
    paths.update(_pipeline_paths())
    paths.update(_erasure_paths())
    paths.update(_admin_paths())
    schema_answer = {"description": "The published schema(s): columns in file order, JSON Schema of a JSON Lines or "
                                    "CSV row, Arrow schema of a Parquet file",
                     "content": {"application/json": {"schema": {"type": "object"}}}}
    paths["/schemas"] = {"get": {"operationId": "Schemas_List", "summary": "Every export type's published schema",
                                 "security": [], "parameters": [], "responses": {"200": schema_answer},
                                 **_EXTENSION}}
    paths["/schemas/{exportType}"] = {"get": {
        "operationId": "Schemas_Get", "summary": "One export type's published schema", "security": [],
        "parameters": [{"name": "exportType", "in": "path", "required": True,
                        "schema": {"type": "string", "enum": list(EXPORT_TYPES)}}],
        "responses": {"200": schema_answer, "404": _ERRORS["404"]}, **_EXTENSION}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Engagement Export", "version": API_VERSION,
                 "description": "Export tasks of mobile-engagement raw data (the 2014-12-01 contract)."},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": (
                "An Entra ID access token (its app roles and grants say what it may do; docs/api.md), or the app's "
                "export key; the app's collect key for collect")}},
            "schemas": {
                "ExportTaskResult": {"type": "object", "required": ["id", "state", "dateCreated", "exportType"],
                                     "properties": {
                    "id": {"type": "string"}, "description": {"type": "string"},
                    "state": {"type": "string", "enum": list(STATES)},
                    "dateCreated": {"type": "string", "format": "date-time"},
                    "dateCompleted": {"type": "string", "format": "date-time",
                                      "description": "Left out until the task ends"},
                    "exportType": {"type": "string", "enum": list(EXPORT_TYPES),
                                   "description": "Device is an extension (exportTasks/devices)"},
                    "errorDetails": {"type": "string", "description": "Left out unless the task failed"},
                    "exportFormat": {"type": "string", "enum": list(EXPORT_FORMATS), **_EXTENSION},
                    "containerUrl": {"type": "string", "description": "Without its SAS token", **_EXTENSION},
                    "progress": {"type": "object", **_EXTENSION, "properties": {
                        "partsDone": {"type": "integer"}, "partsTotal": {"type": "integer"}}},
                    "recordCount": {"type": "integer", **_EXTENSION}, "bytes": {"type": "integer", **_EXTENSION},
                    "files": {"type": "array", "items": {"type": "object"}, **_EXTENSION},
                    "layout": {"type": "string", "enum": list(registry.LAYOUTS), **_EXTENSION},
                    "fields": {"type": "array", "items": {"type": "string"}, **_EXTENSION},
                    "names": {"type": "object", **_EXTENSION}}},
                "ExportTaskListResult": {"type": "object", "required": ["value"], "properties": {
                    "value": {"type": "array", "items": {"$ref": "#/components/schemas/ExportTaskResult"}},
                    "nextLink": {"type": "string", "format": "uri"}}},
                "PipelineResult": {"type": "object", "required": ["name", "route", "state", "cadence"],
                                   "properties": {
                    "name": {"type": "string"}, "route": {"type": "string", "enum": list(PIPELINE_ROUTES)},
                    "exportType": {"type": "string", "enum": list(EXPORT_TYPES)},
                    "exportFormat": {"type": "string", "enum": list(EXPORT_FORMATS)},
                    "cadence": {"type": "string", "enum": list(CADENCES)},
                    "state": {"type": "string", "enum": [ACTIVE, PAUSED, FAILING, "Deleted"]},
                    "stateDetails": {"type": "string", "description": "Why it is Failing"},
                    "containerUrl": {"type": "string", "description": "Without its SAS token"},
                    "sasExpires": {"type": "string", "format": "date-time"},
                    "lastDeliveredPeriod": {"type": "string"}, "nextPeriod": {"type": "string"},
                    "alerts": {"type": "array", "items": {"type": "object"}}}},
                "PipelineRun": {"type": "object", "required": ["run", "sequence", "periods", "delivery", "state"],
                                "properties": {
                    "run": {"type": "string"}, "sequence": {"type": "integer"},
                    "periods": {"type": "array", "items": {"type": "string"}},
                    "delivery": {"type": "string", "enum": ["first", "late"]}, "taskId": {"type": "string"},
                    "state": {"type": "string", "enum": list(STATES)}, "recordCount": {"type": "integer"},
                    "fileCount": {"type": "integer"}, "lagSeconds": {"type": "number"},
                    "readAt": {"type": "string", "format": "date-time"}}},
                "CollectResult": {"type": "object", "required": ["accepted", "rejected"], "properties": {
                    "accepted": {"type": "integer", "minimum": 0},
                    "rejected": {"type": "array", "items": {"type": "object", "required": ["index", "field", "reason"],
                                                            "properties": {"index": {"type": "integer"},
                                                                           "field": {"type": "string"},
                                                                           "reason": {"type": "string"}}}}}},
                "ErasureTask": _ERASURE_TASK,
                **_ADMIN_SCHEMAS,
                "ErrorResponse": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
            },
        },
    }
