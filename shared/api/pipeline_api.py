"""The exportPipelines API (an extension under the same base path and api-version), the HTTP side:

    GET    .../devices/exportPipelines                    the app's pipelines
    PUT    .../devices/exportPipelines/{name}             create (201) or replace (200)
    GET    .../devices/exportPipelines/{name}             one pipeline
    DELETE .../devices/exportPipelines/{name}             delete; the run in flight is cancelled
    POST   .../devices/exportPipelines/{name}/pause       no new run starts
    POST   .../devices/exportPipelines/{name}/resume      runs go on and catch up
    GET    .../devices/exportPipelines/{name}/runs        its runs, newest first, paged ($top, nextLink)

Authorised as exportTasks are (shared.api.http.authorize): reading pipelines and runs takes Export.Read, making,
changing, pausing, resuming and deleting them Export.Write, with a grant on the app; the app's export key sees its
own pipelines only. What each does is
shared.pipelines.service's."""

from __future__ import annotations

from urllib.parse import urlencode

import azure.functions as func

from shared.api.errors import BadRequest, MethodNotAllowed, NotFound
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
from shared.pipelines import service
from shared.pipelines.model import Pipeline
from shared.platform import apps
from shared.platform.config import get_settings
from shared.platform.times import utcnow

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000


@arm_endpoint("storage is unavailable; try again after Retry-After seconds")
def handle(req: func.HttpRequest) -> func.HttpResponse:
    # Reading pipelines and runs takes Export.Read; every change (PUT, DELETE, pause, resume) Export.Write.
    return dispatch(req, _route)


def _methods(method: str, allowed: dict[str, AppHandler], where: str) -> AppHandler:
    if method not in allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {where}; use {', '.join(allowed)}",
                               headers={"Allow": ", ".join(allowed)})
    return allowed[method]


def _route(rest: list[str], method: str) -> AppHandler:
    if not rest:
        allow_method(method, "GET", "exportPipelines", "list the app's pipelines")
        return lambda req, app: json_response({"value": [_result(p) for p in service.list_pipelines(app)]})
    name = rest[0]
    if len(rest) == 1:
        return _methods(method, {"GET": lambda req, app: _shown(service.get_pipeline(app, name)),
                                 "PUT": lambda req, app: _put(req, app, name),
                                 "DELETE": lambda req, app: _delete(app, name)}, "a pipeline")
    if len(rest) == 2 and rest[1] in ("pause", "resume"):
        action = service.pause if rest[1] == "pause" else service.resume
        allow_method(method, "POST", f"exportPipelines/{{name}}/{rest[1]}", f"{rest[1]} the pipeline")
        return lambda req, app: _shown(action(app, name))
    if len(rest) == 2 and rest[1] == "runs":
        allow_method(method, "GET", "exportPipelines/{name}/runs", "list the pipeline's runs")
        return lambda req, app: _runs(req, app, name)
    raise NotFound(f"no such resource: exportPipelines/{'/'.join(rest)}", code="NotFound")


def _result(pipeline: Pipeline) -> dict:
    return pipeline.to_result(utcnow())


def _shown(pipeline: Pipeline, status: int = 200) -> func.HttpResponse:
    return json_response(_result(pipeline), status=status)


def _put(req: func.HttpRequest, app: apps.AppRef, name: str) -> func.HttpResponse:
    body = read_json_body(req, get_settings().max_request_bytes)
    pipeline, created = service.put_pipeline(app, name, body)
    return _shown(pipeline, 201 if created else 200)


def _delete(app: apps.AppRef, name: str) -> func.HttpResponse:
    pipeline, cancelled = service.delete(app, name)
    result = _result(pipeline)
    result["state"] = "Deleted"
    if cancelled:
        result["cancelledTaskId"] = cancelled
    return json_response(result)


def _runs(req: func.HttpRequest, app: apps.AppRef, name: str) -> func.HttpResponse:
    top = whole_number(req.params, "$top", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if top == 0:
        raise BadRequest("$top must be at least 1", code="InvalidParameter")
    token = req.params.get("$skiptoken")
    after = None
    if token:
        if not token.isdigit() or len(token) > 9:
            raise BadRequest("$skiptoken is not a token this service gave out; follow nextLink as it is",
                             code="InvalidParameter")
        after = int(token)
    page, next_after = service.list_runs(app, name, top=top, after=after)
    body: dict = {"value": [record.to_result() for record in page]}
    if next_after is not None:
        query = {"api-version": API_VERSION, "$top": str(top), "$skiptoken": str(next_after)}
        body["nextLink"] = f"{base_url(req)}?{urlencode(query)}"
    return json_response(body)
