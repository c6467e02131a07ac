"""Erasing rows from a DeltaLake table, made by the deltalake library in a process of its own (as
shared.export.deltacommit commits: the library's memory never stays in the host).

The rows of the given devices and users go in one commit: a MERGE of the table with a source table of the ids
that deletes every row it matches. The ids are data of that source, never text of a predicate, so no id (quotes,
backslashes, any script) can change what is deleted; the predicate is ours and names only the table's columns.
Only the files that hold a matched row are rewritten. A MERGE that matches nothing commits nothing, so erasing
again changes nothing. A commit that finds the log moved on (a pipeline's run, an export, the upkeep) reads the
table again and tries again, a bounded number of times: the rows the others committed are kept.

Files: the rewritten files' old copies stay for the versions that still name them (time travel) until a vacuum
removes them, at once when asked, else once the app's table retention has passed (shared.export.deltaerase).
Removed at once, the log's entries before the erasure go too: an entry that added a file the library wrote (an
erasure's rewrite, the upkeep's compaction) records the smallest and largest text of its columns, an id maybe.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace

from shared.export.deltacommit import LOG_RETENTION, first_line, refusal, vacuum

ID_COLUMNS = ("deviceId", "userId")
# A deletion that finds the log moved on reads the table again and tries again, this often, waiting longer each
# time (about 30 s in all): a pipeline commits once a run, so only a table committed to without pause starves it.
ERASE_TRIES = 8
ERASURE_KEY = "engagementExport.erasure"  # an erasure's commit carries it (the erasure's id, never an erased id)
LOG_RETENTION_KEY = "delta.logRetentionDuration"
FORGET_LOG = "interval 0 seconds"
ERASURES_LOOKED_AT = 100  # the newest commits where an erasure's is looked for (a retry follows it closely)


@dataclass(frozen=True)
class Erase:
    """What to erase from which table (its URI and storage options, as a commit's), and what to vacuum."""

    uri: str
    options: dict[str, str]
    folder: str
    ids: dict[str, list[str]]  # column -> the ids whose rows go
    remove_files_now: bool
    stray_hours: int  # files that no version ever named are removed once this old (a commit in flight is younger)
    erasure: str  # the commit's engagementExport.erasure, for the table's history (never an id)


@dataclass(frozen=True)
class Vacuum:
    """A vacuum of what the app's table retention no longer keeps."""

    uri: str
    options: dict[str, str]
    folder: str
    hours: int


@dataclass(frozen=True)
class Erased:
    """The answer: what the commit deleted, or that the table does not exist, or what went wrong."""

    exists: bool = True
    columns: tuple[str, ...] = ()  # the id columns the table has
    rows: int = 0
    files_rewritten: int = 0
    version: int | None = None  # of the commit that deleted them (None: nothing to delete, no commit)
    files_removed: int = 0
    conflicts: int = 0
    error: str | None = None
    refused: str | None = None  # "denied" | "missing" (deltacommit.refusal) when no retry can help
    notes: list[str] = field(default_factory=list)


def erase(order: Erase) -> Erased:
    """Deletes the ids' rows in one commit (none when there are none); with remove_files_now, then removes every
    data file that no current version names."""
    from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

    conflicts = removed = 0
    deleted: Erased | None = None  # once the rows' commit is made, a conflict of the vacuum's own does not redo it
    for attempt in range(ERASE_TRIES):
        try:
            table = _open(order.uri, order.options)
            if table is None:
                return Erased(exists=False)
            if deleted is None:
                deleted = _delete(table, order)
            if order.remove_files_now:
                removed += _vacuum_present(table, order.uri, order.options, hours=0, full=False)
                removed += _vacuum_present(table, order.uri, order.options, hours=order.stray_hours, full=True)
                if deleted.rows or _log_remembers(table):
                    _forget_log(table)
            return replace(deleted, files_removed=removed, conflicts=conflicts)
        except CommitFailedError:
            conflicts += 1
            time.sleep(min(0.25 * 2 ** attempt, 8.0) * random.uniform(0.5, 1.0))
        except TableNotFoundError:
            return Erased(exists=False)
        except (DeltaError, OSError) as error:  # the library raises OSError for what storage answered
            return _failure(error)
    return Erased(conflicts=conflicts, error=f"the DeltaLake table {order.folder} kept changing while its rows were "
                                             f"erased ({conflicts} conflicting commits); try again")


def remove_expired(order: Vacuum) -> Erased:
    """Removes the data files no version of the retention names, and those no version ever named as old."""
    from deltalake.exceptions import DeltaError, TableNotFoundError

    try:
        table = _open(order.uri, order.options)
        if table is None:
            return Erased(exists=False)
        return Erased(files_removed=_vacuum_present(table, order.uri, order.options, hours=order.hours, full=True))
    except TableNotFoundError:
        return Erased(exists=False)
    except (DeltaError, OSError) as error:
        return _failure(error)


def _open(uri: str, options: dict[str, str]):
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        return None


def _vacuum_present(table, uri: str, options: dict[str, str], *, hours: int, full: bool) -> int:
    """The vacuum, only when a file it would delete is still there: a vacuum writes two commits of its own
    (VACUUM START and END), and the library lists the files its log removed even once they are gone, so a
    vacuum run again would add versions for nothing."""
    from deltalake.fs import DeltaStorageHandler
    from pyarrow.fs import FileType

    candidates = table.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=True, full=full)
    if not candidates:
        return 0
    prefix = uri.rstrip("/") + "/"
    paths = [path.removeprefix(prefix) for path in candidates]
    found = DeltaStorageHandler(uri, options).get_file_info(paths)
    if all(info.type == FileType.NotFound for info in found):
        return 0
    return vacuum(table, hours=hours, full=full)


