"""Admin commands. `python -m tools.admin register-app --collection C --app A` registers an app and prints
its keys as JSON on the last line: {"exportKey": ..., "collectKey": ...}. The keys are shown only here.
`python -m tools.admin migrate-snapshot-tables` moves the snapshot tables of a deployment from before the
snapshot log into the log, once, after the upgrade (shared/ingest/snapshot_tables.py)."""

from __future__ import annotations

import argparse
import json
import sys

from shared.ingest import snapshot_tables
from shared.platform import apps
from shared.platform.errors import ServiceError
from tools import localenv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    register = commands.add_parser("register-app", help="register an app and print its keys")
    register.add_argument("--collection", required=True)
    register.add_argument("--app", required=True)
    register.add_argument("--rotate", action="store_true", help="issue new keys for an existing app")
    commands.add_parser("migrate-snapshot-tables", help="move the snapshot tables of earlier versions into the log")
    arguments = parser.parse_args(argv)
    localenv.prepare()
    if arguments.command == "migrate-snapshot-tables":
        moved = snapshot_tables.migrate()
        print(", ".join(f"{table}: {count} rows" for table, count in moved.items()) or "no snapshot table rows")
        return 0
    try:
        keys = apps.register_app(arguments.collection, arguments.app, rotate=arguments.rotate)
    except ServiceError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    print(f"Registered app {arguments.collection}/{arguments.app}; keep these keys, they are not stored:",
          file=sys.stderr)
    print(json.dumps({"exportKey": keys.export_key, "collectKey": keys.collect_key}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
