"""The admin API, the HTTP side: apps, their keys, settings and grants, under an app collection in the ARM shapes.

One entry point, ``handle``, serves what the Apps function receives (every path under
``.../appcollections/{appCollection}/``, less the more specific exportTasks and collect routes):

- ``GET apps``: the 2014-12-01 swagger's ``Apps_List`` (``{"value": [App]}``), the apps the caller may see;
- ``PUT apps/{a}`` registers an app and answers its keys once; ``GET`` reads it; ``DELETE`` removes it, its keys and
  its grants; ``POST apps/{a}/rotateKeys`` answers new keys;
- ``GET`` / ``PUT apps/{a}/settings``: the app's settings document (shared.platform.apps.AppSettings);
- ``GET apps/{a}/grants``, ``PUT`` / ``DELETE apps/{a}/grants/{principalObjectId}``: grants on one app, and the same
  under ``grants`` for the whole app collection.

Everything but listing takes an Entra ID token with the Apps.Admin app role; the service code is shared.platform's
apps and grants, which tools.admin calls too. Any other path answers as the NotServed function does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import azure.functions as func

from shared.api import not_served
from shared.api.errors import BadRequest, MethodNotAllowed, PayloadTooLarge
from shared.api.http import arm_endpoint, caller, check_api_version, json_response
from shared.platform import apps, grants, json_input
from shared.platform.errors import AppNotFound
from shared.platform.identity import Principal

# An admin body is a grant's roles or an app's settings: a few hundred bytes.
MAX_BODY_BYTES = 4096
APP_RESOURCE_TYPE = "Microsoft.MobileEngagement/appcollections/apps"
# Apps have no region of their own here; ARM's word for a resource that is not regional.
APP_LOCATION = "global"
log = logging.getLogger(__name__)

Handler = Callable[[func.HttpRequest, "Target", Principal], func.HttpResponse]


class Target:
    """What the path names: the app collection, and the app and principal when it names them."""

    def __init__(self, req: func.HttpRequest, app: str | None = None, principal: str | None = None) -> None:
        self.collection = req.route_params.get("appCollection", "")
        self.app = app
        self.principal = principal
        self.subscription = req.route_params.get("subscriptionId", "")
        self.resource_group = req.route_params.get("resourceGroupName", "")

    @property
    def ref(self) -> apps.AppRef:
        return apps.app_ref(self.collection, self.app or "")


@arm_endpoint("storage is unavailable; try again after Retry-After seconds")
def handle(req: func.HttpRequest) -> func.HttpResponse:
    # As exportTasks: routing first (404/405 whatever the credential), then the credential, then the api-version.
    method = req.method.upper()
    rest = [part for part in (req.route_params.get("rest") or "").split("/") if part]
    handler, target = _route(req, rest, method)
    principal = caller(req)
    if handler is not _list_apps:
        grants.require_admin(principal)
    check_api_version(req.params)
    return handler(req, target, principal)


def _methods(method: str, allowed: dict[str, Handler], where: str) -> Handler:
    if method not in allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {where}; use {' or '.join(allowed)}",
                               headers={"Allow": ", ".join(allowed)})
    return allowed[method]


def _route(req: func.HttpRequest, rest: list[str], method: str) -> tuple[Handler, Target]:
    words = [part.lower() for part in rest]
    if words == ["apps"]:
        return _methods(method, {"GET": _list_apps}, "apps"), Target(req)
    if len(words) >= 2 and words[0] == "apps":
        app = rest[1]
        if len(words) == 2:
            return _methods(method, {"GET": _get_app, "PUT": _register_app, "DELETE": _delete_app},
                            "apps/{appName}"), Target(req, app)
        if words[2:] == ["rotatekeys"]:
            return _methods(method, {"POST": _rotate_keys}, "apps/{appName}/rotateKeys"), Target(req, app)
        if words[2:] == ["settings"]:
            return _methods(method, {"GET": _get_settings, "PUT": _put_settings},
                            "apps/{appName}/settings"), Target(req, app)
        if words[2:] == ["grants"]:
            return _methods(method, {"GET": _list_grants}, "apps/{appName}/grants"), Target(req, app)
        if len(words) == 4 and words[2] == "grants":
            return _methods(method, {"PUT": _put_grant, "DELETE": _delete_grant},
                            "apps/{appName}/grants/{principalObjectId}"), Target(req, app, rest[3])
    if words == ["grants"]:
        return _methods(method, {"GET": _list_grants}, "grants"), Target(req)
    if len(words) == 2 and words[0] == "grants":
        return _methods(method, {"PUT": _put_grant, "DELETE": _delete_grant},
                        "grants/{principalObjectId}"), Target(req, None, rest[1])
    raise not_served.refusal(method, urlsplit(req.url).path)


def _body(req: func.HttpRequest) -> object:
    """The request's JSON body; None when it is empty."""
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is {len(raw)} bytes; at most {MAX_BODY_BYTES} bytes are accepted")
    if not raw.strip():
        return None
    try:
        body = json_input.parse(raw)
        json_input.check_writable(body, max_depth=4)
    except (json_input.JsonInputError, json_input.Unwritable) as error:
        raise BadRequest(f"the request body is not usable JSON: {error}", code="InvalidRequestContent") from None
    return body


