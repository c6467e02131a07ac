"""The erasureTasks API (an extension under the same base path and api-version), the HTTP side:

    POST .../devices/erasureTasks          erase devices' or users' data (202, Location, Retry-After)
    GET  .../devices/erasureTasks          the app's erasure tasks, newest first, paged ($top, nextLink)
    GET  .../devices/erasureTasks/{id}     one task: its state and what it erased where

Asking for an erasure takes the Data.Erase app role (the app's export key holds it on its own app); reading
tasks takes Export.Read. What each does is shared.erasure.service's."""

from __future__ import annotations

from urllib.parse import urlencode

import azure.functions as func

from shared.api.errors import BadRequest, NotFound
from shared.api.http import (
    API_VERSION,
    AppHandler,
    allow_method,
    arm_endpoint,
    base_url,
    dispatch,
    json_response,
    read_json_body,
    whole_number,
)
from shared.erasure import service
from shared.platform import apps, grants

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000
MAX_BODY_BYTES = 1024 * 1024  # a thousand ids of 128 characters, each up to 4 bytes in UTF-8, and the JSON


@arm_endpoint("storage is unavailable; try again after Retry-After seconds")
def handle(req: func.HttpRequest) -> func.HttpResponse:
    return dispatch(req, _route, role_of=lambda method: grants.DATA_ERASE if method == "POST" else grants.EXPORT_READ)


def _route(rest: list[str], method: str) -> AppHandler:
    if not rest:
        if method == "POST":
            return _create
        allow_method(method, "GET", "erasureTasks", "list the app's erasure tasks")
        return _list
    if len(rest) == 1:
        allow_method(method, "GET", "an erasure task", "read it")
        return lambda req, app: json_response(service.get_erasure(app, rest[0]).to_result())
    raise NotFound(f"no such resource: erasureTasks/{'/'.join(rest)}", code="NotFound")


def _create(req: func.HttpRequest, app: apps.AppRef) -> func.HttpResponse:
    task = service.create_erasure(app, read_json_body(req, MAX_BODY_BYTES))
    base = base_url(req).rstrip("/")
    return json_response(task.to_result(), status=202,
                         headers={"Location": f"{base}/{task.id}?api-version={API_VERSION}",
                                  "Retry-After": str(service.RETRY_AFTER_SECONDS)})


def _list(req: func.HttpRequest, app: apps.AppRef) -> func.HttpResponse:
    top = whole_number(req.params, "$top", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if top == 0:
        raise BadRequest("$top must be at least 1", code="InvalidParameter")
    token = req.params.get("$skiptoken") or "0"
    if not token.isdigit() or len(token) > 7:
        raise BadRequest("$skiptoken is not a token this service gave out; follow nextLink as it is",
                         code="InvalidParameter")
    skip = int(token)
    tasks = service.list_erasures(app)
    body: dict = {"value": [task.to_result() for task in tasks[skip:skip + top]]}
    if skip + top < len(tasks):
        query = {"api-version": API_VERSION, "$top": str(top), "$skiptoken": str(skip + top)}
        body["nextLink"] = f"{base_url(req)}?{urlencode(query)}"
    return json_response(body)
