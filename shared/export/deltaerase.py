"""Erasure in the DeltaLake tables the service wrote (issue 34, docs/data-rights.md "Lake tables"): the rows of
some devices and users deleted in one commit of each table, and the files that held them removed, at once when
the erasure asks, else once no version the app's table retention keeps needs them.

The work is done in a process started for it (shared.export.deltadelete), as a commit is (shared.export.deltatable):
the host never holds the library. What a person must act on (a SAS that expired or lost its rights, a container
that is gone) is a LakeTableUnavailable naming the table, never its SAS; storage trouble that a later try can get
past is a TransientError, so the host tries again.

Files, without remove_files_now: each rewritten file is kept while a retained version names it; the erasure calls
remove_expired_files(table) again at ErasedTable.remove_files_at (the commit's time plus the app's table retention),
which removes it whether or not any further commit lands on the table (the upkeep of commits runs only every
tenth version).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TypeVar

from shared.export import deltadelete, deltatable
from shared.export.destination import Destination, SealedDestination
from shared.platform.config import get_settings
from shared.platform.errors import PermanentJobError, TransientError
from shared.platform.times import iso, utcnow

log = logging.getLogger(__name__)
Asked = TypeVar("Asked", deltadelete.Erase, deltadelete.Vacuum)


@dataclass(frozen=True)
class LakeTable:
    """A Delta table the service wrote for an app: its container (``url``, without SAS), its folder (``path``),
    the SAS to reach it (sealed), the app's table retention, and what wrote it (pipelines' names; the export
    tasks' ids)."""

    url: str
    path: str
    destination: SealedDestination = field(repr=False)
    retention_days: int = deltatable.DEFAULT_RETENTION_DAYS
    pipelines: tuple[str, ...] = ()
    task_ids: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return self.url, self.path

    @property
    def where(self) -> str:
        return f"the DeltaLake table {self.path} in {self.url}"


@dataclass(frozen=True)
class ErasedTable:
    """What erase_rows did to one table.

    ``version`` is the commit that deleted the rows (None when there was none to delete: no commit).
    ``files_removed`` counts the data files removed now (remove_files_now), ``remove_files_at`` is when
    remove_expired_files removes the files that still hold erased rows (None: none are left). ``exists`` is False
    for a table (or container) that no longer exists: nothing of it is left to erase."""

    url: str
    path: str
    exists: bool = True
    rows_deleted: int = 0
    files_rewritten: int = 0
    version: int | None = None
    files_removed: int = 0
    remove_files_at: dt.datetime | None = None
    conflicts: int = 0  # commits of others that made the deletion read the table again
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"url": self.url, "path": self.path, "exists": self.exists, "rowsDeleted": self.rows_deleted,
                "filesRewritten": self.files_rewritten, "version": self.version,
                "filesRemoved": self.files_removed, "removeFilesAt": iso(self.remove_files_at),
                "notes": list(self.notes)}


class LakeTableUnavailable(Exception):
    """A table that cannot be erased until a person acts: ``reason`` says what happened and what to do (it names
    the table and its container, never the SAS)."""

    def __init__(self, table: LakeTable, reason: str) -> None:
        super().__init__(f"{table.where}: {reason}")
        self.table = table
        self.reason = reason


