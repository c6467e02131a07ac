"""The exportTasks API (api-version 2014-12-01), the HTTP side: list, get, create and cancel an app's tasks.

One entry point, ``handle``, routes what the ExportTasks function receives to shared.tasks.service and answers an
HttpResponse: 202 + Location + Retry-After on creation, the ARM error shape for every refusal.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import azure.functions as func

from shared.api import task_query
from shared.api.errors import BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge, UnsupportedMediaType
from shared.api.http import API_VERSION, arm_endpoint, authorize, check_api_version, json_response
from shared.export.export_request import parse_request
from shared.export.registry import ROUTES
from shared.platform import apps, grants, json_input
from shared.platform.config import get_settings
from shared.tasks import joblist, service

DEFAULT_PAGE_SIZE = 20  # the 2014-12-01 contract's default
MAX_PAGE_SIZE = 1000  # the contract's maximum is 40; larger pages are an extension
RETRY_AFTER_SECONDS = 2
# A request body is a flat object but for exportOptions; this leaves room and refuses pathological nesting.
MAX_BODY_NESTING = 8
_WHOLE_NUMBER = re.compile(r"^[0-9]{1,9}\Z")


@arm_endpoint("storage is unavailable; try again after Retry-After seconds")
def handle(req: func.HttpRequest) -> func.HttpResponse:
    return _dispatch(req)


Handler = Callable[[func.HttpRequest, apps.AppRef], func.HttpResponse]


def _dispatch(req: func.HttpRequest) -> func.HttpResponse:
    # Routing first: a path or method that does not exist is a 404 or 405 whatever the key and api-version
    # (it says nothing about the app's tasks); then the credential, then the api-version. Reading a task or the
    # list takes Export.Read; creating and cancelling (the POSTs) take Export.Write.
    method = req.method.upper()
    handler = _route([part for part in (req.route_params.get("rest") or "").split("/") if part], method)
    app = authorize(req, role=grants.EXPORT_READ if method == "GET" else grants.EXPORT_WRITE)
    check_api_version(req.params)
    return handler(req, app)


def _allow(method: str, allowed: str, where: str, purpose: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {where}; use {allowed} to {purpose}",
                               headers={"Allow": allowed})


def _route(rest: list[str], method: str) -> Handler:
    if not rest:
        _allow(method, "GET", "exportTasks", "list tasks")
        return _list
    if len(rest) == 2 and rest[1].lower() == "cancel":
        _allow(method, "POST", "exportTasks/{id}/cancel", "cancel a task")
        return lambda req, app: json_response(service.cancel_export(app, rest[0]).to_result())
    if len(rest) > 1:
        raise NotFound(f"no such resource: exportTasks/{'/'.join(rest)}", code="NotFound")
    name = rest[0]
    route = next((r for key, r in ROUTES.items() if key.lower() == name.lower()), None)
    if route is not None:
        _allow(method, "POST", f"exportTasks/{route.route}", "create a task")
        return lambda req, app: _create(req, app, route)
    if method == "POST":
        raise NotFound(f"exportTasks/{name} is not an export route; routes are {', '.join(ROUTES)}",
                       code="NotFound")
    _allow(method, "GET", "an export task", "read it")
    return lambda req, app: json_response(service.get_export(app, name).to_result())


def _base_url(req: func.HttpRequest) -> str:
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _whole_number(params: Mapping[str, str], name: str, default: int, maximum: int | None) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    if not _WHOLE_NUMBER.match(text):
        raise BadRequest(f"{name} must be a whole number of 0 or more in ASCII digits, not {text[:40]!r}",
                         code="InvalidParameter")
    number = int(text)
    if maximum is not None and number > maximum:
        raise BadRequest(f"{name} is {number}; at most {maximum}", code="InvalidParameter")
    return number


def _list(req: func.HttpRequest, app: apps.AppRef) -> func.HttpResponse:
    params = req.params
    top = _whole_number(params, "$top", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if top == 0:
        raise BadRequest("$top must be at least 1", code="InvalidParameter")
    skip = _whole_number(params, "$skip", 0, 100_000)
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
        body["nextLink"] = f"{_base_url(req)}?{urlencode(next_query)}"
    return json_response(body)


def _read_body(req: func.HttpRequest, limit: int):
    raw = req.get_body() or b""
    if len(raw) > limit:
        raise PayloadTooLarge(f"the request body is {len(raw)} bytes; at most {limit} bytes are accepted")
    content_type = req.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(f"the request body must be JSON (Content-Type: application/json), not "
                                   f"{content_type}")
    if not raw.strip():
        raise BadRequest("the request body is empty; send the task's parameters as a JSON object",
                         code="InvalidRequestContent")
    try:
        body = json_input.parse(raw)
        json_input.check_writable(body, max_depth=MAX_BODY_NESTING)
    except json_input.JsonInputError as error:
        raise BadRequest(str(error), code="InvalidRequestContent") from None
    except json_input.Unwritable as problem:
        raise BadRequest(f"{problem.path or 'the request body'} {problem.reason}", code="InvalidParameter") from None
    return body


def _create(req: func.HttpRequest, app: apps.AppRef, route) -> func.HttpResponse:
    settings = get_settings()
    body = _read_body(req, settings.max_request_bytes)
    request = parse_request(route, body, max_range_days=settings.max_range_days)
    job = service.submit_export(app, request)
    base = _base_url(req)
    location = f"{base[:base.lower().rindex('/exporttasks/') + len('/exportTasks/')]}{job.id}?api-version={API_VERSION}"
    return json_response(job.to_result(), status=202,
                         headers={"Location": location, "Retry-After": str(RETRY_AFTER_SECONDS)})
