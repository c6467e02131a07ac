"""Refusals as HTTP answers: the statuses of the domain's errors (shared.platform.errors), in one place, and the
refusals of the HTTP edge itself (a path, a method, a body, an api-version), which carry their own status."""

from __future__ import annotations

from collections.abc import Mapping

from shared.platform.errors import (
    AppExists,
    AppNotFound,
    BatchInProgress,
    ErasureNotFound,
    GrantNotFound,
    IdentityUnavailable,
    InvalidInput,
    KeyReused,
    NotAuthenticated,
    NotAuthorized,
    PipelineConflict,
    PipelineNotFound,
    RateLimited,
    ServiceError,
    TaskEnded,
    TaskNotFound,
)

# The status of each kind of domain error (a subclass takes its parent's: UnusableDestination is an InvalidInput).
STATUS_OF_DOMAIN_ERRORS: tuple[tuple[type[ServiceError], int], ...] = (
    (InvalidInput, 400), (NotAuthenticated, 401), (NotAuthorized, 403), (TaskNotFound, 404), (AppNotFound, 404),
    (GrantNotFound, 404), (PipelineNotFound, 404), (ErasureNotFound, 404), (TaskEnded, 409), (PipelineConflict, 409),
    (BatchInProgress, 409), (AppExists, 409), (KeyReused, 422), (RateLimited, 429), (IdentityUnavailable, 503),
)


class HttpRefusal(ServiceError):
    """A refusal of the HTTP edge itself, with its status and any header it needs (Allow)."""

    status = 400

    def __init__(self, message: str, *, code: str | None = None, headers: Mapping[str, str] | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message, code=code, retry_after=retry_after)
        self.headers = dict(headers or {})


class BadRequest(HttpRefusal):
    status = 400
    code = "BadRequest"


class NotFound(HttpRefusal):
    status = 404
    code = "NotFound"


class MethodNotAllowed(HttpRefusal):
    status = 405
    code = "MethodNotAllowed"


class PayloadTooLarge(HttpRefusal):
    status = 413
    code = "RequestEntityTooLarge"


class UnsupportedMediaType(HttpRefusal):
    status = 415
    code = "UnsupportedMediaType"


class InternalError(HttpRefusal):
    status = 500
    code = "InternalServerError"


class Unavailable(HttpRefusal):
    status = 503
    code = "ServiceUnavailable"


def status_of(error: ServiceError) -> int:
    if isinstance(error, HttpRefusal):
        return error.status
    for kind, status in STATUS_OF_DOMAIN_ERRORS:
        if isinstance(error, kind):
            return status
    return 400


# The challenge a client gets with a 401 (RFC 6750): which scheme, and whether the credential it sent was refused.
CHALLENGE = 'Bearer realm="engagement-export"'


def headers_of(error: ServiceError) -> dict[str, str]:
    headers = dict(error.headers) if isinstance(error, HttpRefusal) else {}
    if isinstance(error, NotAuthenticated):
        headers["WWW-Authenticate"] = CHALLENGE + (', error="invalid_token"' if error.presented else "")
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return headers