def erase_rows(table: LakeTable, device_ids: Iterable[str], user_ids: Iterable[str], *, remove_files_now: bool,
               erasure_id: str = "") -> ErasedTable:
    """Deletes, in one commit, every row of the table whose deviceId is one of ``device_ids`` or whose userId is
    one of ``user_ids`` (a column the table lacks is skipped); erasing again deletes nothing and commits nothing.
    With ``remove_files_now`` every data file that no current version names is removed too, and the log's entries
    before it (older versions can no longer be read), else the files go at ``remove_files_at``
    (remove_expired_files). ``erasure_id`` goes to the commit's metadata (engagementExport.erasure), never an id.

    Raises LakeTableUnavailable (the SAS expired, was revoked or lacks a right; the container is gone) or
    TransientError (storage did not answer, the table kept changing)."""
    ids = {"deviceId": sorted(set(device_ids)), "userId": sorted(set(user_ids))}
    target = _open(table)
    base, options = deltatable.storage_options(target)
    order = deltadelete.Erase(uri=f"{base}/{table.path}", options=options, folder=table.path, ids=ids,
                              remove_files_now=remove_files_now, stray_hours=stray_hours(),
                              erasure=erasure_id or "erasure")
    answer = _run(table, target, deltadelete.erase, order)
    erased = ErasedTable(url=table.url, path=table.path, exists=answer.exists, rows_deleted=answer.rows,
                         files_rewritten=answer.files_rewritten, version=answer.version,
                         files_removed=answer.files_removed, conflicts=answer.conflicts, notes=tuple(answer.notes),
                         remove_files_at=_removal_time(table, answer, remove_files_now))
    log.info("Erasure %s: %s: %d rows deleted (version %s), %d files rewritten, %d files removed", erasure_id,
             table.where, erased.rows_deleted, erased.version, erased.files_rewritten, erased.files_removed)
    return erased


def remove_expired_files(table: LakeTable) -> int:
    """Removes the table's data files that no version within the app's table retention names (those an erasure
    rewrote, once that long has passed), and files no version ever named as old; returns how many. Safe to call at
    any time and again. Raises as erase_rows does."""
    target = _open(table)
    base, options = deltatable.storage_options(target)
    order = deltadelete.Vacuum(uri=f"{base}/{table.path}", options=options, folder=table.path,
                               hours=table.retention_days * 24)
    return _run(table, target, deltadelete.remove_expired, order).files_removed


def stray_hours() -> int:
    """How old a file that no version names must be before it is removed at once: older than any export could
    still commit it (its deadline), so a run committing beside the erasure never loses a file."""
    return get_settings().job_deadline_hours + 1


def _open(table: LakeTable) -> Destination:
    now = utcnow()
    if table.destination.expires <= now:
        raise LakeTableUnavailable(table, f"the SAS the service holds for it expired at "
                                          f"{iso(table.destination.expires)}; {_GIVE_SAS}")
    try:
        return table.destination.open()
    except PermanentJobError as error:
        raise LakeTableUnavailable(table, f"{error}".replace("create the export again", _GIVE_SAS)) from None


_GIVE_SAS = ("give the service a new SAS for the container (rcwdl) through the pipeline that writes the table (PUT "
             "it with a new containerUrl) or a DeltaLake export to it, then erase again")


def _run(table: LakeTable, target: Destination, function: Callable[[Asked], deltadelete.Erased],
         order: Asked) -> deltadelete.Erased:
    """The work done in its own process, its answer read: a process that took too long or died (killed, out of
    memory) is tried again later, as the table's storage trouble is."""
    try:
        answer = deltatable.in_process(function, order)
    except (TimeoutError, BrokenProcessPool) as error:
        raise TransientError(f"{table.where} could not be erased now: its process "
                             f"{'took too long' if isinstance(error, TimeoutError) else 'died'}") from None
    return _answered(table, target, answer)


def _answered(table: LakeTable, target: Destination, answer: deltadelete.Erased) -> deltadelete.Erased:
    for note in answer.notes:
        log.info("%s: %s", table.where, note)
    if answer.error is None:
        return answer
    if answer.refused == "missing":  # the container is gone, and the table with it
        return deltadelete.Erased(exists=False)
    if answer.refused == "denied" or utcnow() >= target.expires:
        raise LakeTableUnavailable(table, f"the storage refused the SAS the service holds for it (it was revoked, "
                                          f"has expired, its key was rotated, or it lacks read, list, write or "
                                          f"delete); {_GIVE_SAS}")
    raise TransientError(f"{table.where} could not be erased now: {answer.error}")


def _removal_time(table: LakeTable, answer: deltadelete.Erased, removed_now: bool) -> dt.datetime | None:
    """When remove_expired_files removes the files that held erased rows: once the retention has passed after the
    commit (files an earlier version dropped, and files no version named, are older and go then too); None when
    they were removed at once or the table is gone."""
    if removed_now or not answer.exists:
        return None
    return utcnow() + dt.timedelta(days=table.retention_days, minutes=5)
