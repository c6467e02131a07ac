"""Realistic, deterministic sample data for every record kind, for demos, tests and the benchmark.

`records(...)` yields the normalized records of an app (the same for the same arguments);
`load(...)` writes them straight into the stores at high speed; `post(...)` sends them through Collect.
"""

from sampledata.generator import Plan, event_records, load, load_events, post, records  # noqa: F401
