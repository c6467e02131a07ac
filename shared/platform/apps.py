"""Registered apps, their keys and their settings.

An app is (appCollection, appName). It has two keys: the export key, for the exportTasks API, and the
collect key, for device-facing ingestion only. Keys are random, shown once at registration, and stored
only as SHA-256 hashes; a presented key is hashed and compared in constant time.

Each app has a small settings document (AppSettings: how long its raw records and snapshot table rows are kept),
checked here and stored beside its key hashes. The admin API and tools.admin both call these functions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.platform import storage, tablefilter
from shared.platform.config import get_settings
from shared.platform.errors import AppExists, AppNotFound, InvalidInput, NotAuthenticated

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
            raise InvalidInput(f"{field} {value!r} is not a valid name: 1-64 letters, digits, '.', '_' or '-', "
                               f"starting with a letter or digit", code="InvalidAppName")
    return AppRef(collection, name)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _new_keys(ref: AppRef) -> tuple[AppKeys, dict]:
    keys = AppKeys(export_key=EXPORT_KEY_PREFIX + secrets.token_urlsafe(32),
                   collect_key=COLLECT_KEY_PREFIX + secrets.token_urlsafe(32))
    entity = {"PartitionKey": _PARTITION, "RowKey": ref.id, "collection": ref.collection, "name": ref.name,
              "exportKeyHash": _hash(keys.export_key), "collectKeyHash": _hash(keys.collect_key),
              "keysIssued": dt.datetime.now(dt.UTC).isoformat()}
    return keys, entity


def register_app(collection: str, name: str, *, rotate: bool = False) -> AppKeys:
    """Creates the app and returns its new keys; an existing app is refused (AppExists) unless ``rotate``, which
    issues it new keys (creating it when it is not registered) and keeps its settings."""
    ref = app_ref(collection, name)
    keys, entity = _new_keys(ref)
    table = storage.table(APPS_TABLE)
    if rotate:
        table.upsert_entity(entity, mode=UpdateMode.MERGE)
        return keys
    try:
        table.create_entity(entity)
    except ResourceExistsError:
        raise AppExists(f"app {ref.collection}/{ref.name} is already registered; rotate its keys to get new ones") \
            from None
    return keys


def rotate_keys(ref: AppRef) -> AppKeys:
    """New keys for a registered app (AppNotFound otherwise); the old ones stop working (the collect key within
    COLLECT_KEY_CACHE_SECONDS)."""
    keys, entity = _new_keys(ref)
    try:
        storage.table(APPS_TABLE).update_entity(entity, mode=UpdateMode.MERGE)
    except ResourceNotFoundError:
        raise _not_found(ref) from None
    return keys


def delete_app(ref: AppRef) -> None:
    """Removes the app's registration and keys (its data and tasks stay in storage until retention removes them)."""
    table = storage.table(APPS_TABLE)
    if not is_registered(ref):
        raise _not_found(ref)
    table.delete_entity(_PARTITION, ref.id)


def _not_found(ref: AppRef) -> AppNotFound:
    return AppNotFound(f"app {ref.collection}/{ref.name} is not registered")


def list_apps(collection: str) -> list[str]:
    """The names of the registered apps of an app collection, in order."""
    app_ref(collection, "app")  # checks the collection's name
    rows = storage.table(APPS_TABLE).query_entities(
        tablefilter.all_of(tablefilter.eq("PartitionKey", _PARTITION), tablefilter.eq("collection", collection)),
        select=["name"])
    return sorted(row["name"] for row in rows)


@dataclass(frozen=True)
class AppSettings:
    """An app's own settings: days its raw records and its snapshot table rows are kept (None: no limit set)."""

    raw_retention_days: int | None = None
    table_retention_days: int | None = None

    def to_document(self) -> dict:
        return {name: getattr(self, field) for name, (field, _) in APP_SETTINGS.items()}


# Each setting of the document: its JSON name -> (AppSettings field, the largest value); values are whole days >= 1.
APP_SETTINGS = {"rawRetentionDays": ("raw_retention_days", 3650),
                "tableRetentionDays": ("table_retention_days", 3650)}


