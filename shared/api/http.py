"""The HTTP edge of every HTTP function: the api-version check, who the caller is (an Entra ID access token or an
app's key) and what it may do, and JSON responses in the shape ARM clients read."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.api.errors import (
    BadRequest,
    InternalError,
    MethodNotAllowed,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
    headers_of,
    status_of,
)
from shared.platform import apps, grants, identity, json_input
from shared.platform.config import AUTH_EXPORT_KEYS, AUTH_ISSUER, get_settings
from shared.platform.errors import AppNotFound, NotAuthenticated, NotAuthorized, ServiceError, TransientError

API_VERSION = "2014-12-01"
# A request body is a flat object but for exportOptions; this leaves room and refuses pathological nesting.
MAX_BODY_NESTING = 8
_WHOLE_NUMBER = re.compile(r"^[0-9]{1,9}\Z")

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


def _bearer(req: func.HttpRequest) -> str:
    scheme, _, credential = (req.headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise NotAuthenticated("the request needs an Authorization header: Bearer <an Entra ID access token, or the "
                               "app's export key>", presented=False)
    return credential.strip()


def _principal(token: str) -> identity.Principal:
    settings = get_settings()
    if settings.auth_issuer is None:
        raise NotAuthenticated(f"this service takes no Entra ID access tokens ({AUTH_ISSUER} is not set); send the "
                               f"app's export key", presented=True, code="InvalidAuthenticationToken")
    return identity.principal_of(token, settings)


def authorize(req: func.HttpRequest, *, role: str) -> apps.AppRef:
    """The app of the request's path (its appCollection and appName), once the caller may act on it with ``role``
    (grants.EXPORT_READ, EXPORT_WRITE or DATA_ERASE): an Entra ID access token whose principal holds the role and a
    grant on the app, or, while AUTH_EXPORT_KEYS is on, the app's own export key, which holds every app role on its
    own app. Raises NotAuthenticated (401) for a missing or invalid credential, NotAuthorized (403, naming what is
    missing), AppNotFound (404) for an app a granted principal names that is not registered."""
    ref = apps.app_ref(req.route_params.get("appCollection", ""), req.route_params.get("appName", ""))
    credential = _bearer(req)
    if identity.looks_like_token(credential):
        grants.require(_principal(credential), role, ref)
        if not apps.is_registered(ref):
            raise AppNotFound(f"app {ref.collection}/{ref.name} is not registered")
        return ref
    if not get_settings().export_keys:
        raise NotAuthenticated(f"export keys are turned off on this service ({AUTH_EXPORT_KEYS}=false); send an Entra "
                               f"ID access token", presented=True)
    apps.authenticate(ref, f"Bearer {credential}", purpose="export")
    return ref


def reads_or_writes(method: str) -> str:
    """The app role a method of an export resource needs: GET reads (Export.Read); the others change (Export.Write)."""
    return grants.EXPORT_READ if method == "GET" else grants.EXPORT_WRITE


AppHandler = Callable[[func.HttpRequest, apps.AppRef], func.HttpResponse]


def dispatch(req: func.HttpRequest, route: Callable[[list[str], str], AppHandler], *,
             role_of: Callable[[str], str] = reads_or_writes) -> func.HttpResponse:
    """Serves a request for one app's resource (the rest of its path in route param ``rest``): routing first, so a
    path or method that does not exist is a 404 or 405 whatever the credential and api-version (it says nothing
    about the app); then the caller, authorized for ``role_of(method)``; then the api-version; then the handler."""
    method = req.method.upper()
    handler = route([part for part in (req.route_params.get("rest") or "").split("/") if part], method)
    app = authorize(req, role=role_of(method))
    check_api_version(req.params)
    return handler(req, app)


def caller(req: func.HttpRequest) -> identity.Principal:
    """The principal of the request's Entra ID access token; an app's key is refused with 403, as it opens that one
    app's exports and manages nothing."""
    credential = _bearer(req)
    if not identity.looks_like_token(credential):
        raise NotAuthorized("an app's key cannot manage or list apps; send an Entra ID access token of a principal "
                            "with the Apps.Admin app role (or, to list apps, a granted one)")
    return _principal(credential)


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


def allow_method(method: str, allowed: str, where: str, purpose: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {where}; use {allowed} to {purpose}",
                               headers={"Allow": allowed})


def base_url(req: func.HttpRequest) -> str:
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def whole_number(params: Mapping[str, str], name: str, default: int, maximum: int | None) -> int:
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


def read_json_body(req: func.HttpRequest, limit: int) -> Any:
    """The request's JSON body, within ``limit`` bytes and MAX_BODY_NESTING levels; a BadRequest (or 413, 415)
    saying what is wrong otherwise."""
    raw = req.get_body() or b""
    if len(raw) > limit:
        raise PayloadTooLarge(f"the request body is {len(raw)} bytes; at most {limit} bytes are accepted")
    content_type = req.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(f"the request body must be JSON (Content-Type: application/json), not "
                                   f"{content_type}")
    if not raw.strip():
        raise BadRequest("the request body is empty; send the resource's parameters as a JSON object",
                         code="InvalidRequestContent")
    try:
        body = json_input.parse(raw)
        json_input.check_writable(body, max_depth=MAX_BODY_NESTING)
    except json_input.JsonInputError as error:
        raise BadRequest(str(error), code="InvalidRequestContent") from None
    except json_input.Unwritable as problem:
        raise BadRequest(f"{problem.path or 'the request body'} {problem.reason}", code="InvalidParameter") from None
    return body
