"""Registered apps and their keys.

An app is (appCollection, appName). It has two keys: the export key, for the exportTasks API, and the
collect key, for device-facing ingestion only. Keys are random, shown once at registration, and stored
only as SHA-256 hashes; a presented key is hashed and compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.platform import storage
from shared.platform.errors import BadRequest, Unauthorized

APPS_TABLE = "apps"
_PARTITION = "app"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
EXPORT_KEY_PREFIX = "eek_"
COLLECT_KEY_PREFIX = "eck_"
PURPOSES = {"export": "exportKeyHash", "collect": "collectKeyHash"}


@dataclass(frozen=True)
class AppRef:
    collection: str
    name: str

    @property
    def id(self) -> str:
        """The app's storage key: names cannot hold '~', so this is unambiguous and table-key safe."""
        return f"{self.collection}~{self.name}"


@dataclass(frozen=True)
class AppKeys:
    export_key: str
    collect_key: str


def app_ref(collection: str, name: str) -> AppRef:
    for field, value in (("appCollection", collection), ("appName", name)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise BadRequest(f"{field} {value!r} is not a valid name: 1-64 letters, digits, '.', '_' or '-', "
                             f"starting with a letter or digit", code="InvalidAppName")
    return AppRef(collection, name)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def register_app(collection: str, name: str, *, rotate: bool = False) -> AppKeys:
    """Creates the app and returns its new keys; an existing app keeps its keys unless ``rotate``."""
    ref = app_ref(collection, name)
    keys = AppKeys(export_key=EXPORT_KEY_PREFIX + secrets.token_urlsafe(32),
                   collect_key=COLLECT_KEY_PREFIX + secrets.token_urlsafe(32))
    entity = {"PartitionKey": _PARTITION, "RowKey": ref.id, "collection": ref.collection, "name": ref.name,
              "exportKeyHash": _hash(keys.export_key), "collectKeyHash": _hash(keys.collect_key),
              "keysIssued": dt.datetime.now(dt.timezone.utc).isoformat()}
    table = storage.table(APPS_TABLE)
    if rotate:
        table.upsert_entity(entity)
        return keys
    try:
        table.create_entity(entity)
    except ResourceExistsError:
        raise BadRequest(f"app {ref.collection}/{ref.name} is already registered; rotate its keys to get new ones",
                         code="AppExists") from None
    return keys


def is_registered(ref: AppRef) -> bool:
    try:
        storage.table(APPS_TABLE).get_entity(_PARTITION, ref.id, select=["RowKey"])
    except ResourceNotFoundError:
        return False
    return True


def authenticate(ref: AppRef, authorization: str, *, purpose: str) -> None:
    """Raises Unauthorized unless ``authorization`` is `Bearer <key>` with this app's key for ``purpose``."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("the request needs an Authorization header: Bearer <the app's key>",
                           headers={"WWW-Authenticate": 'Bearer realm="engagement-export"'})
    try:
        entity = storage.table(APPS_TABLE).get_entity(_PARTITION, ref.id)
        stored = entity.get(PURPOSES[purpose], "")
    except ResourceNotFoundError:
        stored = ""
    # Compared even when the app is unknown, so timing does not tell which apps exist.
    if not hmac.compare_digest(_hash(key.strip()), stored or _hash("")) or not stored:
        raise Unauthorized(f"the key is not a valid {purpose} key of app {ref.collection}/{ref.name}",
                           headers={"WWW-Authenticate": 'Bearer realm="engagement-export", error="invalid_token"'})
