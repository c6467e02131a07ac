"""`make data APP=<app> [COLLECTION=demo] DAYS=<n> DEVICES=<n> [SEED=1]`: realistic sample data for every
record kind, the same for the same seed, written straight into the app's stores (or, with --mode collect,
posted through the Collect endpoint of a running host)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from sampledata import Plan, load, post
from shared.platform.apps import app_ref
from tools import localenv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.generate", description=__doc__)
    parser.add_argument("--app", required=True, help="the app name, or collection/app")
    parser.add_argument("--collection", default="demo")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--last-day", type=dt.date.fromisoformat,
                        default=dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1),
                        help="the last UTC day with data (default: yesterday)")
    parser.add_argument("--mode", choices=("direct", "collect"), default="direct")
    parser.add_argument("--base-url", default="http://127.0.0.1:7071", help="with --mode collect")
    parser.add_argument("--collect-key", help="with --mode collect: the app's collect key")
    arguments = parser.parse_args(argv)
    collection, _, name = arguments.app.rpartition("/")
    ref = app_ref(collection or arguments.collection, name)
    if arguments.days < 1 or arguments.devices < 1:
        parser.error("--days and --devices must be at least 1")
    plan = Plan(devices=arguments.devices, days=arguments.days, last_day=arguments.last_day, seed=arguments.seed)
    localenv.prepare()
    started = time.perf_counter()
    if arguments.mode == "collect":
        if not arguments.collect_key:
            parser.error("--mode collect needs --collect-key")
        counts = post(arguments.base_url, ref.collection, ref.name, arguments.collect_key, plan)
    else:
        counts = load(ref.id, plan, progress=lambda line: print(line, file=sys.stderr, flush=True))
    took = time.perf_counter() - started
    total = sum(counts.values())
    print(", ".join(f"{kind}={count}" for kind, count in sorted(counts.items())))
    print(f"{total} records for {ref.collection}/{ref.name} in {took:.1f}s ({total / took:,.0f} records/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
