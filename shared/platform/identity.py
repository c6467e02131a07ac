"""Entra ID (Azure AD) access tokens: who a bearer token says the caller is, once its signature and claims hold.

A token is checked against the tenant's OpenID metadata: ``{AUTH_ISSUER}/.well-known/openid-configuration`` names
``jwks_uri``, whose keys sign the tokens. PyJWT does every cryptographic step (no signature code here); this module
decides which keys and algorithms it may use and says why a token is refused, never quoting the token.

The signing keys are cached per process. A token naming a key id the cache lacks makes the keys be read again, at
most once every ``KEY_REFETCH_SECONDS`` (key rollover: Entra ID publishes a new key before signing with it, and
one forged kid after another must not make every request a fetch); the whole set is read again after
``KEY_SET_MAX_AGE_SECONDS`` whatever happens, so a withdrawn key stops working. An issuer that cannot be read is
asked again at most every ``UNAVAILABLE_RETRY_AFTER_SECONDS``, and the keys read before it went down keep working.
Fetching is bounded: no redirects, a timeout, a size cap, https only (plain http on loopback with
AUTH_ALLOW_LOOPBACK_ISSUER, for tests).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import jwt
import requests

from shared.platform.config import LOOPBACK_HOSTS, Settings
from shared.platform.errors import IdentityUnavailable, NotAuthenticated

# Entra ID signs access tokens with RS256 only; every other algorithm, and HS* above all (an HMAC keyed with the
# public key would verify with what anybody can download), is refused before any key is looked at.
ALGORITHMS = ("RS256",)
# A token's shape: three base64url parts, the last (the signature) empty for alg none. Keys have no dots.
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\Z")
CLOCK_SKEW_SECONDS = 60
KEY_REFETCH_SECONDS = 300
KEY_SET_MAX_AGE_SECONDS = 24 * 3600
FETCH_TIMEOUT = (3.05, 5.0)  # connect, read (seconds)
MAX_DOCUMENT_BYTES = 256 * 1024
# How long a client waits before trying again when the issuer's metadata cannot be read.
UNAVAILABLE_RETRY_AFTER_SECONDS = 10
_OBJECT_ID = re.compile(r"^[0-9A-Za-z-]{1,64}\Z")


@dataclass(frozen=True)
class Principal:
    """The caller a valid token names: its object id (``oid``) in the tenant, and its app roles (``roles``)."""

    object_id: str
    roles: frozenset[str]


def looks_like_token(credential: str) -> bool:
    """Whether a bearer credential has a JWT's shape (keys are one base64url word, so they never do)."""
    return bool(TOKEN_SHAPE.match(credential))


def _refused(reason: str) -> NotAuthenticated:
    return NotAuthenticated(f"the access token is not valid: {reason}", presented=True,
                            code="InvalidAuthenticationToken")


def _unavailable(what: str) -> IdentityUnavailable:
    return IdentityUnavailable(f"the token issuer's {what} cannot be read now, so no token can be checked; try again "
                               f"after Retry-After seconds", retry_after=UNAVAILABLE_RETRY_AFTER_SECONDS)


def _check_url(url: object, *, allow_loopback: bool, what: str) -> str:
    parts = urlsplit(url if isinstance(url, str) else "")
    loopback = parts.hostname in LOOPBACK_HOSTS
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        if not loopback or allow_loopback:
            return str(url)
    raise _unavailable(f"{what} (it names {'a loopback' if loopback else 'no https'} URL)")


def _fetch_json(url: str, what: str) -> dict:
    try:
        with requests.get(url, timeout=FETCH_TIMEOUT, allow_redirects=False, stream=True,
                          headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise _unavailable(f"{what} (HTTP {response.status_code})")
            body = b""
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise _unavailable(f"{what} (larger than {MAX_DOCUMENT_BYTES} bytes)")
    except requests.RequestException as error:
        raise _unavailable(f"{what} ({type(error).__name__})") from None
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise _unavailable(f"{what} (not a JSON object)")
    return document


def _signing_keys(document: dict) -> dict[str, jwt.PyJWK]:
    """The RSA signature keys of a JWKS document by key id; keys of other kinds or uses are left out."""
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document.get("keys") or []:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("alg", "RS256") not in ALGORITHMS:
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm="RS256")
        except jwt.PyJWKError:
            continue
    return keys


# The clock the key cache reads (monotonic seconds); tests move it to cross KEY_REFETCH_SECONDS.
clock: Callable[[], float] = time.monotonic


