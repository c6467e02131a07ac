"""A local OpenID issuer on loopback, as the tests' Entra ID tenant: its metadata and signing keys served over HTTP,
RSA keys made per run, and tokens minted with them.

``/.well-known/openid-configuration`` names ``/discovery/keys`` as ``jwks_uri``; the keys published there can be
rolled over (``roll_over``), and the issuer can be taken down (``down``: every request answers 503) to show what the
API does then. It counts how many times each document was fetched, and the requests it refused, to show the API's
key cache.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.platform import config, identity

API_APP_ID = "9b2b3c4d-0000-4000-8000-00000000e35e"
API_APP_ID_URI = "api://engagement-export-tests"


class SigningKey:
    """An RSA key pair with its key id, as a tenant's key set holds one."""

    def __init__(self) -> None:
        self.kid = uuid.uuid4().hex
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def public_jwk(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


class LocalIssuer:
    """The issuer, started on a free loopback port; ``url`` is what tokens carry as ``iss``."""

    def __init__(self) -> None:
        self.keys = [SigningKey()]
        self.down = False
        self.fetches = {"metadata": 0, "keys": 0, "refused": 0}
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                issuer.answer(self)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tenant-e35/v2.0"
        self._thread = threading.Thread(target=self.server.serve_forever, name="local-issuer", daemon=True)
        self._thread.start()

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?")[0]
        documents = {"/tenant-e35/v2.0/.well-known/openid-configuration": ("metadata", lambda: {
                         "issuer": self.url, "jwks_uri": self.url.replace("/v2.0", "") + "/discovery/keys",
                         "id_token_signing_alg_values_supported": ["RS256"]}),
                     "/tenant-e35/discovery/keys": ("keys", lambda: {"keys": [key.public_jwk for key in self.keys]})}
        if self.down or path not in documents:
            self.fetches["refused"] += 1
            request.send_response(503 if self.down else 404)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        name, make = documents[path]
        self.fetches[name] += 1
        body = json.dumps(make()).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def roll_over(self) -> SigningKey:
        """Publishes a new key in place of the old ones, as a tenant that rolled its key over; returns the new key."""
        self.keys = [SigningKey()]
        return self.keys[0]

    def token(self, *, roles=(), oid: str | None = None, key: SigningKey | None = None, lifetime: int = 3600,
              **claims) -> str:
        """An access token for the API, signed RS256 with ``key`` (the current key), with ``claims`` on top."""
        key = key or self.keys[0]
        now = int(time.time())
        payload = {"iss": self.url, "aud": API_APP_ID, "iat": now, "nbf": now, "exp": now + lifetime,
                   "oid": str(uuid.uuid4()) if oid is None else oid, "tid": "tenant-e35", "roles": list(roles),
                   "ver": "2.0", **claims}
        return jwt.encode(payload, key.private, algorithm="RS256", headers={"kid": key.kid})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def accepting_tokens(issuer: LocalIssuer, settings_override: Callable[..., None]) -> Iterator[LocalIssuer]:
    """The app takes ``issuer``'s tokens (with a fresh key cache, the issuer up, its fetches counted from 0) for the
    block; ``settings_override`` is the tests' fixture that sets app settings for one test."""
    identity.forget_keys()
    issuer.down = False
    issuer.fetches = {name: 0 for name in issuer.fetches}
    settings_override(**{config.AUTH_ISSUER: issuer.url, config.AUTH_AUDIENCE: f"{API_APP_ID},{API_APP_ID_URI}",
                         config.AUTH_ALLOW_LOOPBACK_ISSUER: "true"})
    try:
        yield issuer
    finally:
        issuer.down = False
        identity.forget_keys()

