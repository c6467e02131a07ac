"""Ingestion: each record of a batch is checked on its own; the valid ones are written to the raw store
(historical records under their own hour, snapshot records to the snapshot log, shared.ingest.snapshots) before
the answer says 200, and each refused record is listed
with its index, the field and the reason. The HTTP side is shared.api.collect_api; a batch sent with an
Idempotency-Key goes through shared.ingest.idempotency, which calls ``check`` and ``write`` itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from shared.ingest import latearrivals, rawstore, snapshots
from shared.ingest.records import HISTORICAL_TYPES, RecordError, Row, normalize, quick_row, stored_row
from shared.platform import foreground


@dataclass(frozen=True)
class CheckedBatch:
    """A batch once checked: its answer, and what it writes."""

    answer: dict
    received: dt.datetime
    rows: dict[str, list[bytes]]  # raw partition prefix -> stored rows, in the batch's order

    @property
    def accepted(self) -> int:
        return self.answer["accepted"]


def check(app_id: str, raw_records: list, *, received: dt.datetime | None = None) -> CheckedBatch:
    """Checks every record; the answer body is {"accepted": n, "rejected": [{index, field, reason}]}.

    ``received`` is when the batch arrived (now unless given): the rows of its snapshot records carry it, so the
    same batch checked with the same ``received`` gives the same rows."""
    received = received or dt.datetime.now(dt.UTC)
    rows: list[Row] = []
    snapshot: list[dict] = []
    rejected = []
    for index, raw in enumerate(raw_records):
        row = quick_row(raw, received)
        if row is None:
            try:
                record = normalize(raw, now=received)
            except RecordError as error:
                rejected.append({"index": index, "field": error.field, "reason": error.reason})
                continue
            if record["type"] not in HISTORICAL_TYPES:
                snapshot.append(record)
                continue
            row = stored_row(record)
        rows.append(row)
    accepted = len(rows) + len(snapshot)
    # The snapshot log first: its append is the one most batches share, and a failed append stops the rest.
    rows = snapshots.log_rows(snapshot, received) + rows
    return CheckedBatch({"accepted": accepted, "rejected": rejected}, received, rawstore.partition_rows(app_id, rows))


def write(app_id: str, batch: CheckedBatch, *, partitions: list[str] | None = None,
          deadline: float | None = None) -> None:
    """Stores the batch (only the raw ``partitions`` named, when given); returns once it is all durable.

    Every record was checked before anything is written, so no record can fail a write half-way through a
    batch. Hours that have ended are noted as late arrivals first, so no late record is acknowledged that a
    pipeline's late run could miss (shared.ingest.latearrivals)."""
    foreground.note()
    rows = {prefix: lines for prefix, lines in batch.rows.items() if partitions is None or prefix in partitions}
    latearrivals.note(rows)
    rawstore.writer().append_rows(rows, deadline=deadline)


def ingest(app_id: str, raw_records: list, *, admit: Callable[[CheckedBatch], None] | None = None) -> dict:
    """Checks and stores a batch; returns the answer body. ``admit`` may refuse the checked batch (the app's
    quota) before anything is written."""
    batch = check(app_id, raw_records)
    if admit is not None:
        admit(batch)
    write(app_id, batch)
    return batch.answer
