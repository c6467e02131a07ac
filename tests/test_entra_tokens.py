"""Entra ID access tokens on the exportTasks API, against a local OpenID issuer on loopback (tests/oidc_issuer.py):
a granted principal creates and reads tasks with its token; each kind of bad token is its own 401 with
`WWW-Authenticate: Bearer error="invalid_token"` that says why without quoting the token; an issuer that is down is a
503 with Retry-After; a valid token without the role or the grant is a 403 naming what is missing; a key rolled over
is fetched again, at most once per KEY_REFETCH_SECONDS; and no token or key reaches a log line."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests
from helpers import API_VERSION, app_path, container_sas_url, local_host
from oidc_issuer import LocalIssuer, SigningKey

from shared.platform import apps, config, grants, identity
from shared.platform.config import ConfigError, load_settings


@pytest.fixture(scope="module")
def host(app_env):
    with local_host("ExportTasks", "ExportPipelines", "Apps") as running:
        yield running


@pytest.fixture
def app(names):
    """A registered app, granted nothing yet: (its ref, its keys)."""
    ref = apps.app_ref(f"tok-{names.token}", "game")
    return ref, apps.register_app(ref.collection, ref.name)


def tasks_url(host, ref, suffix: str = "") -> str:
    return f"{host.base_url}{app_path(ref.collection, ref.name)}/exportTasks{suffix}"


def call(method: str, url: str, credential: str | None, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {credential}"} if credential is not None else {}
    return requests.request(method, url, params={"api-version": API_VERSION}, headers=headers, timeout=30, **kwargs)


def arm_error(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"}
    return error


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hand_made(header: dict, payload: dict, sign) -> str:
    """A token built by hand, as an attacker would: ``sign`` maps the signing input to the signature bytes."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def claims(issuer: LocalIssuer, **changes) -> dict:
    return jwt.decode(issuer.token(roles=[grants.EXPORT_READ]), options={"verify_signature": False}) | changes


def test_a_granted_principal_creates_lists_and_reads_tasks_with_its_token(app_env, host, tokens, app, names):
    ref, _ = app
    principal = str(uuid.uuid4())
    grants.put_grant(principal, ref.collection, ref.name, None)
    token = tokens.token(roles=[grants.EXPORT_READ, grants.EXPORT_WRITE], oid=principal)
    created = call("POST", tasks_url(host, ref, "/tags"), token,
                   json={"containerUrl": container_sas_url(app_env, names.container("tok"))})
    assert created.status_code == 202, created.text
    task = created.json()
    assert (task["exportType"], task["state"]) == ("Tag", "Queued")
    read = call("GET", tasks_url(host, ref, f"/{task['id']}"), token)
    assert read.status_code == 200 and read.json()["id"] == task["id"]
    listed = call("GET", tasks_url(host, ref), token)
    assert listed.status_code == 200 and [t["id"] for t in listed.json()["value"]] == [task["id"]]
    cancelled = call("POST", tasks_url(host, ref, f"/{task['id']}/cancel"), token)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "Failed"


