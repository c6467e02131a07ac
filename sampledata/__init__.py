"""Realistic, deterministic sample data for every record kind, for demos, tests and the benchmark.

`records(...)` yields the normalized records of an app (the same for the same arguments);
`backend_records(...)` the same and what devices send later, in the order a backend sends them;
`load(...)` writes the records straight into the stores at high speed; `post(...)` sends the backend's
records through Collect over HTTP, in gzip batches with an Idempotency-Key each.
"""

from sampledata.generator import (
                                  Plan,
                                  backend_phases,
                                  backend_records,
                                  event_records,
                                  load,
                                  load_devices,
                                  load_events,
                                  post,
                                  records,
)

__all__ = ["Plan", "backend_phases", "backend_records", "event_records", "load", "load_devices", "load_events", "post",
           "records"]
