"""Ingestion: each record of a batch is checked on its own; the valid ones are written (historical records to
the raw store, snapshot records to their tables) before the answer says 200, and each refused record is listed
with its index, the field and the reason. The HTTP side is shared.api.collect_api.
"""

from __future__ import annotations

import datetime as dt

from shared.ingest import rawstore, snapshots
from shared.ingest.records import HISTORICAL_TYPES, RecordError, normalize


def ingest(app_id: str, raw_records: list) -> dict:
    """Checks and stores a batch; returns the answer body {"accepted": n, "rejected": [...]}.

    Every record is checked before anything is written, so no record can fail a write half-way through a
    batch. Snapshot state is written first because its writes are upserts: a batch sent again after a
    failure rewrites the same rows. The raw appends, which a retry would repeat, come last."""
    received = dt.datetime.now(dt.timezone.utc)
    accepted, rejected = [], []
    for index, raw in enumerate(raw_records):
        try:
            accepted.append(normalize(raw, now=received))
        except RecordError as error:
            rejected.append({"index": index, "field": error.field, "reason": error.reason})
    historical = [record for record in accepted if record["type"] in HISTORICAL_TYPES]
    snapshot = [record for record in accepted if record["type"] not in HISTORICAL_TYPES]
    if snapshot:
        snapshots.store(app_id, snapshot, now=received)
    if historical:
        rawstore.writer().append_records(app_id, historical)
    return {"accepted": len(accepted), "rejected": rejected}
