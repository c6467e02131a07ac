"""JSON responses in the shape ARM clients read, for every HTTP function."""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, Callable, Mapping, Optional

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.errors import ApiError, TransientError

Handler = Callable[[func.HttpRequest], func.HttpResponse]
# How long a client waits before trying again when the app's storage is down or throttling.
STORAGE_RETRY_AFTER_SECONDS = 5
log = logging.getLogger(__name__)


def json_response(body: Any, *, status: int = 200, headers: Optional[Mapping[str, str]] = None) -> func.HttpResponse:
    # A lone surrogate cannot be UTF-8; written as its \uXXXX escape it is still valid JSON, not a crash.
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")
    return func.HttpResponse(text, status_code=status, headers=dict(headers or {}), mimetype="application/json",
                             charset="utf-8")


def error_response(error: ApiError) -> func.HttpResponse:
    """The ARM error shape: {"error": {"code": ..., "message": ...}}."""
    return json_response({"error": {"code": error.code, "message": error.message}}, status=error.status,
                         headers=error.headers)


def arm_endpoint(unavailable: str) -> Callable:
    """Wraps an HTTP handler so that every outcome is in the ARM shape: a refusal as its 4xx; storage that is
    down or throttling as 503 with Retry-After and ``unavailable`` as the message; anything else as a 500
    without details (logged), never a traceback."""
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def handle(req: func.HttpRequest) -> func.HttpResponse:
            try:
                return handler(req)
            except ApiError as error:
                return error_response(error)
            except (AzureError, TransientError) as error:
                log.warning("%s: storage failed: %r", handler.__module__, error)
                return error_response(ApiError(unavailable, code="ServiceUnavailable", status=503,
                                               headers={"Retry-After": str(STORAGE_RETRY_AFTER_SECONDS)}))
            except Exception:
                log.exception("%s failed", handler.__module__)
                return error_response(ApiError("the service failed to answer; try again", code="InternalServerError",
                                               status=500))
        return handle
    return wrap
