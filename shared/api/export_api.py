"""The exportTasks API (api-version 2014-12-01), the HTTP side: list, get, create and cancel an app's tasks.

One entry point, ``handle``, routes what the ExportTasks function receives to shared.tasks.service and answers an
HttpResponse: 202 + Location + Retry-After on creation, the ARM error shape for every refusal.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlencode

import azure.functions as func

from shared.api import task_query
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
from shared.export.export_request import parse_request
from shared.export.registry import ROUTES
from shared.platform import apps, retention
from shared.platform.config import get_settings
from shared.platform.times import utcnow
from shared.tasks import joblist, service

DEFAULT_PAGE_SIZE = 20  # the 2014-12-01 contract's default
MAX_PAGE_SIZE = 1000  # the contract's maximum is 40; larger pages are an extension
RETRY_AFTER_SECONDS = 2


@arm_endpoint("storage is unavailable; try again after Retry-After seconds")
def handle(req: func.HttpRequest) -> func.HttpResponse:
    # Reading a task or the list takes Export.Read; creating and cancelling (the POSTs) take Export.Write.
    return dispatch(req, _route)


def _route(rest: list[str], method: str) -> AppHandler:
    if not rest:
        allow_method(method, "GET", "exportTasks", "list tasks")
        return _list
    if len(rest) == 2 and rest[1].lower() == "cancel":
        allow_method(method, "POST", "exportTasks/{id}/cancel", "cancel a task")
        return lambda req, app: json_response(service.cancel_export(app, rest[0]).to_result())
    if len(rest) > 1:
        raise NotFound(f"no such resource: exportTasks/{'/'.join(rest)}", code="NotFound")
    name = rest[0]
    route = next((r for key, r in ROUTES.items() if key.lower() == name.lower()), None)
    if route is not None:
        allow_method(method, "POST", f"exportTasks/{route.route}", "create a task")
        return lambda req, app: _create(req, app, route)
    if method == "POST":
        raise NotFound(f"exportTasks/{name} is not an export route; routes are {', '.join(ROUTES)}",
                       code="NotFound")
    allow_method(method, "GET", "an export task", "read it")
    return lambda req, app: json_response(service.get_export(app, name).to_result())


def _list(req: func.HttpRequest, app: apps.AppRef) -> func.HttpResponse:
    params = req.params
    top = whole_number(params, "$top", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if top == 0:
        raise BadRequest("$top must be at least 1", code="InvalidParameter")
    skip = whole_number(params, "$skip", 0, 100_000)
    order, descending = task_query.parse_orderby(params.get("$orderby"))
    query = task_query.parse_filter(params.get("$filter"), joblist.JobQuery(order=order, descending=descending))
    after = None
    token = params.get("$skiptoken")
    if token:
        try:
            padded = token + "=" * (-len(token) % 4)
            after = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True).decode("utf-8")
        except (binascii.Error, UnicodeError, ValueError):
            raise BadRequest("$skiptoken is not a token this service gave out; follow nextLink as it is",
                             code="InvalidParameter") from None
    page = service.list_exports(app, query, top=top, skip=skip, after=after)
    body: dict[str, Any] = {"value": [job.to_result() for job in page.jobs]}
    if page.next_token is not None:
        next_query = {"api-version": API_VERSION, "$top": str(top),
                      "$orderby": f"{order} {'desc' if descending else 'asc'}"}
        if params.get("$filter"):
            next_query["$filter"] = params["$filter"]
        next_query["$skiptoken"] = base64.urlsafe_b64encode(page.next_token.encode()).decode().rstrip("=")
        body["nextLink"] = f"{base_url(req)}?{urlencode(next_query)}"
    return json_response(body)


def _create(req: func.HttpRequest, app: apps.AppRef, route) -> func.HttpResponse:
    settings = get_settings()
    body = read_json_body(req, settings.max_request_bytes)
    today = utcnow().date()
    request = parse_request(route, body, max_range_days=settings.max_range_days, today=today)
    if request.scope.start_date is not None:
        retention.refuse_before(app.id, "startDate", request.scope.start_date, today)
    job = service.submit_export(app, request)
    base = base_url(req)
    location = f"{base[:base.lower().rindex('/exporttasks/') + len('/exportTasks/')]}{job.id}?api-version={API_VERSION}"
    return json_response(job.to_result(), status=202,
                         headers={"Location": location, "Retry-After": str(RETRY_AFTER_SECONDS)})