class KeySet:
    """One issuer's signing keys, read from its metadata and kept by key id.

    Reads are rationed: after a read that worked, the next is at most once per KEY_REFETCH_SECONDS (for an unknown
    kid) or after KEY_SET_MAX_AGE_SECONDS (for every kid); after one that failed, at most once per
    UNAVAILABLE_RETRY_AFTER_SECONDS, so an issuer that is down costs one slow request per interval, not one per
    API call. Keys read before stay usable while the issuer cannot be read (Entra ID announces a new key weeks
    before it signs with it, and withdraws an old one long after)."""

    def __init__(self, issuer: str, *, allow_loopback: bool) -> None:
        self.issuer = issuer
        self.allow_loopback = allow_loopback
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at: float | None = None
        self.attempted_at: float | None = None
        self.failure: IdentityUnavailable | None = None
        self._lock = threading.Lock()  # the fields above
        self._reading = threading.Lock()  # one read of the issuer at a time

    def _read(self) -> dict[str, jwt.PyJWK]:
        metadata_url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        metadata = _fetch_json(_check_url(metadata_url, allow_loopback=self.allow_loopback, what="OpenID metadata"),
                               "OpenID metadata")
        jwks_url = _check_url(metadata.get("jwks_uri"), allow_loopback=self.allow_loopback,
                              what="signing keys (jwks_uri)")
        keys = _signing_keys(_fetch_json(jwks_url, "signing keys (jwks_uri)"))
        if not keys:
            raise _unavailable("signing keys (jwks_uri holds no RSA signature key)")
        return keys

    def _due(self, kid: str) -> bool:
        now = clock()
        if self.attempted_at is not None and now - self.attempted_at < (
                UNAVAILABLE_RETRY_AFTER_SECONDS if self.failure is not None else KEY_REFETCH_SECONDS):
            return False
        return self.fetched_at is None or now - self.fetched_at >= KEY_SET_MAX_AGE_SECONDS or kid not in self.keys

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key of ``kid``, or None when the issuer does not publish it; IdentityUnavailable when the keys
        cannot be read and ``kid`` is not among those read before. One read at a time, outside the state's lock:
        a request whose key is cached does not wait for another's read."""
        with self._lock:
            due = self._due(kid)
        if due:
            # Requests that find a read due wait here for the one in flight, then see its outcome: the time of a
            # read is set when it ends, so nobody takes "read moments ago" for the answer while it runs.
            with self._reading:
                with self._lock:
                    due = self._due(kid)
                if due:
                    try:
                        keys = self._read()
                    except IdentityUnavailable as error:
                        with self._lock:
                            self.failure, self.attempted_at = error, clock()
                    else:
                        with self._lock:
                            self.keys, self.failure = keys, None
                            self.fetched_at = self.attempted_at = clock()
        with self._lock:
            if kid not in self.keys and self.failure is not None:
                raise self.failure
            return self.keys.get(kid)


_key_sets: dict[tuple[str, bool], KeySet] = {}
_key_sets_lock = threading.Lock()


def key_set(settings: Settings) -> KeySet:
    """The process's key set of the configured issuer."""
    if settings.auth_issuer is None:
        raise ValueError("no AUTH_ISSUER is set")
    index = (settings.auth_issuer, settings.allow_loopback_issuer)
    with _key_sets_lock:
        found = _key_sets.get(index)
        if found is None:
            found = _key_sets[index] = KeySet(settings.auth_issuer, allow_loopback=settings.allow_loopback_issuer)
        return found


def forget_keys() -> None:
    """Drops every cached key set (tests: a new issuer on a port an old one used)."""
    with _key_sets_lock:
        _key_sets.clear()


def principal_of(token: str, settings: Settings) -> Principal:
    """The principal of a valid Entra ID access token; NotAuthenticated saying why otherwise, IdentityUnavailable
    when the issuer's keys cannot be read."""
    if not looks_like_token(token):
        raise _refused("it is not a JWT (three base64url parts separated by dots)")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise _refused("its header is not base64url-encoded JSON") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm.lower() == "none":
        raise _refused("it is not signed (alg none); tokens must be signed with RS256")
    if algorithm not in ALGORITHMS:
        kind = "symmetric " if algorithm.upper().startswith("HS") else ""
        raise _refused(f"its {kind}algorithm {algorithm[:16]!r} is refused; tokens must be signed with RS256")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _refused("its header names no signing key (kid)")
    key = key_set(settings).key(kid)
    if key is None:
        raise _refused("its signing key (kid) is not one of the issuer's current keys")
    try:
        claims = jwt.decode(token, key=key.key, algorithms=list(ALGORITHMS), audience=list(settings.auth_audiences),
                            issuer=settings.auth_issuer, leeway=CLOCK_SKEW_SECONDS,
                            options={"require": ["exp", "iss", "aud"], "verify_signature": True})
    except jwt.InvalidSignatureError:
        raise _refused("its signature does not verify with the issuer's key") from None
    except jwt.ExpiredSignatureError:
        raise _refused("it has expired (exp)") from None
    except jwt.ImmatureSignatureError:
        raise _refused("it is not valid yet (nbf or iat in the future)") from None
    except jwt.InvalidAudienceError:
        raise _refused(f"it is not for this API (aud); its audience must be one of "
                       f"{', '.join(settings.auth_audiences)}") from None
    except jwt.InvalidIssuerError:
        raise _refused(f"it was issued by another issuer (iss); this API takes tokens of {settings.auth_issuer}") \
            from None
    except jwt.MissingRequiredClaimError as error:
        raise _refused(f"it lacks the {error.claim!r} claim") from None
    except jwt.InvalidTokenError:
        raise _refused("it is malformed") from None
    object_id = claims.get("oid")
    if not isinstance(object_id, str) or not _OBJECT_ID.match(object_id):
        raise _refused("it names no principal object id (oid)")
    roles = claims.get("roles") or []
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise _refused("its roles claim is not a list of app role names")
    return Principal(object_id=object_id, roles=frozenset(roles))
