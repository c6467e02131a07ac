"""DeltaLake exports: the job's Parquet files (the ParquetBlob files, staged and committed as any export's) made
part of a Delta Lake table in the destination container by one commit of the table's transaction log, which the
deltalake library (delta-rs) writes; no log entry is written by hand.

- A one-shot export's table is `delta/{exportType}/`: its commit replaces the partitions (`date=`) of its range,
  or the whole table for a snapshot type, so the same range exported twice gives the same table.
- A pipeline's table is `{pipeline}/`: a run's commit appends its files to their event-time partitions; a late
  run of sessions replaces the days it delivers again.
- Exactly once: each commit carries a Delta transaction identifier (application id, version): the job's, or the
  pipeline's with the run's sequence. A commit tried again (a retried monitor, a duplicated message, a process
  killed after the log was written) finds its identifier in the table and commits nothing more; a crash before
  it leaves the previous version, and the data files no version names are removed by the table's vacuum.
- Tables are written at reader version 1, writer version 2, without table features: what Microsoft Fabric,
  Databricks and Synapse read. Times are UTC timestamps (a time without a zone would need a table feature).

The destination's SAS goes to the library as a storage option only, with the same bounds as every destination
call (timeouts, few retries); errors from the library name the URL as `REDACTED`, never the SAS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.export import registry
from shared.export.destination import Destination
from shared.export.schemas import MICROSECONDS, arrow_schema
from shared.export.spec import ExportSpec
from shared.platform.errors import PermanentJobError, ServiceError, TransientError

if TYPE_CHECKING:
    from deltalake import DeltaTable

log = logging.getLogger(__name__)
PARTITION = "date"
# Table properties set when a table is made: a checkpoint every 10 commits (what Spark writes and readers
# expect), the log kept 30 days, removed files kept for the app's table retention (shared.platform.apps).
CHECKPOINT_INTERVAL = 10
LOG_RETENTION = "interval 30 days"
DEFAULT_RETENTION_DAYS = 7
# A commit that finds the log moved on (another export of the same table) is tried again this often.
COMMIT_TRIES = 5


@dataclass(frozen=True)
class TableFile:
    """A committed data file of the job: its path in the container, size, rows and statistics."""

    name: str
    size: int
    stats: str | None


def storage_options(target: Destination) -> tuple[str, dict[str, str]]:
    """The table URI base (`az://{container}`) and delta-rs's storage options for a destination: its SAS, and
    for an endpoint that is not Azure's (the emulator, loopback) the endpoint itself, path-style."""
    url = urlsplit(target.url)
    host = url.hostname or ""
    parts = [part for part in url.path.split("/") if part]
    options = {"azure_storage_sas_token": target.sas, "timeout": "120s", "connect_timeout": "10s",
               "max_retries": "3", "retry_timeout": "60s"}
    if host.endswith(".blob.core.windows.net"):
        account, container = host.split(".")[0], parts[0]
    else:
        account, container = parts[0], parts[1]
        options.update(azure_storage_endpoint=f"{url.scheme}://{url.netloc}/{account}",
                       allow_http="true" if url.scheme == "http" else "false")
    options["azure_storage_account_name"] = account
    return f"az://{container}", options


def table_schema(job: ExportSpec):
    """The table's Arrow schema: the files' columns, then the partition column of historical types."""
    import pyarrow as pa

    schema = arrow_schema(registry.row_spec(job).columns, MICROSECONDS)
    return schema.append(pa.field(PARTITION, pa.string())) if _partitioned(job) else schema


def _partitioned(job: ExportSpec) -> bool:
    return job.start_date is not None


def transaction(job: ExportSpec) -> tuple[str, int]:
    """The commit's Delta transaction identifier: (application id, version)."""
    if job.run is not None:
        return f"engagement-export/pipeline/{job.run.run.rsplit('-', 1)[1]}/{job.run.pipeline}", job.run.sequence
    return f"engagement-export/task/{job.job_id}", 1


def _partition_of(relative: str) -> dict[str, str | None]:
    folder = relative.split("/", 1)[0]
    return {PARTITION: folder.removeprefix(f"{PARTITION}=")} if folder.startswith(f"{PARTITION}=") else {}


def _open(uri: str, options: dict[str, str]) -> DeltaTable | None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        return None


