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

The commit itself is made in a process started for it (shared.export.deltacommit), so that the library's memory
never sits in the host beside the next exports' parts. The destination's SAS goes to the library as a storage
option only, with the same bounds as every destination
call (timeouts, few retries); errors from the library name the URL as `REDACTED`, never the SAS.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from shared.export import deltacommit, registry
from shared.export.destination import Destination
from shared.export.schemas import MICROSECONDS, arrow_schema
from shared.export.spec import ExportSpec
from shared.platform.errors import PermanentJobError, ServiceError, TransientError

log = logging.getLogger(__name__)
PARTITION = "date"
# Removed files are kept for the app's table retention (shared.platform.apps), this long unless it set one.
DEFAULT_RETENTION_DAYS = 7
# A commit (with the table's upkeep, every tenth version) that takes longer is abandoned and tried again.
COMMIT_TIMEOUT_SECONDS = 600
CHECKPOINT_INTERVAL = deltacommit.CHECKPOINT_INTERVAL
Asked = TypeVar("Asked")
Answered = TypeVar("Answered")


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


def order(job: ExportSpec, target: Destination, files: Sequence[TableFile], *,
          retention_days: int = DEFAULT_RETENTION_DAYS) -> deltacommit.Order:
    """The commit of the job's files to its table, as plain data for the process that makes it."""
    folder = registry.table_folder(job)
    assert folder is not None
    base, options = storage_options(target)
    app_id, version = transaction(job)
    now = int(time.time() * 1000)
    adds = [{"path": file.name[len(folder) + 1:], "size": file.size,
             "partition_values": _partition_of(file.name[len(folder) + 1:]), "modification_time": now,
             "data_change": True, "stats": file.stats or '{"numRecords":0}'} for file in files]
    mode, filters = _replacing(job)
    return deltacommit.Order(uri=f"{base}/{folder}", options=options, adds=adds,
                             schema=table_schema(job).serialize().to_pybytes(),
                             partition_by=[PARTITION] if _partitioned(job) else None, mode=mode, filters=filters,
                             app_id=app_id, version=version, job_id=job.job_id, retention_days=retention_days,
                             folder=folder)


def commit(job: ExportSpec, target: Destination, files: Sequence[TableFile], *,
           retention_days: int = DEFAULT_RETENTION_DAYS) -> int:
    """Commits the job's files to its table once, in a process started for it (shared.export.deltacommit);
    returns the table version that holds them."""
    answer = run_in_process(order(job, target, files, retention_days=retention_days))
    for note in answer.notes:
        log.info("DeltaLake table %s, export %s: %s", registry.table_folder(job), job.job_id, note)
    if answer.error is not None:
        raise PermanentJobError(answer.error) if answer.permanent else TransientError(answer.error)
    assert answer.version is not None
    return answer.version


def run_in_process(commit_order: deltacommit.Order) -> deltacommit.Answer:
    return in_process(deltacommit.run, commit_order)


def in_process(function: Callable[[Asked], Answered], order: Asked) -> Answered:
    """``function(order)`` (a function of a module that imports only the library and pyarrow) in a process
    started for it, which exits once it has answered; abandoned after COMMIT_TIMEOUT_SECONDS."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as process:
        return process.submit(function, order).result(timeout=COMMIT_TIMEOUT_SECONDS)


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


def retention_days(app_id: str) -> int:
    """The app's table retention (its tableRetentionDays), DEFAULT_RETENTION_DAYS unless it set one."""
    from shared.platform import apps

    try:
        days = apps.app_settings(apps.AppRef(*app_id.split("~", 1))).table_retention_days
    except ServiceError:
        return DEFAULT_RETENTION_DAYS
    return days or DEFAULT_RETENTION_DAYS