def _bad_tokens(issuer: LocalIssuer) -> dict[str, tuple[str, str]]:
    """Each refusal: its name -> (the token, what the 401's message says)."""
    real = issuer.keys[0]
    forger = SigningKey()
    forger.kid = real.kid  # names the issuer's key, signed with another
    unpublished = SigningKey()
    now = int(time.time())
    return {
        "bad signature": (issuer.token(roles=[grants.EXPORT_READ], key=forger), "signature does not verify"),
        "alg none": (hand_made({"alg": "none", "typ": "JWT", "kid": real.kid}, claims(issuer), lambda _: b""),
                     "not signed (alg none)"),
        "HMAC keyed with the public key": (
            hand_made({"alg": "HS256", "typ": "JWT", "kid": real.kid}, claims(issuer),
                      lambda data: hmac.new(real.public_pem, data, hashlib.sha256).digest()),
            "symmetric algorithm 'HS256' is refused"),
        "unknown key id": (issuer.token(roles=[grants.EXPORT_READ], key=unpublished), "not one of the issuer's"),
        "another issuer": (issuer.token(roles=[grants.EXPORT_READ], iss="https://login.microsoftonline.com/x/v2.0"),
                           "issued by another issuer (iss)"),
        "another audience": (issuer.token(roles=[grants.EXPORT_READ], aud="api://another-api"),
                             "not for this API (aud)"),
        "expired": (issuer.token(roles=[grants.EXPORT_READ], iat=now - 7200, nbf=now - 7200, exp=now - 600),
                    "has expired"),
        "not yet valid": (issuer.token(roles=[grants.EXPORT_READ], nbf=now + 600), "not valid yet"),
        "malformed": ("eyJub3QiOiJqc29uIg.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "header is not base64url-encoded JSON"),
        "no object id": (issuer.token(roles=[grants.EXPORT_READ], oid=""), "no principal object id (oid)"),
    }


REFUSALS = ["bad signature", "alg none", "HMAC keyed with the public key", "unknown key id", "another issuer",
            "another audience", "expired", "not yet valid", "malformed", "no object id"]


@pytest.mark.parametrize("refusal", REFUSALS)
def test_a_bad_token_is_a_401_invalid_token_saying_why_without_quoting_it(host, tokens, app, refusal):
    ref, _ = app
    grants.put_grant(str(uuid.uuid4()), ref.collection, None, None)
    token, reason = _bad_tokens(tokens)[refusal]
    response = call("GET", tasks_url(host, ref), token)
    error = arm_error(response, 401)
    assert error["code"] == "InvalidAuthenticationToken"
    assert reason in error["message"], error["message"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="engagement-export", error="invalid_token"'
    for part in token.split("."):
        assert len(part) < 8 or part not in response.text


def test_a_request_without_a_credential_is_a_401_challenge_without_invalid_token(host, tokens, app):
    ref, _ = app
    response = call("GET", tasks_url(host, ref), None)
    arm_error(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="engagement-export"'


def test_an_issuer_that_is_down_is_a_503_with_retry_after_not_a_401(host, tokens, app):
    ref, _ = app
    tokens.down = True
    response = call("GET", tasks_url(host, ref), tokens.token(roles=[grants.EXPORT_READ]))
    error = arm_error(response, 503)
    assert error["code"] == "IdentityProviderUnavailable" and "OpenID metadata" in error["message"]
    assert response.headers["Retry-After"] == str(identity.UNAVAILABLE_RETRY_AFTER_SECONDS)


def test_requests_arriving_together_on_a_cold_cache_read_the_keys_once(host, tokens, app):
    ref, _ = app
    principal = str(uuid.uuid4())
    grants.put_grant(principal, ref.collection, ref.name, None)
    token = tokens.token(roles=[grants.EXPORT_READ], oid=principal)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: call("GET", tasks_url(host, ref), token).status_code, range(16)))
    assert statuses == [200] * 16
    assert (tokens.fetches["metadata"], tokens.fetches["keys"]) == (1, 1)


def test_keys_read_before_the_issuer_went_down_keep_working_and_it_is_asked_again_rarely(host, tokens, app,
                                                                                          monkeypatch):
    ref, _ = app
    principal = str(uuid.uuid4())
    grants.put_grant(principal, ref.collection, ref.name, None)
    token = tokens.token(roles=[grants.EXPORT_READ], oid=principal)
    assert call("GET", tasks_url(host, ref), token).status_code == 200
    tokens.down = True
    # A day on, the keys are due to be read again: the read fails, and the key read before still verifies.
    now = time.monotonic() + identity.KEY_SET_MAX_AGE_SECONDS + 1
    monkeypatch.setattr(identity, "clock", lambda: now)
    assert call("GET", tasks_url(host, ref), token).status_code == 200
    assert tokens.fetches["refused"] == 1
    # A key never read cannot be checked while the issuer is down: 503, and no new request to the issuer.
    unknown = tokens.token(roles=[grants.EXPORT_READ], oid=principal, key=SigningKey())
    error = arm_error(call("GET", tasks_url(host, ref), unknown), 503)
    assert error["code"] == "IdentityProviderUnavailable"
    assert call("GET", tasks_url(host, ref), token).status_code == 200
    assert tokens.fetches["refused"] == 1
    # After Retry-After seconds the issuer is asked again, once.
    now += identity.UNAVAILABLE_RETRY_AFTER_SECONDS
    arm_error(call("GET", tasks_url(host, ref), unknown), 503)
    arm_error(call("GET", tasks_url(host, ref), unknown), 503)
    assert tokens.fetches["refused"] == 2


def test_a_valid_token_without_the_role_or_the_grant_is_a_403_naming_what_is_missing(app_env, host, tokens, app,
                                                                                      names):
    ref, _ = app
    principal = str(uuid.uuid4())
    no_roles = arm_error(call("GET", tasks_url(host, ref), tokens.token(oid=principal)), 403)
    assert no_roles["code"] == "AuthorizationFailed"
    assert f"principal {principal} lacks the Export.Read app role (its roles: none)" in no_roles["message"]

    reader = tokens.token(roles=[grants.EXPORT_READ, grants.EXPORT_WRITE], oid=principal)
    no_grant = arm_error(call("GET", tasks_url(host, ref), reader), 403)
    assert no_grant["code"] == "AuthorizationFailed"
    assert f"holds no grant on app {ref.collection}/game" in no_grant["message"]
    assert f"PUT .../appcollections/{ref.collection}/apps/game/grants/{principal}" in no_grant["message"]

    grants.put_grant(principal, ref.collection, ref.name, frozenset({grants.EXPORT_READ}))
    assert call("GET", tasks_url(host, ref), reader).status_code == 200
    narrowed = arm_error(call("POST", tasks_url(host, ref, "/tags"), reader,
                              json={"containerUrl": container_sas_url(app_env, names.container("tok"))}), 403)
    assert narrowed["message"] == (f"the grant of principal {principal} on app {ref.collection}/game allows "
                                   f"Export.Read only, not Export.Write")
    writer_only = tokens.token(roles=[grants.EXPORT_WRITE], oid=principal)
    assert "lacks the Export.Read app role (its roles: Export.Write)" in arm_error(
        call("GET", tasks_url(host, ref), writer_only), 403)["message"]


def test_pipelines_take_export_read_to_read_and_export_write_to_change(host, tokens, app):
    ref, _ = app
    principal = str(uuid.uuid4())
    grants.put_grant(principal, ref.collection, ref.name, None)
    pipelines = f"{host.base_url}{app_path(ref.collection, ref.name)}/exportPipelines"
    reader = tokens.token(roles=[grants.EXPORT_READ], oid=principal)
    listed = call("GET", pipelines, reader)
    assert listed.status_code == 200 and listed.json()["value"] == []
    for method, suffix in (("PUT", "/daily"), ("DELETE", "/daily"), ("POST", "/daily/pause")):
        error = arm_error(call(method, pipelines + suffix, reader, json={}), 403)
        assert "lacks the Export.Write app role" in error["message"]
    writer = tokens.token(roles=[grants.EXPORT_WRITE], oid=principal)
    assert "lacks the Export.Read app role" in arm_error(call("GET", pipelines, writer), 403)["message"]
    # Past the authorization, the pipeline API itself answers: a PUT without its fields is a 400 naming them.
    assert call("PUT", pipelines + "/daily", writer, json={}).status_code == 400


def test_a_token_or_key_for_app_a_reads_nothing_of_app_b(host, tokens, names):
    app_a = apps.app_ref(f"iso-{names.token}", "a")
    app_b = apps.app_ref(f"iso-{names.token}", "b")
    keys_a = apps.register_app(app_a.collection, app_a.name)
    apps.register_app(app_b.collection, app_b.name)
    principal = str(uuid.uuid4())
    grants.put_grant(principal, app_a.collection, app_a.name, None)
    token = tokens.token(roles=[grants.EXPORT_READ], oid=principal)
    assert call("GET", tasks_url(host, app_a), token).status_code == 200
    assert arm_error(call("GET", tasks_url(host, app_b), token), 403)["code"] == "AuthorizationFailed"
    assert call("GET", tasks_url(host, app_a), keys_a.export_key).status_code == 200
    assert arm_error(call("GET", tasks_url(host, app_b), keys_a.export_key), 401)["code"] == "AuthenticationFailed"
    # A grant on the whole collection opens app b too; an app of another collection stays closed.
    grants.put_grant(principal, app_a.collection, None, None)
    assert call("GET", tasks_url(host, app_b), token).status_code == 200
    other = apps.app_ref(f"iso2-{names.token}", "a")
    apps.register_app(other.collection, other.name)
    assert arm_error(call("GET", tasks_url(host, other), token), 403)["code"] == "AuthorizationFailed"


def test_a_granted_principal_naming_an_app_not_registered_gets_a_404(host, tokens, names):
    principal = str(uuid.uuid4())
    grants.put_grant(principal, f"nr-{names.token}", None, None)
    ghost = apps.app_ref(f"nr-{names.token}", "ghost")
    error = arm_error(call("GET", tasks_url(host, ghost), tokens.token(roles=[grants.EXPORT_READ], oid=principal)),
                      404)
    assert error["code"] == "AppNotFound"


def test_a_rolled_over_key_is_fetched_again_at_most_once_per_refetch_interval(host, tokens, app, monkeypatch):
    ref, _ = app
    principal = str(uuid.uuid4())
    grants.put_grant(principal, ref.collection, ref.name, None)
    old_key = tokens.keys[0]
    old_token = tokens.token(roles=[grants.EXPORT_READ], oid=principal)
    assert call("GET", tasks_url(host, ref), old_token).status_code == 200
    assert tokens.fetches["keys"] == 1
    assert call("GET", tasks_url(host, ref), old_token).status_code == 200
    assert tokens.fetches["keys"] == 1  # cached

    new_token = tokens.token(roles=[grants.EXPORT_READ], oid=principal, key=tokens.roll_over())
    # The keys were read moments ago: an unknown kid does not read them again (no fetch per forged kid) ...
    assert "not one of the issuer's" in arm_error(call("GET", tasks_url(host, ref), new_token), 401)["message"]
    assert tokens.fetches["keys"] == 1
    # ... until KEY_REFETCH_SECONDS have passed: then the new key is read, and works.
    later = time.monotonic() + identity.KEY_REFETCH_SECONDS + 1
    monkeypatch.setattr(identity, "clock", lambda: later)
    assert call("GET", tasks_url(host, ref), new_token).status_code == 200
    assert tokens.fetches["keys"] == 2
    # The key withdrawn by the rollover no longer verifies anything, and asking again does not refetch.
    assert tokens.keys[0] is not old_key
    assert "not one of the issuer's" in arm_error(call("GET", tasks_url(host, ref), old_token), 401)["message"]
    assert tokens.fetches["keys"] == 2


def test_export_keys_turned_off_leave_tokens_alone(host, tokens, app, settings_override):
    ref, keys = app
    settings_override(**{config.AUTH_EXPORT_KEYS: "false"})
    error = arm_error(call("GET", tasks_url(host, ref), keys.export_key), 401)
    assert "export keys are turned off on this service (AUTH_EXPORT_KEYS=false)" in error["message"]
    principal = str(uuid.uuid4())
    grants.put_grant(principal, ref.collection, ref.name, None)
    assert call("GET", tasks_url(host, ref), tokens.token(roles=[grants.EXPORT_READ], oid=principal)).status_code \
        == 200


def test_without_an_issuer_a_token_is_refused_naming_the_setting(host, issuer, app):
    ref, keys = app
    error = arm_error(call("GET", tasks_url(host, ref), issuer.token(roles=[grants.EXPORT_READ])), 401)
    assert "this service takes no Entra ID access tokens (AUTH_ISSUER is not set)" in error["message"]
    assert call("GET", tasks_url(host, ref), keys.export_key).status_code == 200


def test_no_token_or_key_reaches_a_log_line(host, tokens, app, caplog):
    ref, keys = app
    principal = str(uuid.uuid4())
    grants.put_grant(principal, ref.collection, ref.name, None)
    credentials = [tokens.token(roles=[grants.EXPORT_READ], oid=principal), keys.export_key, keys.collect_key,
                   *(token for token, _ in _bad_tokens(tokens).values())]
    with caplog.at_level(logging.DEBUG):
        for credential in credentials:
            call("GET", tasks_url(host, ref), credential)
            call("GET", f"{host.base_url}/subscriptions/s/resourceGroups/r/providers/Microsoft.MobileEngagement/"
                        f"appcollections/{ref.collection}/apps", credential)
        tokens.down = True
        call("GET", tasks_url(host, ref), tokens.token(roles=[grants.EXPORT_READ], key=SigningKey()))
    assert caplog.records
    for credential in credentials:
        signature = credential.rsplit(".", 1)[-1]
        assert credential not in caplog.text and (len(signature) < 8 or signature not in caplog.text)


@pytest.mark.pure
@pytest.mark.parametrize("environment, complaint", [
    ({config.AUTH_ISSUER: "http://127.0.0.1:9/tenant/v2.0", config.AUTH_AUDIENCE: "api://x"},
     "set AUTH_ALLOW_LOOPBACK_ISSUER=true"),
    ({config.AUTH_ISSUER: "http://login.example.com/tenant/v2.0", config.AUTH_AUDIENCE: "api://x"},
     "AUTH_ISSUER must be an https URL"),
    ({config.AUTH_ISSUER: "https://login.microsoftonline.com/t/v2.0"}, "AUTH_AUDIENCE is not set"),
    ({config.AUTH_ISSUER: "not a url", config.AUTH_AUDIENCE: "api://x"}, "AUTH_ISSUER must be the tenant's issuer"),
    ({config.AUTH_EXPORT_KEYS: "maybe"}, "AUTH_EXPORT_KEYS must be true or false"),
])
def test_token_settings_that_cannot_work_stop_the_app_naming_them(environment, complaint):
    base = {config.STORAGE_CONNECTION: "UseDevelopmentStorage=true",
            config.SAS_ENCRYPTION_KEY: base64.urlsafe_b64encode(b"k" * 32).decode()}
    with pytest.raises(ConfigError, match=complaint.replace("(", r"\(")):
        load_settings({**base, **environment})


@pytest.mark.pure
def test_token_settings_read_as_documented():
    base = {config.STORAGE_CONNECTION: "UseDevelopmentStorage=true",
            config.SAS_ENCRYPTION_KEY: base64.urlsafe_b64encode(b"k" * 32).decode()}
    unset = load_settings(base)
    assert (unset.auth_issuer, unset.auth_audiences, unset.export_keys) == (None, (), True)
    loaded = load_settings({**base, config.AUTH_ISSUER: "https://login.microsoftonline.com/t/v2.0",
                            config.AUTH_AUDIENCE: " 9b2b, api://engagement-export ,", config.AUTH_EXPORT_KEYS: "false"})
    assert loaded.auth_audiences == ("9b2b", "api://engagement-export") and not loaded.export_keys