def _no_content() -> func.HttpResponse:
    return func.HttpResponse(status_code=204)


def app_resource(target: Target, name: str) -> dict:
    """An app in the swagger's ``App`` shape (a tracked ARM resource); ``backendId`` is the app's id here."""
    return {"id": f"/subscriptions/{target.subscription}/resourceGroups/{target.resource_group}/providers/"
                  f"Microsoft.MobileEngagement/appcollections/{target.collection}/apps/{name}",
            "name": name, "type": APP_RESOURCE_TYPE, "location": APP_LOCATION, "tags": {},
            "properties": {"backendId": apps.AppRef(target.collection, name).id, "appState": "active"}}


def _list_apps(req: func.HttpRequest, target: Target, principal: Principal) -> func.HttpResponse:
    names = grants.visible_apps(principal, target.collection, apps.list_apps(target.collection))
    return json_response({"value": [app_resource(target, name) for name in names]})


def _get_app(req: func.HttpRequest, target: Target, principal: Principal) -> func.HttpResponse:
    if not apps.is_registered(target.ref):
        raise AppNotFound(f"app {target.collection}/{target.app} is not registered")
    return json_response(app_resource(target, target.ref.name))


def _keys(keys: apps.AppKeys, status: int) -> func.HttpResponse:
    return json_response({"exportKey": keys.export_key, "collectKey": keys.collect_key}, status=status)


def _register_app(req: func.HttpRequest, target: Target, principal: Principal) -> func.HttpResponse:
    body = _body(req)
    if body not in (None, {}):
        raise BadRequest("registering an app takes no body (set its settings with PUT .../settings once registered)",
                         code="InvalidRequestContent")
    keys = apps.register_app(target.collection, target.ref.name)
    log.info("app %s registered by principal %s", target.ref.id, principal.object_id)
    return _keys(keys, 201)


def _rotate_keys(req: func.HttpRequest, target: Target, principal: Principal) -> func.HttpResponse:
    keys = apps.rotate_keys(target.ref)
    log.info("keys of app %s rotated by principal %s", target.ref.id, principal.object_id)
    return _keys(keys, 200)


def _delete_app(req: func.HttpRequest, target: Target, principal: Principal) -> func.HttpResponse:
    apps.delete_app(target.ref)
    removed = grants.delete_grants_on(target.ref)
    log.info("app %s and its %d grants deleted by principal %s", target.ref.id, removed, principal.object_id)
    return _no_content()


def _get_settings(req: func.HttpRequest, target: Target, principal: Principal) -> func.HttpResponse:
    return json_response(apps.app_settings(target.ref).to_document())


def _put_settings(req: func.HttpRequest, target: Target, principal: Principal) -> func.HttpResponse:
    settings = apps.parse_app_settings({} if (body := _body(req)) is None else body)
    return json_response(apps.set_app_settings(target.ref, settings).to_document())


def _list_grants(req: func.HttpRequest, target: Target, principal: Principal) -> func.HttpResponse:
    if target.app is not None and not apps.is_registered(target.ref):
        raise AppNotFound(f"app {target.collection}/{target.app} is not registered")
    return json_response({"value": [grant.to_result() for grant in grants.grants_on(target.collection, target.app)]})


def _put_grant(req: func.HttpRequest, target: Target, principal: Principal) -> func.HttpResponse:
    roles = grants.parse_roles(_body(req))
    if target.app is not None and not apps.is_registered(target.ref):
        raise AppNotFound(f"app {target.collection}/{target.app} is not registered; register it first")
    grant = grants.put_grant(target.principal or "", target.collection, target.app, roles)
    log.info("principal %s granted %s on %s by principal %s", grant.principal, ",".join(grant.to_result()["roles"]),
             target.ref.id if target.app else target.collection, principal.object_id)
    return json_response(grant.to_result())


def _delete_grant(req: func.HttpRequest, target: Target, principal: Principal) -> func.HttpResponse:
    grants.delete_grant(target.principal or "", target.collection, target.app)
    return _no_content()
