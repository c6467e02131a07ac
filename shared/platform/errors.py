"""The typed errors of the domain.

A ``ApiError`` is the user's mistake and becomes a 4xx in the ARM error shape. A ``TransientError`` is raised
out of a trigger so the host retries. A ``PermanentJobError`` ends a job as Failed with its message as the
``errorDetails`` a person can act on.
"""

from __future__ import annotations


class ApiError(Exception):
    """A request the service refuses; ``status`` and ``code`` go to the client with ``message``."""

    status = 400
    code = "BadRequest"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status = 400
    code = "BadRequest"


class Unauthorized(ApiError):
    status = 401
    code = "AuthenticationFailed"


class NotFound(ApiError):
    status = 404
    code = "NotFound"


class MethodNotAllowed(ApiError):
    status = 405
    code = "MethodNotAllowed"


class PayloadTooLarge(ApiError):
    status = 413
    code = "RequestEntityTooLarge"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "UnsupportedMediaType"


class Conflict(ApiError):
    status = 409
    code = "Conflict"


class Unprocessable(ApiError):
    status = 422
    code = "UnprocessableEntity"


class TooManyRequests(ApiError):
    status = 429
    code = "TooManyRequests"


class TransientError(Exception):
    """A failure worth retrying (storage throttling, a timeout); raised so the host retries the message."""


class PermanentJobError(Exception):
    """A failure no retry can fix; the job ends Failed with this message as its errorDetails."""
