"""JSON responses in the shape ARM clients read, for every HTTP function."""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

import azure.functions as func

from shared.errors import ApiError


def json_response(body: Any, *, status: int = 200, headers: Optional[Mapping[str, str]] = None) -> func.HttpResponse:
    # A lone surrogate cannot be UTF-8; written as its \uXXXX escape it is still valid JSON, not a crash.
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")
    return func.HttpResponse(text, status_code=status, headers=dict(headers or {}), mimetype="application/json",
                             charset="utf-8")


def error_response(error: ApiError) -> func.HttpResponse:
    """The ARM error shape: {"error": {"code": ..., "message": ...}}."""
    return json_response({"error": {"code": error.code, "message": error.message}}, status=error.status,
                         headers=error.headers)
