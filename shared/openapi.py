"""The OpenAPI 3 document of the API, built from the same route table and limits the code enforces."""

from __future__ import annotations

import functools

from shared.export_api import API_VERSION, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from shared.export_request import (CAMPAIGN_TYPES, EXPORT_FORMATS, FEEDBACK_BY_CAMPAIGN, FEEDBACK_BY_DATE,
                                   HISTORICAL, MAX_CAMPAIGN_IDS, MAX_DESCRIPTION, ROUTES)
from shared.jobs import STATES

APP_PATH = ("/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/"
            "Microsoft.MobileEngagement/appcollections/{appCollection}/apps/{appName}/devices")
_PATH_PARAMETERS = [
    {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": pattern}}
    for name, pattern in (("subscriptionId", "^[^/]+$"), ("resourceGroupName", "^[^/]+$"),
                          ("appCollection", "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
                          ("appName", "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"))]
_API_VERSION = {"name": "api-version", "in": "query", "required": True,
                "schema": {"type": "string", "enum": [API_VERSION]}}
_ERRORS = {str(status): {"description": text, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    for status, text in ((400, "Invalid request"), (401, "Missing or wrong key"), (404, "Unknown task or route"),
                         (405, "Wrong method"), (413, "Body too large"), (415, "Body is not JSON"))}

_FIELD_SCHEMAS = {
    "containerUrl": {"type": "string", "format": "uri", "maxLength": 4096,
                     "description": "https URL of a blob container with a SAS granting write and create"},
    "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
    "exportFormat": {"type": "string", "enum": list(EXPORT_FORMATS), "default": "JsonBlob"},
    "startDate": {"type": "string", "format": "date", "description": "First UTC day, included"},
    "endDate": {"type": "string", "format": "date", "description": "Last UTC day, included; not in the future"},
    "campaignType": {"type": "string", "enum": list(CAMPAIGN_TYPES)},
    "campaignIds": {"type": "array", "minItems": 1, "maxItems": MAX_CAMPAIGN_IDS,
                    "items": {"type": "integer", "minimum": 1}},
    "campaignWindowStart": {"type": "string", "format": "date-time"},
    "campaignWindowEnd": {"type": "string", "format": "date-time"},
    "exportOptions": {"type": "object", "additionalProperties": False,
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
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": {name: _FIELD_SCHEMAS[name] for name in route.fields}}


@functools.lru_cache(maxsize=1)
def document() -> dict:
    paths = {
        f"{APP_PATH}/exportTasks": {"get": {
            "operationId": "ExportTasks_List", "summary": "List the app's export tasks",
            "parameters": _PATH_PARAMETERS + [_API_VERSION,
                {"name": "$skip", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 100000}},
                {"name": "$top", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                           "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE}},
                {"name": "$orderby", "in": "query", "schema": {
                    "type": "string", "enum": ["dateCreated", "dateCreated desc"], "default": "dateCreated desc"}},
                {"name": "$skiptoken", "in": "query", "description": "Given in nextLink; opaque",
                 "schema": {"type": "string"}}],
            "responses": {"200": {"description": "A page of tasks", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ExportTaskListResult"}}}}, **_ERRORS}}},
        f"{APP_PATH}/exportTasks/{{id}}": {"get": {
            "operationId": "ExportTasks_Get", "summary": "Get one export task",
            "parameters": _PATH_PARAMETERS + [_API_VERSION, {"name": "id", "in": "path", "required": True,
                                                             "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The task", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ExportTaskResult"}}}}, **_ERRORS}}},
    }
    for route in ROUTES.values():
        paths[f"{APP_PATH}/exportTasks/{route.route}"] = {"post": {
            "operationId": f"ExportTasks_Create{route.route[0].upper()}{route.route[1:]}",
            "summary": f"Create a {route.export_type} export task",
            "parameters": _PATH_PARAMETERS + [_API_VERSION],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _request_schema(route)}}},
            "responses": {"202": {
                "description": "Accepted: the task is queued",
                "headers": {"Location": {"schema": {"type": "string"}}, "Retry-After": {"schema": {"type": "integer"}}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExportTaskResult"}}}},
                **_ERRORS}}}
    nullable_string = {"type": "string", "nullable": True}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Engagement Export", "version": API_VERSION,
                 "description": "Export tasks of mobile-engagement raw data (the 2014-12-01 contract)."},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "The app's export key"}},
            "schemas": {
                "ExportTaskResult": {"type": "object", "required": ["id", "state", "dateCreated", "exportType"],
                                     "properties": {
                    "id": {"type": "string"}, "description": {"type": "string"},
                    "state": {"type": "string", "enum": list(STATES)},
                    "dateCreated": {"type": "string", "format": "date-time"},
                    "dateCompleted": {"type": "string", "format": "date-time", "nullable": True},
                    "exportType": {"type": "string", "enum": sorted({r.export_type for r in ROUTES.values()})},
                    "errorDetails": nullable_string,
                    "exportFormat": {"type": "string", "enum": list(EXPORT_FORMATS)},
                    "containerUrl": {"type": "string", "description": "Without its SAS token"},
                    "progress": {"type": "object", "properties": {
                        "partsDone": {"type": "integer"}, "partsTotal": {"type": "integer", "nullable": True}}},
                    "recordCount": {"type": "integer"}, "bytes": {"type": "integer"},
                    "files": {"type": "array", "items": {"type": "object"}}}},
                "ExportTaskListResult": {"type": "object", "required": ["value"], "properties": {
                    "value": {"type": "array", "items": {"$ref": "#/components/schemas/ExportTaskResult"}},
                    "nextLink": {"type": "string", "format": "uri"}}},
                "ErrorResponse": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
            },
        },
    }
