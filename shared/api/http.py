"""The HTTP edge of every HTTP function: the api-version and bearer-key checks, and JSON responses in the
shape ARM clients read."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.api.errors import BadRequest, InternalError, Unavailable, headers_of, status_of
from shared.platform import apps
from shared.platform.errors import ServiceError, TransientError

API_VERSION = "2014-12-01"

Handler = Callable[[func.HttpRequest], func.HttpResponse]
# How long a client waits before trying again when the app's storage is down or throttling.
STORAGE_RETRY_AFTER_SECONDS = 5
log = logging.getLogger(__name__)


def check_api_version(params: Mapping[str, str]) -> None:
    version = params.get("api-version")
    if version is None:
        raise BadRequest(f"the api-version query parameter is required; use api-version={API_VERSION}",
                         code="MissingApiVersionParameter")
    if version != API_VERSION:
        raise BadRequest(f"api-version {version!r} is not supported; the supported version is {API_VERSION}",
                         code="InvalidApiVersionParameter")


def authorized_app(req: func.HttpRequest, *, purpose: str) -> apps.AppRef:
    """The app of the request's path, once its bearer key is the app's key for ``purpose``."""
    ref = apps.app_ref(req.route_params.get("appCollection", ""), req.route_params.get("appName", ""))
    apps.authenticate(ref, req.headers.get("Authorization", ""), purpose=purpose)
    return ref


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    # A lone surrogate cannot be UTF-8; written as its \uXXXX escape it is still valid JSON, not a crash.
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")
    return func.HttpResponse(text, status_code=status, headers=dict(headers or {}), mimetype="application/json",
                             charset="utf-8")


def error_response(error: ServiceError) -> func.HttpResponse:
    """The ARM error shape: {"error": {"code": ..., "message": ...}}, with the error's status (shared.api.errors)."""
    return json_response({"error": {"code": error.code, "message": error.message}}, status=status_of(error),
                         headers=headers_of(error))


def arm_endpoint(unavailable: str) -> Callable:
    """Wraps an HTTP handler so that every outcome is in the ARM shape: a refusal as its 4xx; storage that is
    down or throttling as 503 with Retry-After and ``unavailable`` as the message; anything else as a 500
    without details (logged), never a traceback."""
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def handle(req: func.HttpRequest) -> func.HttpResponse:
            try:
                return handler(req)
            except ServiceError as error:
                return error_response(error)
            except (AzureError, TransientError) as error:
                log.warning("%s: storage failed: %r", handler.__module__, error)
                return error_response(Unavailable(unavailable, retry_after=STORAGE_RETRY_AFTER_SECONDS))
            except Exception:
                log.exception("%s failed", handler.__module__)
                return error_response(InternalError("the service failed to answer; try again"))
        return handle
    return wrap
