"""The admin API through the local host, with tokens of a local OpenID issuer: an Apps.Admin registers an app and
gets its keys once, rotates them (the old stop), lists apps in the swagger's Apps_List shape, keeps grants and the
app's settings, and deletes it; a principal without Apps.Admin, an app's key and a missing credential are refused;
the listing shows a granted principal its granted apps only; tools.admin calls the same service code."""

from __future__ import annotations

import json
import uuid

import pytest
import requests
from helpers import API_VERSION, app_path, local_host

from devhost.azurite import connection_string, free_port
from shared.platform import apps, config, grants
from tools import admin


@pytest.fixture(scope="module")
def host(app_env):
    with local_host("ExportTasks", "Apps") as running:
        yield running


@pytest.fixture
def admin_token(tokens):
    return tokens.token(roles=[grants.APPS_ADMIN])


@pytest.fixture
def collection(names):
    return f"adm-{names.token}"


def collection_url(host, collection: str, suffix: str = "") -> str:
    return (f"{host.base_url}/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.MobileEngagement/"
            f"appcollections/{collection}{suffix}")


def call(method: str, url: str, credential: str | None, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {credential}"} if credential is not None else {}
    return requests.request(method, url, params={"api-version": API_VERSION}, headers=headers, timeout=30, **kwargs)


def refused(response: requests.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error["message"]


def tasks(host, collection: str, app: str, credential: str) -> requests.Response:
    return call("GET", f"{host.base_url}{app_path(collection, app)}/exportTasks", credential)


def test_an_admin_registers_rotates_lists_and_deletes_an_app(host, admin_token, collection):
    registered = call("PUT", collection_url(host, collection, "/apps/game"), admin_token)
    assert registered.status_code == 201
    keys = registered.json()
    assert set(keys) == {"exportKey", "collectKey"}
    assert keys["exportKey"].startswith("eek_") and keys["collectKey"].startswith("eck_")
    assert tasks(host, collection, "game", keys["exportKey"]).status_code == 200
    message = refused(call("PUT", collection_url(host, collection, "/apps/game"), admin_token), 409, "AppExists")
    assert "rotate its keys" in message

    rotated = call("POST", collection_url(host, collection, "/apps/game/rotateKeys"), admin_token)
    assert rotated.status_code == 200 and set(rotated.json()) == {"exportKey", "collectKey"}
    assert rotated.json()["exportKey"] != keys["exportKey"]
    refused(tasks(host, collection, "game", keys["exportKey"]), 401, "AuthenticationFailed")
    assert tasks(host, collection, "game", rotated.json()["exportKey"]).status_code == 200

    call("PUT", collection_url(host, collection, "/apps/chat"), admin_token)
    listed = call("GET", collection_url(host, collection, "/apps"), admin_token)
    assert listed.status_code == 200
    assert listed.json() == {"value": [{
        "id": f"/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.MobileEngagement/appcollections/"
              f"{collection}/apps/{name}", "name": name, "type": "Microsoft.MobileEngagement/appcollections/apps",
        "location": "global", "tags": {}, "properties": {"backendId": f"{collection}~{name}", "appState": "active"}}
        for name in ("chat", "game")]}
    assert call("GET", collection_url(host, collection, "/apps/chat"), admin_token).json()["name"] == "chat"

    grants.put_grant(str(uuid.uuid4()), collection, "game", None)
    assert call("DELETE", collection_url(host, collection, "/apps/game"), admin_token).status_code == 204
    refused(tasks(host, collection, "game", rotated.json()["exportKey"]), 401, "AuthenticationFailed")
    remaining = call("GET", collection_url(host, collection, "/apps"), admin_token).json()["value"]
    assert [app["name"] for app in remaining] == ["chat"]
    assert grants.grants_on(collection, "game") == []
    refused(call("DELETE", collection_url(host, collection, "/apps/game"), admin_token), 404, "AppNotFound")
    refused(call("POST", collection_url(host, collection, "/apps/game/rotateKeys"), admin_token), 404, "AppNotFound")


def test_only_an_apps_admin_token_manages_apps(host, tokens, collection):
    keys = apps.register_app(collection, "game")
    principal = str(uuid.uuid4())
    reader = tokens.token(roles=[grants.EXPORT_READ, grants.EXPORT_WRITE], oid=principal)
    message = refused(call("PUT", collection_url(host, collection, "/apps/new"), reader), 403, "AuthorizationFailed")
    assert f"principal {principal} lacks the Apps.Admin app role" in message
    message = refused(call("POST", collection_url(host, collection, "/apps/game/rotateKeys"), keys.export_key), 403,
                      "AuthorizationFailed")
    assert "an app's key cannot manage or list apps" in message
    response = call("DELETE", collection_url(host, collection, "/apps/game"), None)
    refused(response, 401, "AuthenticationFailed")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="engagement-export"'
    response = call("GET", collection_url(host, collection, "/apps"), "a.b.c")
    refused(response, 401, "InvalidAuthenticationToken")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert apps.is_registered(apps.app_ref(collection, "game"))


def test_the_routing_answers_before_the_credential(host, collection):
    response = call("PATCH", collection_url(host, collection, "/apps/game"), None)
    assert response.status_code == 405 and response.headers["Allow"] == "GET, PUT, DELETE"
    refused(call("GET", collection_url(host, collection, "/apps/game/campaigns"), None), 404, "OperationNotSupported")


def test_apps_list_shows_a_granted_principal_its_granted_apps_only(host, tokens, collection):
    for name in ("a", "b", "c"):
        apps.register_app(collection, name)
    principal = str(uuid.uuid4())
    token = tokens.token(roles=[grants.EXPORT_READ], oid=principal)
    assert call("GET", collection_url(host, collection, "/apps"), token).json() == {"value": []}
    grants.put_grant(principal, collection, "b", None)
    assert [app["name"] for app in call("GET", collection_url(host, collection, "/apps"), token).json()["value"]] \
        == ["b"]
    grants.put_grant(principal, collection, None, frozenset({grants.EXPORT_READ}))
    assert [app["name"] for app in call("GET", collection_url(host, collection, "/apps"), token).json()["value"]] \
        == ["a", "b", "c"]
    message = refused(call("GET", collection_url(host, collection, "/apps"), tokens.token(oid=principal)), 403,
                      "AuthorizationFailed")
    assert "holds none of the app roles" in message


def test_grants_are_put_listed_and_deleted_through_the_api(host, tokens, admin_token, collection):
    apps.register_app(collection, "game")
    principal = str(uuid.uuid4())
    url = collection_url(host, collection, f"/apps/game/grants/{principal}")
    put = call("PUT", url, admin_token, json={"roles": ["Export.Read"]})
    assert put.status_code == 200
    assert {key: put.json()[key] for key in ("principalObjectId", "appCollection", "appName", "roles")} == {
        "principalObjectId": principal, "appCollection": collection, "appName": "game", "roles": ["Export.Read"]}
    token = tokens.token(roles=[grants.EXPORT_READ, grants.EXPORT_WRITE], oid=principal)
    assert tasks(host, collection, "game", token).status_code == 200
    assert call("PUT", url, admin_token).json()["roles"] == ["Export.Read", "Export.Write", "Data.Erase"]
    listed = call("GET", collection_url(host, collection, "/apps/game/grants"), admin_token).json()["value"]
    assert [(grant["principalObjectId"], grant["roles"]) for grant in listed] == [
        (principal, ["Export.Read", "Export.Write", "Data.Erase"])]
    assert call("DELETE", url, admin_token).status_code == 204
    refused(tasks(host, collection, "game", token), 403, "AuthorizationFailed")
    refused(call("DELETE", url, admin_token), 404, "GrantNotFound")

    everyone = collection_url(host, collection, f"/grants/{principal}")
    assert call("PUT", everyone, admin_token, json={}).status_code == 200
    assert tasks(host, collection, "game", token).status_code == 200
    assert [grant["principalObjectId"] for grant in call("GET", collection_url(host, collection, "/grants"),
                                                         admin_token).json()["value"]] == [principal]
    assert call("DELETE", everyone, admin_token).status_code == 204
    refused(tasks(host, collection, "game", token), 403, "AuthorizationFailed")


@pytest.mark.parametrize("body, complaint", [
    ({"roles": ["Apps.Admin"]}, "roles must be a non-empty list of Export.Read, Export.Write, Data.Erase"),
    ({"roles": []}, "roles must be a non-empty list"),
    ({"role": ["Export.Read"]}, "a grant's body holds roles only, not role"),
])
def test_a_grant_that_cannot_be_is_a_400_naming_the_field(host, admin_token, collection, body, complaint):
    apps.register_app(collection, "game")
    message = refused(call("PUT", collection_url(host, collection, f"/apps/game/grants/{uuid.uuid4()}"), admin_token,
                           json=body), 400, "InvalidGrant")
    assert complaint in message


def test_a_grant_for_a_principal_id_that_is_not_one_or_an_app_not_registered_is_refused(host, admin_token, collection):
    apps.register_app(collection, "game")
    message = refused(call("PUT", collection_url(host, collection, "/apps/game/grants/not~an~id"), admin_token), 400,
                      "InvalidPrincipalId")
    assert "principalObjectId 'not~an~id' is not an object id" in message
    refused(call("PUT", collection_url(host, collection, f"/apps/ghost/grants/{uuid.uuid4()}"), admin_token), 404,
            "AppNotFound")


def test_an_apps_settings_are_set_checked_and_readable_by_the_service(host, admin_token, collection):
    apps.register_app(collection, "game")
    url = collection_url(host, collection, "/apps/game/settings")
    assert call("GET", url, admin_token).json() == {"rawRetentionDays": None, "tableRetentionDays": None}
    put = call("PUT", url, admin_token, json={"rawRetentionDays": 90})
    assert put.status_code == 200 and put.json() == {"rawRetentionDays": 90, "tableRetentionDays": None}
    assert apps.app_settings(apps.app_ref(collection, "game")) == apps.AppSettings(raw_retention_days=90)
    for body, complaint in (({"rawRetentionDays": 0}, "rawRetentionDays must be a whole number of days from 1 to 3650"),
                            ({"tableRetentionDays": "30"}, "tableRetentionDays must be a whole number"),
                            ({"retention": 3}, "retention is not an app setting; the settings are rawRetentionDays")):
        assert complaint in refused(call("PUT", url, admin_token, json=body), 400, "InvalidAppSettings")
    # Rotating the keys keeps the settings.
    call("POST", collection_url(host, collection, "/apps/game/rotateKeys"), admin_token)
    assert call("GET", url, admin_token).json()["rawRetentionDays"] == 90
    refused(call("GET", collection_url(host, collection, "/apps/ghost/settings"), admin_token), 404, "AppNotFound")


def test_tools_admin_calls_the_same_service_code(app_env, collection, capsys, monkeypatch):
    # The session's storage is Azurite already; local.settings.json's schedules and routes must not join it.
    monkeypatch.setattr(admin.localenv, "prepare", lambda: None)
    assert admin.main(["register-app", "--collection", collection, "--app", "game"]) == 0
    keys = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(keys) == {"exportKey", "collectKey"}
    assert admin.main(["register-app", "--collection", collection, "--app", "game"]) == 2
    assert "already registered" in capsys.readouterr().err
    principal = str(uuid.uuid4())
    assert admin.main(["grant", "--collection", collection, "--app", "game", "--principal", principal,
                       "--roles", "Export.Read"]) == 0
    assert json.loads(capsys.readouterr().out)["roles"] == ["Export.Read"]
    assert [(grant.principal, grant.roles) for grant in grants.grants_on(collection, "game")] == [
        (principal, frozenset({"Export.Read"}))]
    assert admin.main(["list-apps", "--collection", collection]) == 0
    assert capsys.readouterr().out.split() == ["game"]
    assert admin.main(["delete-app", "--collection", collection, "--app", "game"]) == 0
    assert not apps.is_registered(apps.app_ref(collection, "game")) and grants.grants_on(collection, "game") == []


def test_with_storage_down_the_admin_api_and_a_tokens_grant_check_answer_503_with_retry_after(host, tokens,
                                                                                              settings_override):
    settings_override(**{config.STORAGE_CONNECTION: connection_string(
        "127.0.0.1", {service: free_port() for service in ("blob", "queue", "table")})})
    admin_token = tokens.token(roles=[grants.APPS_ADMIN])
    reader = tokens.token(roles=[grants.EXPORT_READ])
    for response in (call("PUT", collection_url(host, "down", "/apps/game"), admin_token),
                     call("GET", collection_url(host, "down", "/apps"), admin_token),
                     tasks(host, "down", "game", reader)):
        assert "storage is unavailable" in refused(response, 503, "ServiceUnavailable")
        assert response.headers["Retry-After"] == "5"
