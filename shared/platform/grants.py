"""Which apps a principal may touch, and with which of its app roles: grants, and the decision they make.

What a principal may do comes from its token's app roles (ROLES); on which apps, from the grants an ``Apps.Admin``
keeps through the admin API: a principal's object id and an app collection, or one app of it, optionally narrowed to
some of the roles. ``Apps.Admin`` itself needs no grant: it manages every app collection, and reads no app's data
(least privilege: the roles that read and erase data are assigned apart).

Grants live in the ``grants`` table, partitioned by the principal's object id, so the check of a request is one
query of one partition; the row key is the collection (a grant on all its apps) or the app's id (``collection~app``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from azure.core.exceptions import ResourceNotFoundError

from shared.platform import storage, tablefilter
from shared.platform.apps import AppRef, app_ref
from shared.platform.errors import GrantNotFound, InvalidInput, NotAuthorized
from shared.platform.identity import Principal

GRANTS_TABLE = "grants"
EXPORT_READ = "Export.Read"
EXPORT_WRITE = "Export.Write"
DATA_ERASE = "Data.Erase"
APPS_ADMIN = "Apps.Admin"
# The app roles a grant can hold (Apps.Admin is never granted per app: it is the tenant's assignment alone).
APP_ROLES = (EXPORT_READ, EXPORT_WRITE, DATA_ERASE)
ROLES = APP_ROLES + (APPS_ADMIN,)
# An Entra ID object id is a GUID; anything table-key safe of that size is taken, nothing with / \ # ? or '~'.
_PRINCIPAL = re.compile(r"^[0-9A-Za-z-]{1,64}\Z")


@dataclass(frozen=True)
class Grant:
    """A principal's grant on an app collection (``app`` None) or one app; ``roles`` None: every app role."""

    principal: str
    collection: str
    app: str | None
    roles: frozenset[str] | None
    granted: str

    def allows(self, role: str) -> bool:
        return self.roles is None or role in self.roles

    def to_result(self) -> dict:
        result: dict = {"principalObjectId": self.principal, "appCollection": self.collection,
                        "roles": [role for role in APP_ROLES if self.allows(role)],
                        "dateGranted": self.granted}
        if self.app is not None:
            result["appName"] = self.app
        return result


def principal_id(value: object) -> str:
    if not isinstance(value, str) or not _PRINCIPAL.match(value):
        raise InvalidInput(f"principalObjectId {str(value)[:80]!r} is not an object id: give the principal's object "
                           f"id in the tenant (a GUID, as the token's oid claim holds it)", code="InvalidPrincipalId")
    return value


def parse_roles(body: object) -> frozenset[str] | None:
    """The roles a grant's request body narrows it to: None (every app role) for an empty body or no ``roles``."""
    if body is None or body == {}:
        return None
    if not isinstance(body, dict) or set(body) - {"roles"}:
        unknown = ", ".join(sorted(set(body) - {"roles"})) if isinstance(body, dict) else "the body"
        raise InvalidInput(f"a grant's body holds roles only, not {unknown}; send {{}} for every app role or "
                           f"{{\"roles\": [{', '.join(repr(role) for role in APP_ROLES)}]}}", code="InvalidGrant")
    roles = body["roles"]
    if roles is None:
        return None
    if not isinstance(roles, list) or not roles or not all(role in APP_ROLES for role in roles):
        raise InvalidInput(f"roles must be a non-empty list of {', '.join(APP_ROLES)} (Apps.Admin is assigned in the "
                           f"tenant, not granted)", code="InvalidGrant")
    return frozenset(roles)


def _row_key(collection: str, app: str | None) -> str:
    return collection if app is None else AppRef(collection, app).id


def _grant_of(row: dict) -> Grant:
    roles = row.get("roles") or ""
    return Grant(principal=row["PartitionKey"], collection=row["collection"], app=row.get("app") or None,
                 roles=frozenset(roles.split(",")) if roles else None, granted=row.get("granted", ""))


