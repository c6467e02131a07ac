"""What a path that no function serves answers: an ARM error that says why, never an empty 404.

The other operation groups of the Microsoft.MobileEngagement 2014-12-01 API (app collections, apps,
supported platforms, campaigns, devices, import tasks) get a message that names the group, so a client
migrating from the retired service reads that this one serves export tasks, ingestion and the admin API only.
"""

from __future__ import annotations

import re

import azure.functions as func

from shared.api.errors import HttpRefusal, MethodNotAllowed, NotFound
from shared.api.http import arm_endpoint

_PROVIDER = r"^/?subscriptions/[^/]+/(?:resourcegroups/[^/]+/)?providers/microsoft\.mobileengagement/"
_APP = _PROVIDER + r"appcollections/[^/]+/apps/[^/]+/"
# (pattern of the path, lower-cased; the operation group of the 2014-12-01 API it belongs to)
OPERATION_GROUPS = (
    (re.compile(_APP + r"devices/importtasks(?:/.*)?$"), "importTasks"),
    (re.compile(_APP + r"(?:devices|users)(?:/.*)?$"), "devices"),
    (re.compile(_APP + r"campaigns(?:/.*)?$"), "campaigns"),
    (re.compile(_PROVIDER + r"appcollections/[^/]+/apps(?:/.*)?$"), "apps"),
    (re.compile(_PROVIDER + r"(?:appcollections(?:/[^/]+)?/?|checkappcollectionnameavailability)$"), "appCollections"),
    (re.compile(_PROVIDER + r"supportedplatforms$"), "supportedPlatforms"),
)
_COLLECT = re.compile(_APP + r"devices/collect/?$")
SERVED = ("POST .../devices/collect", ".../devices/exportTasks (GET, POST, and POST .../{id}/cancel)",
          ".../devices/exportPipelines (GET, PUT, DELETE, .../{name}/pause, .../{name}/resume, .../{name}/runs)",
          ".../devices/erasureTasks (GET, POST, GET .../{id})",
          ".../appcollections/{appCollection}/apps (the admin API)", "GET /openapi.json", "GET /health")


def refusal(method: str, path: str) -> HttpRefusal:
    lowered = path.lower()
    if _COLLECT.match(lowered):
        return MethodNotAllowed(f"{method} is not allowed on devices/collect; use POST", headers={"Allow": "POST"})
    for pattern, group in OPERATION_GROUPS:
        if pattern.match(lowered):
            return NotFound(f"this service serves the exportTasks, collect and apps operations of "
                            f"Microsoft.MobileEngagement (api-version 2014-12-01) only; the {group} operations of the "
                            f"retired Azure Mobile Engagement are not served here", code="OperationNotSupported")
    return NotFound(f"nothing is served at /{path.lstrip('/')[:200]}; this service serves {'; '.join(SERVED)}")


@arm_endpoint("the service is unavailable; try again after Retry-After seconds")
def handle(req: func.HttpRequest) -> func.HttpResponse:
    raise refusal(req.method.upper(), req.route_params.get("path") or "")