def _log_remembers(table) -> bool:
    """Whether the log may still hold, in the statistics of files older versions named, an erased id: it keeps
    an erasure's commit (one made without removing the files at once, or before a process died), or a removal
    of the log stopped half-way."""
    if table.metadata().configuration.get(LOG_RETENTION_KEY) == FORGET_LOG:
        return True
    return any(ERASURE_KEY in entry for entry in table.history(limit=ERASURES_LOOKED_AT))


def _forget_log(table) -> None:
    """The log's entries before now removed: each entry that added a file records the smallest and largest value
    of its columns (an id, maybe), and Delta keeps them for its log retention. A checkpoint of the current version
    (its files' statistics only) goes first; the log retention is set to nothing for the cleanup, then back."""
    kept = table.metadata().configuration.get(LOG_RETENTION_KEY)
    if kept in (None, FORGET_LOG):
        kept = LOG_RETENTION
    table.alter.set_table_properties({LOG_RETENTION_KEY: FORGET_LOG})
    table.create_checkpoint()
    table.cleanup_metadata()
    table.alter.set_table_properties({LOG_RETENTION_KEY: kept})


def _delete(table, order: Erase) -> Erased:
    from deltalake import CommitProperties

    present = {item.name for item in table.schema().fields}
    columns = tuple(name for name in ID_COLUMNS if name in present and order.ids.get(name))
    if not columns:
        return Erased(columns=(), notes=[] if any(name in present for name in ID_COLUMNS) else [
            f"the table {order.folder} has neither a deviceId nor a userId column: its rows name no device"])
    source = _source(columns, order.ids)
    predicate = " OR ".join(f'target."{name}" = source."{name}"' for name in columns)
    properties = CommitProperties(custom_metadata={ERASURE_KEY: order.erasure})
    metrics = (table.merge(source, predicate, source_alias="source", target_alias="target",
                           commit_properties=properties)
               .when_matched_delete().execute())
    rows = int(metrics.get("num_target_rows_deleted", 0))
    return Erased(columns=columns, rows=rows, files_rewritten=int(metrics.get("num_target_files_removed", 0)),
                  version=table.version() if rows else None)


def _source(columns: tuple[str, ...], ids: dict[str, list[str]]):
    """The ids as a table: one row per id, its column set and the others null (null never equals anything), so
    a row of the table is matched when any of its id columns holds one of that column's ids."""
    import pyarrow as pa

    values: dict[str, list[str | None]] = {name: [] for name in columns}
    for column in columns:
        for value in ids[column]:
            for name in columns:
                values[name].append(value if name == column else None)
    return pa.table({name: pa.array(values[name], pa.string()) for name in columns})


def _failure(error: Exception) -> Erased:
    refused = refusal(error)
    return Erased(error=first_line(error), refused=refused)