def parse_app_settings(document: object) -> AppSettings:
    """An AppSettings from its JSON document; InvalidInput naming the field and what it takes otherwise. A setting
    left out, or null, has no value."""
    if not isinstance(document, dict):
        raise InvalidInput(f"an app's settings are a JSON object with {', '.join(APP_SETTINGS)}",
                           code="InvalidAppSettings")
    unknown = sorted(set(document) - set(APP_SETTINGS))
    if unknown:
        raise InvalidInput(f"{unknown[0]} is not an app setting; the settings are {', '.join(APP_SETTINGS)}",
                           code="InvalidAppSettings")
    values: dict[str, int | None] = {}
    for name, (field, maximum) in APP_SETTINGS.items():
        value = document.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum):
            raise InvalidInput(f"{name} must be a whole number of days from 1 to {maximum}, or null for none, not "
                               f"{json.dumps(value)[:40]}", code="InvalidAppSettings")
        values[field] = value
    return AppSettings(**values)


def app_settings(ref: AppRef) -> AppSettings:
    """The app's settings (AppNotFound when it is not registered)."""
    try:
        entity = storage.table(APPS_TABLE).get_entity(_PARTITION, ref.id, select=["settings"])
    except ResourceNotFoundError:
        raise _not_found(ref) from None
    stored = entity.get("settings")
    return parse_app_settings(json.loads(stored)) if stored else AppSettings()


def set_app_settings(ref: AppRef, settings: AppSettings) -> AppSettings:
    """Replaces the app's settings document."""
    entity = {"PartitionKey": _PARTITION, "RowKey": ref.id,
              "settings": json.dumps(settings.to_document(), separators=(",", ":"))}
    try:
        storage.table(APPS_TABLE).update_entity(entity, mode=UpdateMode.MERGE)
    except ResourceNotFoundError:
        raise _not_found(ref) from None
    return settings


def list_app_ids() -> Iterator[str]:
    """The id of every registered app."""
    for row in storage.table(APPS_TABLE).query_entities(tablefilter.eq("PartitionKey", _PARTITION),
                                                         select=["RowKey"]):
        yield row["RowKey"]


def is_registered(ref: AppRef) -> bool:
    try:
        storage.table(APPS_TABLE).get_entity(_PARTITION, ref.id, select=["RowKey"])
    except ResourceNotFoundError:
        return False
    return True


# Collect keys are checked on every device batch: an instance keeps the hashes it read for
# COLLECT_KEY_CACHE_SECONDS, and reads them again at most once a second when a key does not match (a key
# issued since), so a rotated key works at once and an old one stops within the setting.
_RECHECK_SECONDS = 1.0
_key_cache: dict[str, tuple[object, float, dict[str, str]]] = {}
_key_cache_lock = threading.Lock()


def _stored_hashes(ref: AppRef) -> dict[str, str]:
    try:
        entity = storage.table(APPS_TABLE).get_entity(_PARTITION, ref.id)
    except ResourceNotFoundError:
        return {}
    return {purpose: entity.get(column, "") for purpose, column in PURPOSES.items()}


def _hashes(ref: AppRef, *, cached: bool, recheck: bool) -> dict[str, str]:
    if not cached:
        return _stored_hashes(ref)
    now = time.monotonic()
    settings = get_settings()  # an entry belongs to the settings (the storage) it was read with
    with _key_cache_lock:
        entry = _key_cache.get(ref.id)
    ttl = settings.collect_key_cache_seconds
    if entry is not None and entry[0] is settings and now - entry[1] < (
            min(ttl, _RECHECK_SECONDS) if recheck else ttl):
        return entry[2]
    hashes = _stored_hashes(ref)
    with _key_cache_lock:
        if len(_key_cache) > 10_000:
            _key_cache.clear()
        _key_cache[ref.id] = (settings, now, hashes)
    return hashes


def authenticate(ref: AppRef, authorization: str, *, purpose: str) -> None:
    """Raises NotAuthenticated unless ``authorization`` is `Bearer <key>` with this app's key for ``purpose``."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise NotAuthenticated("the request needs an Authorization header: Bearer <the app's key>", presented=False)
    presented = _hash(key.strip())
    cached = purpose == "collect"
    stored = _hashes(ref, cached=cached, recheck=False).get(purpose, "")
    if cached and not hmac.compare_digest(presented, stored or _hash("")):
        stored = _hashes(ref, cached=True, recheck=True).get(purpose, "")
    # Compared even when the app is unknown, so timing does not tell which apps exist.
    if not hmac.compare_digest(presented, stored or _hash("")) or not stored:
        raise NotAuthenticated(f"the key is not a valid {purpose} key of app {ref.collection}/{ref.name}",
                               presented=True)
