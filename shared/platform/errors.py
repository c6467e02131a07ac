"""The typed errors of the domain, named by what happened.

A ``ServiceError`` is a request the service refuses: the user's mistake, or a state that does not allow it. Each
kind carries the ARM error code the client gets; which HTTP status it becomes is decided in one place, at the
edge (shared.api.errors), so nothing below shared/api knows HTTP. A ``TransientError`` is raised out of a
trigger so the host retries. A ``PermanentJobError`` ends a job as Failed with its message as the
``errorDetails`` a person can act on.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses; ``code`` and ``message`` go to the client, and ``retry_after`` (seconds)
    when sending it again later can succeed."""

    code = "BadRequest"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after


class InvalidInput(ServiceError):
    """A field, header, name or token that is not valid; the message names it and says what would be."""

    code = "InvalidParameter"


class UnusableDestination(InvalidInput):
    """A destination container URL (and its SAS) that cannot be written to."""

    code = "InvalidContainerUrl"


class NotAuthenticated(ServiceError):
    """No credential, or one that is not valid for what was asked (``presented``: one was sent and refused)."""

    code = "AuthenticationFailed"

    def __init__(self, message: str, *, presented: bool, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.presented = presented


class NotAuthorized(ServiceError):
    """A valid credential whose principal lacks the app role or the grant the request needs; the message names
    the missing one and who can give it."""

    code = "AuthorizationFailed"


class IdentityUnavailable(ServiceError):
    """The token issuer's OpenID metadata or signing keys cannot be read now, so no token can be checked."""

    code = "IdentityProviderUnavailable"


class AppNotFound(ServiceError):
    """No app of that name is registered in the app collection."""

    code = "AppNotFound"


class AppExists(ServiceError):
    """The app is registered already; its keys are shown once, so registering again is refused."""

    code = "AppExists"


class GrantNotFound(ServiceError):
    """The principal holds no grant on that app or app collection."""

    code = "GrantNotFound"


class TaskNotFound(ServiceError):
    """The app has no such export task."""

    code = "ExportTaskNotFound"


class TaskEnded(ServiceError):
    """The export task already ended, or is committing its files, so it can no longer be changed."""

    code = "Conflict"


class PipelineNotFound(ServiceError):
    """The app has no pipeline of that name."""

    code = "PipelineNotFound"


class ErasureNotFound(ServiceError):
    """The app has no erasure task of that id."""

    code = "ErasureTaskNotFound"


class PipelineConflict(ServiceError):
    """A change the pipeline does not allow: a field its delivered files depend on, or a pipeline the operator
    declared."""

    code = "PropertyChangeNotAllowed"


class BatchInProgress(ServiceError):
    """A batch with this Idempotency-Key is being stored by another request; its answer comes later."""

    code = "IdempotencyKeyInUse"


class KeyReused(ServiceError):
    """An Idempotency-Key sent again with another body."""

    code = "IdempotencyKeyReused"


class RateLimited(ServiceError):
    """The app sends more than its quota; the batch fits again after ``retry_after`` seconds."""

    code = "TooManyRequests"


class TransientError(Exception):
    """A failure worth retrying (storage throttling, a timeout); raised so the host retries the message."""


class PermanentJobError(Exception):
    """A failure no retry can fix; the job ends Failed with this message as its errorDetails."""
