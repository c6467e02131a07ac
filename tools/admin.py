"""Admin commands. `python -m tools.admin register-app --collection C --app A` registers an app and prints
its keys as JSON on the last line: {"exportKey": ..., "collectKey": ...}. The keys are shown only here.
`list-apps`, `delete-app`, `grant` and `revoke` do what the admin API does (docs/api.md, "The admin API"), with
the same service code (shared.platform.apps and grants), for an operator who holds the storage's credentials.
`app-settings` prints an app's settings document, or with `--set name=value` (repeatable; `null` removes a
value) changes those settings and keeps the others, as `PUT .../apps/{a}/settings` checks them.
`erasure-hash --device-id D` (or `--user-id U`) prints the keyed hash an ended erasure task keeps of that id
(docs/data-rights.md, "Audit"). `python -m tools.admin migrate-snapshot-tables` moves the snapshot tables of a
deployment from before the snapshot log into the log, once, after the upgrade (shared/ingest/snapshot_tables.py)."""

from __future__ import annotations

import argparse
import json
import sys

from shared.erasure import audit
from shared.ingest import records, snapshot_tables
from shared.platform import apps, grants
from shared.platform.errors import InvalidInput, ServiceError
from tools import localenv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    register = commands.add_parser("register-app", help="register an app and print its keys")
    register.add_argument("--collection", required=True)
    register.add_argument("--app", required=True)
    register.add_argument("--rotate", action="store_true", help="issue new keys for an existing app")
    commands.add_parser("migrate-snapshot-tables", help="move the snapshot tables of earlier versions into the log")
    commands.add_parser("list-apps", help="print the apps of an app collection, one a line").add_argument(
        "--collection", required=True)
    delete = commands.add_parser("delete-app", help="remove an app's registration, keys and grants")
    for grant_command, text in (("grant", "grant a principal an app, or the app collection without --app"),
                                ("revoke", "remove a principal's grant on an app, or on the app collection")):
        command = commands.add_parser(grant_command, help=text)
        command.add_argument("--collection", required=True)
        command.add_argument("--app", help="one app of the collection; without it, the whole collection")
        command.add_argument("--principal", required=True, help="the principal's object id in the tenant")
        if grant_command == "grant":
            command.add_argument("--roles", help=f"comma-separated, of {', '.join(grants.APP_ROLES)}; default all")
    audit_hash = commands.add_parser("erasure-hash", help="print the keyed hash erasure tasks keep of an id")
    which = audit_hash.add_mutually_exclusive_group(required=True)
    which.add_argument("--device-id")
    which.add_argument("--user-id")
    delete.add_argument("--collection", required=True)
    delete.add_argument("--app", required=True)
    settings = commands.add_parser("app-settings", help="print an app's settings, or change some with --set")
    settings.add_argument("--collection", required=True)
    settings.add_argument("--app", required=True)
    settings.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                          help=f"one of {', '.join(apps.APP_SETTINGS)}: a whole number of days, or null")
    arguments = parser.parse_args(argv)
    localenv.prepare()
    if arguments.command == "migrate-snapshot-tables":
        moved = snapshot_tables.migrate()
        print(", ".join(f"{table}: {count} rows" for table, count in moved.items()) or "no snapshot table rows")
        return 0
    try:
        return _run(arguments)
    except ServiceError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2


def _run(arguments: argparse.Namespace) -> int:
    if arguments.command == "list-apps":
        print("\n".join(apps.list_apps(arguments.collection)))
    elif arguments.command == "delete-app":
        ref = apps.app_ref(arguments.collection, arguments.app)
        apps.delete_app(ref)
        print(f"Deleted app {ref.collection}/{ref.name} and {grants.delete_grants_on(ref)} grants", file=sys.stderr)
    elif arguments.command == "app-settings":
        print(json.dumps(_app_settings(apps.app_ref(arguments.collection, arguments.app), arguments.set)))
    elif arguments.command == "grant":
        roles = grants.parse_roles({"roles": arguments.roles.split(",")} if arguments.roles else None)
        grant = grants.put_grant(arguments.principal, arguments.collection, arguments.app, roles)
        print(json.dumps(grant.to_result()))
    elif arguments.command == "erasure-hash":
        kind, value = ("deviceId", arguments.device_id) if arguments.device_id else ("userId", arguments.user_id)
        check = records.check_device_id if kind == "deviceId" else records.check_user_id
        try:
            print(audit.id_hash(kind, check(value)))
        except records.RecordError as error:
            print(f"error: {kind} {error.reason}", file=sys.stderr)
            return 2
    elif arguments.command == "revoke":
        grants.delete_grant(arguments.principal, arguments.collection, arguments.app)
    else:
        keys = apps.register_app(arguments.collection, arguments.app, rotate=arguments.rotate)
        print(f"Registered app {arguments.collection}/{arguments.app}; keep these keys, they are not stored:",
              file=sys.stderr)
        print(json.dumps({"exportKey": keys.export_key, "collectKey": keys.collect_key}))
    return 0


def _app_settings(ref: apps.AppRef, changes: list[str]) -> dict:
    """The app's settings document, after the ``NAME=VALUE`` changes (checked and stored as the admin API does)."""
    document = apps.app_settings(ref).to_document()
    if not changes:
        return document
    for change in changes:
        name, equals, value = change.partition("=")
        if not equals:
            raise InvalidInput(f"--set takes NAME=VALUE, such as rawRetentionDays=90, not {change!r}")
        try:
            document[name.strip()] = json.loads(value)
        except ValueError:
            raise InvalidInput(f"{name.strip()} takes a whole number of days or null, not {value!r}") from None
    return apps.set_app_settings(ref, apps.parse_app_settings(document)).to_document()


if __name__ == "__main__":
    sys.exit(main())
