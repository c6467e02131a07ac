"""One commit of a DeltaLake table's log, made by the deltalake library in a process of its own.

The library, once it has committed, holds about 45 MiB in the process that used it (its runtime, and the pages
it touched of its 127 MB native library): in the host, beside the parts of the next exports, that pushed a
10M-record export's peak from 243 to 292 MiB. So shared.export.deltatable hands each commit to a process started
for it (`spawn`: the library's runtime refuses a forked process), which imports only this module, the library
and pyarrow, commits, tidies the table when it is due, answers and exits. An order is plain data, and so is the
answer: a version, or what went wrong and whether trying again can help.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

# A commit that finds the log moved on (another export of the same table) is tried again this often.
COMMIT_TRIES = 5
CHECKPOINT_INTERVAL = 10
LOG_RETENTION = "interval 30 days"


@dataclass(frozen=True)
class Order:
    """What to commit: the table, the files (AddAction fields), the schema (Arrow IPC), and how."""

    uri: str
    options: dict[str, str]
    adds: list[dict[str, Any]]
    schema: bytes
    partition_by: list[str] | None
    mode: str  # "append" or "overwrite"
    filters: Any  # the partitions an overwrite replaces (None: the whole table)
    app_id: str
    version: int
    job_id: str
    retention_days: int
    folder: str


@dataclass(frozen=True)
class Answer:
    version: int | None = None
    error: str | None = None
    permanent: bool = False
    notes: list[str] = field(default_factory=list)


def run(order: Order) -> Answer:
    """Commits once (the transaction identifier tells a commit made before); tidies the table every
    CHECKPOINT_INTERVAL versions."""
    from deltalake.exceptions import CommitFailedError, DeltaError

    notes: list[str] = []
    for attempt in range(COMMIT_TRIES):
        try:
            version = _commit(order)
            notes += _maintain(order, version)
            return Answer(version=version, notes=notes)
        except CommitFailedError as error:
            notes.append(f"the commit conflicted ({type(error).__name__}); tried again")
            time.sleep(0.2 * (attempt + 1))
        except (DeltaError, OSError) as error:  # the library raises OSError for what storage answered
            return _failure(error, order.folder)
    return Answer(error=f"the DeltaLake table {order.folder} kept changing while export {order.job_id} committed")


def _open(order: Order):
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(order.uri, storage_options=order.options)
    except TableNotFoundError:
        return None


def _commit(order: Order) -> int:
    import pyarrow as pa
    from deltalake import CommitProperties, Schema, Transaction
    from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

    schema = pa.ipc.read_schema(pa.py_buffer(order.schema))
    adds = [AddAction(**add) for add in order.adds]
    properties = CommitProperties(app_transactions=[Transaction(order.app_id, order.version)],
                                  custom_metadata={"engagementExport.jobId": order.job_id})
    table = _open(order)
    if table is None:
        create_table_with_add_actions(
            order.uri, Schema.from_arrow(schema), adds, mode="error", partition_by=order.partition_by,
            storage_options=order.options, commit_properties=properties,
            configuration={"delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
                           "delta.logRetentionDuration": LOG_RETENTION,
                           "delta.deletedFileRetentionDuration": f"interval {order.retention_days} days"})
        return 0
    if (table.transaction_version(order.app_id) or 0) >= order.version:
        return _committed_version(table, order.job_id)
    _grow_schema(table, schema)
    changes: list[AddAction | RemoveAction] = list(adds)
    table.create_write_transaction(changes, mode=order.mode, schema=schema, partition_by=order.partition_by,
                                   partition_filters=order.filters, commit_properties=properties)
    return _committed_version(_open(order) or table, order.job_id)


def _grow_schema(table, schema) -> None:
    """Schema evolution: the columns of the job's files that the table lacks (a column an export type gained,
    which the published schemas add at the end; or the columns a projected first export left out) are added to
    the table, at its end, in one commit of their own. Rows written before read them as null."""
    from deltalake import Schema

    present = {item.name for item in table.schema().fields}
    missing = [item for item in Schema.from_arrow(schema).fields if item.name not in present]
    if missing:
        table.alter.add_columns(missing)


def _committed_version(table, job_id: str) -> int:
    """The version whose commit carries the job's id (the latest, if the history no longer reaches it)."""
    for entry in table.history(limit=200):
        if entry.get("engagementExport.jobId") == job_id:
            return int(entry["version"])
    return table.version()


def _maintain(order: Order, version: int) -> list[str]:
    """Every CHECKPOINT_INTERVAL versions: a checkpoint of the log, small files of each partition compacted, then
    what no version within the retention needs vacuumed (in full: files no version ever named go too, a job that
    failed after committing its files left them), and the expired log entries. Best effort: a table that is not
    kept tidy now is at the next interval, and a SAS without delete permission only keeps files longer."""
    from deltalake.exceptions import DeltaError

    if version == 0 or version % CHECKPOINT_INTERVAL:
        return []
    try:
        table = _open(order)
        if table is None:
            return []
        table.create_checkpoint()
        table.optimize.compact(target_size=128 * 1024 * 1024)
        vacuum(table, hours=order.retention_days * 24, full=True)
        table.cleanup_metadata()
    except (DeltaError, OSError) as error:
        return [f"the upkeep of the table stopped: {first_line(error)[:200]}"]
    return []


def vacuum(table, *, hours: int, full: bool) -> int:
    """Deletes the data files that no version of the last ``hours`` names (``full``: with those that no version
    ever named, as old as that); how many. The table's own retention is not enforced: the caller's is the app's."""
    return len(table.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=False, full=full))


def refusal(error: Exception) -> str | None:
    """What a library error says no retry can fix: "denied" (the SAS lacks a right, was revoked or expired),
    "missing" (the container is gone), or None (worth trying again). Its text names the URL as REDACTED."""
    text = str(error)
    if "<Code>ContainerNotFound</Code>" in text:
        return "missing"
    if _DENIED.search(text):
        return "denied"
    return None


# The storage's answer when a SAS is refused: its status line or error code, or the library's own words for it
# (a bare "403" would also match a request id or a time in the answer's text).
_DENIED = re.compile(r"\b403 Forbidden\b|<Code>(AuthorizationPermissionMismatch|AuthorizationFailure|"
                     r"AuthenticationFailed|AuthorizationResourceTypeMismatch)</Code>|lacked the necessary privileges")


def _failure(error: Exception, folder: str) -> Answer:
    """A library error as the job sees it: one no retry can fix (refused, not found) ends the job with a reason;
    the others are retried. The library's text names the URL as REDACTED, never the SAS."""
    refused = refusal(error)
    if refused == "denied":
        return Answer(error=f"the destination's SAS does not allow what the DeltaLake table {folder} needs: read, "
                            f"list, create and write (and delete for its vacuum)", permanent=True)
    if refused == "missing":
        return Answer(error="the destination container does not exist (was it deleted?); create it and export "
                            "again", permanent=True)
    return Answer(error=f"the DeltaLake table {folder} could not be committed: {first_line(error)}")


def first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__