def put_grant(principal: str, collection: str, app: str | None, roles: frozenset[str] | None) -> Grant:
    """Grants ``principal`` the app collection (``app`` None) or the app, replacing a grant it held there."""
    if app is None:
        app_ref(collection, "app")  # checks the collection's name alone
    else:
        app_ref(collection, app)
    row = {"PartitionKey": principal_id(principal), "RowKey": _row_key(collection, app), "collection": collection,
           "app": app or "", "roles": ",".join(sorted(roles)) if roles is not None else "",
           "granted": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
    storage.table(GRANTS_TABLE).upsert_entity(row)
    return _grant_of(row)


def delete_grant(principal: str, collection: str, app: str | None) -> None:
    table = storage.table(GRANTS_TABLE)
    try:
        table.get_entity(principal_id(principal), _row_key(collection, app), select=["RowKey"])
    except ResourceNotFoundError:
        where = f"app {collection}/{app}" if app else f"app collection {collection}"
        raise GrantNotFound(f"principal {principal} holds no grant on {where}") from None
    table.delete_entity(principal, _row_key(collection, app))


def grants_on(collection: str, app: str | None) -> list[Grant]:
    """The grants on one app, or on the app collection as a whole, of every principal."""
    rows = storage.table(GRANTS_TABLE).query_entities(tablefilter.eq("RowKey", _row_key(collection, app)))
    return sorted((_grant_of(row) for row in rows), key=lambda grant: grant.principal)


def delete_grants_on(ref: AppRef) -> int:
    """Removes every principal's grant on the app (its registration is gone); the count removed."""
    table = storage.table(GRANTS_TABLE)
    removed = 0
    for grant in grants_on(ref.collection, ref.name):
        try:
            table.delete_entity(grant.principal, ref.id)
        except ResourceNotFoundError:
            continue
        removed += 1
    return removed


def grants_of(principal: str, collection: str) -> list[Grant]:
    """The principal's grants in one app collection: on the collection itself, and on each app of it."""
    rows = storage.table(GRANTS_TABLE).query_entities(tablefilter.all_of(
        tablefilter.eq("PartitionKey", principal_id(principal)), tablefilter.eq("collection", collection)))
    return [_grant_of(row) for row in rows]


def _applying(grants: Iterable[Grant], ref: AppRef) -> list[Grant]:
    return [grant for grant in grants if grant.collection == ref.collection and grant.app in (None, ref.name)]


def require(principal: Principal, role: str, ref: AppRef) -> None:
    """Raises NotAuthorized, naming what is missing, unless ``principal`` holds ``role`` and a grant on ``ref`` that
    allows it."""
    if role not in principal.roles:
        held = ", ".join(sorted(principal.roles)) or "none"
        raise NotAuthorized(f"principal {principal.object_id} lacks the {role} app role (its roles: {held}); the "
                            f"tenant's administrator assigns app roles on the API's enterprise application")
    applying = _applying(grants_of(principal.object_id, ref.collection), ref)
    if not applying:
        raise NotAuthorized(f"principal {principal.object_id} holds no grant on app {ref.collection}/{ref.name} or on "
                            f"its app collection; an Apps.Admin grants it with PUT .../appcollections/{ref.collection}"
                            f"/apps/{ref.name}/grants/{principal.object_id}")
    if not any(grant.allows(role) for grant in applying):
        allowed = sorted({role for grant in applying for role in (grant.roles or ())})
        raise NotAuthorized(f"the grant of principal {principal.object_id} on app {ref.collection}/{ref.name} allows "
                            f"{', '.join(allowed)} only, not {role}")


def require_admin(principal: Principal) -> None:
    if APPS_ADMIN not in principal.roles:
        held = ", ".join(sorted(principal.roles)) or "none"
        raise NotAuthorized(f"principal {principal.object_id} lacks the {APPS_ADMIN} app role that managing apps and "
                            f"grants needs (its roles: {held}); the tenant's administrator assigns it")


def visible_apps(principal: Principal, collection: str, registered: Iterable[str]) -> list[str]:
    """The apps of ``registered`` (names in ``collection``) the principal may see: all of them for an Apps.Admin, else
    those its grants cover for one of the app roles its token holds."""
    names = sorted(registered)
    if APPS_ADMIN in principal.roles:
        return names
    if not principal.roles & set(APP_ROLES):
        raise NotAuthorized(f"principal {principal.object_id} holds none of the app roles {', '.join(ROLES)}, so it "
                            f"may see no app; the tenant's administrator assigns them")
    usable = [grant for grant in grants_of(principal.object_id, collection)
              if any(grant.allows(role) for role in principal.roles & set(APP_ROLES))]
    return [name for name in names if _applying(usable, AppRef(collection, name))]