def commit(job: ExportSpec, target: Destination, files: Sequence[TableFile], *,
           retention_days: int = DEFAULT_RETENTION_DAYS) -> int:
    """Commits the job's files to its table once; returns the table version that holds them."""
    from deltalake import CommitProperties, Schema, Transaction
    from deltalake.exceptions import CommitFailedError, DeltaError
    from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

    folder = registry.table_folder(job)
    assert folder is not None
    base, options = storage_options(target)
    uri = f"{base}/{folder}"
    app_id, version = transaction(job)
    now = int(time.time() * 1000)
    adds = [AddAction(path=file.name[len(folder) + 1:], size=file.size,
                         partition_values=_partition_of(file.name[len(folder) + 1:]), modification_time=now,
                         data_change=True, stats=file.stats or '{"numRecords":0}') for file in files]
    schema = table_schema(job)
    partition_by = [PARTITION] if _partitioned(job) else None
    properties = CommitProperties(app_transactions=[Transaction(app_id, version)],
                                  custom_metadata={"engagementExport.jobId": job.job_id})
    for attempt in range(COMMIT_TRIES):
        try:
            table = _open(uri, options)
            if table is None:
                create_table_with_add_actions(
                    uri, Schema.from_arrow(schema), adds, mode="error", partition_by=partition_by,
                    storage_options=options, commit_properties=properties,
                    configuration={"delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
                                   "delta.logRetentionDuration": LOG_RETENTION,
                                   "delta.deletedFileRetentionDuration": f"interval {retention_days} days"})
                return 0
            if (table.transaction_version(app_id) or 0) >= version:
                return _committed_version(table, job.job_id)
            _grow_schema(table, schema)
            mode, filters = _replacing(job)
            changes: list[AddAction | RemoveAction] = list(adds)
            table.create_write_transaction(changes, mode=mode, schema=schema, partition_by=partition_by,
                                           partition_filters=filters, commit_properties=properties)
            return _committed_version(_open(uri, options) or table, job.job_id)
        except CommitFailedError as error:
            # Another commit came first (another export of this table): read the log again and retry.
            log.info("Commit of %s to %s conflicted (%s); trying again", job.job_id, folder, type(error).__name__)
            time.sleep(0.2 * (attempt + 1))
        except (DeltaError, OSError) as error:  # the library raises OSError for what storage answered
            raise _failure(error, folder) from None
    raise TransientError(f"the DeltaLake table {folder} kept changing while export {job.job_id} committed")


def _grow_schema(table: DeltaTable, schema) -> None:
    """Schema evolution: the columns of the job's files that the table lacks (a column an export type gained,
    which the published schemas add at the end; or the columns a projected first export left out) are added to
    the table, at its end, in one commit of their own. Rows written before read them as null."""
    from deltalake import Schema

    present = {field.name for field in table.schema().fields}
    missing = [field for field in Schema.from_arrow(schema).fields if field.name not in present]
    if missing:
        table.alter.add_columns(missing)


def _replacing(job: ExportSpec) -> tuple[str, Any]:
    """What the commit replaces: a one-shot export its range's partitions (a snapshot, the whole table); a
    pipeline's run nothing (it appends), but a late run of sessions the days it delivers again."""
    if job.run is not None:
        if job.run.replaces:
            return "overwrite", [(PARTITION, "in", [period[:10] for period in job.run.periods])]
        return "append", None
    if job.start_date is None or job.end_date is None:
        return "overwrite", None
    return "overwrite", [(PARTITION, ">=", job.start_date.isoformat()), (PARTITION, "<=", job.end_date.isoformat())]


def _committed_version(table: DeltaTable, job_id: str) -> int:
    """The version whose commit carries the job's id (the latest, if the history no longer reaches it)."""
    for entry in table.history(limit=200):
        if entry.get("engagementExport.jobId") == job_id:
            return int(entry["version"])
    return table.version()


def _failure(error: Exception, folder: str) -> Exception:
    """A library error as the job sees it: one no retry can fix (refused, not found) ends the job with a reason;
    the others are retried. The library's text names the URL as REDACTED, never the SAS."""
    text = str(error)
    lowered = text.lower()
    if "authorizationpermissionmismatch" in lowered or "authorizationfailure" in lowered or "403" in lowered:
        return PermanentJobError(f"the destination's SAS does not allow what the DeltaLake table {folder} needs: "
                                 f"read, list, create and write (and delete for its vacuum)")
    if "containernotfound" in lowered:
        return PermanentJobError("the destination container does not exist (was it deleted?); create it and export "
                                 "again")
    return TransientError(f"the DeltaLake table {folder} could not be committed: {text.splitlines()[0][:300]}")


def retention_days(app_id: str) -> int:
    """The app's table retention (its tableRetentionDays), DEFAULT_RETENTION_DAYS unless it set one."""
    from shared.platform import apps

    try:
        days = apps.app_settings(apps.AppRef(*app_id.split("~", 1))).table_retention_days
    except ServiceError:
        return DEFAULT_RETENTION_DAYS
    return days or DEFAULT_RETENTION_DAYS


def maintain(job: ExportSpec, target: Destination, version: int, *, retention_days: int) -> None:
    """Every CHECKPOINT_INTERVAL versions: a checkpoint of the log, small files of each partition compacted, then
    files no version within the retention needs removed, and the expired log entries. Best effort: a table that
    is not kept tidy now is at the next interval, and a SAS without delete permission only keeps files longer."""
    from deltalake.exceptions import DeltaError

    if version == 0 or version % CHECKPOINT_INTERVAL:
        return
    folder = registry.table_folder(job)
    base, options = storage_options(target)
    try:
        table = _open(f"{base}/{folder}", options)
        if table is None:
            return
        table.create_checkpoint()
        table.optimize.compact(target_size=128 * 1024 * 1024)
        # full: files no version names at all (a job that failed after committing its files) go too, not only
        # those a commit removed.
        table.vacuum(retention_hours=retention_days * 24, enforce_retention_duration=False, dry_run=False, full=True)
        table.cleanup_metadata()
    except (DeltaError, OSError) as error:
        log.warning("Maintenance of the DeltaLake table %s stopped: %s", folder, str(error).splitlines()[0][:200])
