"""Late arrivals: which past hours of an app's raw store received records, and when, so that a pipeline's late run
knows where to look without listing every period it ever delivered.

Collect notes a partition (record type, UTC hour) here *before* it appends rows whose hour has ended (or ends
within LATE_SKEW of the writer's clock): an acknowledged late record always has a note written no later than its
append. A note is a row of table `latearrivals`, keyed by the day it was written, so a reader asks only for the days
since it last looked:

    PartitionKey = "{appId}|{YYYYMMDD noted}"    RowKey = "{type}|{YYYYMMDDHH}"    noted = ISO time

Current-hour traffic writes nothing here, which keeps Collect at the storage's speed; a process notes a partition
at most once per NOTE_EVERY_SECONDS, which is why a reader looks back LOOKBACK before its last look (see
``noted_since``).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableTransactionError

from shared.platform import storage, tablefilter
from shared.platform.times import iso, iso_text

LATE_TABLE = "latearrivals"
# A writer whose clock lags the pipeline timer's by up to this much still notes the rows of an hour the timer
# already considers ended.
LATE_SKEW = dt.timedelta(minutes=5)
NOTE_EVERY_SECONDS = 60.0
# How far before its last look a reader asks again: it covers NOTE_EVERY_SECONDS, an append slower than its
# note by up to the storage timeouts, and clock skew between hosts, many times over. Reading a partition again
# costs a listing, never bytes already read (a pipeline keeps what it read of each blob).
LOOKBACK = dt.timedelta(minutes=15)
_TRANSACTION_ROWS = 100  # Table storage's limit for one batch


@dataclass(frozen=True, order=True)
class LatePartition:
    """An hour of one record type that received records after it ended."""

    record_type: str
    hour: dt.datetime


def parse_prefix(prefix: str) -> tuple[str, LatePartition] | None:
    """(app id, partition) of a raw partition prefix ``{app}/{type}/{yyyy}/{MM}/{dd}/{HH}/``; None when it is not
    one (a year before 1000 is not padded, as rawstore writes it)."""
    parts = prefix.rstrip("/").split("/")
    if len(parts) != 6:
        return None
    app_id, record_type, year, month, day, hour = parts
    try:
        return app_id, LatePartition(record_type, dt.datetime(int(year), int(month), int(day), int(hour),
                                                              tzinfo=dt.UTC))
    except ValueError:
        return None


class Notes:
    """What this process noted lately: a partition is noted again after NOTE_EVERY_SECONDS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._noted: dict[str, float] = {}

    def due(self, keys: Iterable[str], now: float) -> list[str]:
        with self._lock:
            if len(self._noted) > 50_000:
                self._noted = {key: at for key, at in self._noted.items() if now - at < NOTE_EVERY_SECONDS}
            return [key for key in keys if now - self._noted.get(key, -NOTE_EVERY_SECONDS) >= NOTE_EVERY_SECONDS]

    def done(self, keys: Iterable[str], now: float) -> None:
        with self._lock:
            for key in keys:
                self._noted[key] = now


_notes = Notes()


def late_prefixes(prefixes: Iterable[str], now: dt.datetime) -> list[str]:
    """The raw partition prefixes whose hour ended before ``now`` + LATE_SKEW."""
    cutoff = now + LATE_SKEW
    late = []
    for prefix in prefixes:
        parsed = parse_prefix(prefix)
        if parsed is not None and parsed[1].hour + dt.timedelta(hours=1) <= cutoff:
            late.append(prefix)
    return late


def note(prefixes: Iterable[str], *, now: dt.datetime | None = None) -> int:
    """Notes the late partitions among ``prefixes`` (the batch's raw partitions) before they are appended to;
    returns how many rows were written. Raises the storage's error: the caller must not append then."""
    now = now or dt.datetime.now(dt.UTC)
    clock = time.monotonic()
    due = _notes.due(late_prefixes(prefixes, now), clock)
    if not due:
        return 0
    by_partition: dict[str, list[dict]] = {}
    for prefix in due:
        parsed = parse_prefix(prefix)
        assert parsed is not None
        app_id, partition = parsed
        key = f"{app_id}|{now:%Y%m%d}"
        by_partition.setdefault(key, []).append(
            {"PartitionKey": key, "RowKey": f"{partition.record_type}|{partition.hour:%Y%m%d%H}", "noted": iso(now)})
    table = storage.table(LATE_TABLE)
    for rows in by_partition.values():
        for start in range(0, len(rows), _TRANSACTION_ROWS):
            table.submit_transaction([("upsert", row) for row in rows[start:start + _TRANSACTION_ROWS]])
    _notes.done(due, clock)
    return len(due)


def noted_since(app_id: str, since: dt.datetime, *, now: dt.datetime | None = None) -> set[LatePartition]:
    """The app's partitions noted at ``since`` - LOOKBACK or later."""
    now = now or dt.datetime.now(dt.UTC)
    start = since - LOOKBACK
    found: set[LatePartition] = set()
    table = storage.table(LATE_TABLE)
    day = start.date()
    while day <= now.date():
        query = tablefilter.all_of(tablefilter.eq("PartitionKey", f"{app_id}|{day:%Y%m%d}"),
                                   tablefilter.compare("noted", "ge", iso_text(start)))
        for row in table.query_entities(query, select=["RowKey"]):
            record_type, _, hour = row["RowKey"].partition("|")
            found.add(LatePartition(record_type, dt.datetime.strptime(hour, "%Y%m%d%H").replace(tzinfo=dt.UTC)))
        day += dt.timedelta(days=1)
    return found


def forget_before(app_id: str, day: dt.date) -> int:
    """Removes the app's notes of hours before ``day`` (its retention removed them: shared.pipelines.retention);
    returns how many went."""
    table = storage.table(LATE_TABLE)
    # Every note of the app: its partition keys are "{appId}|{day noted}", and "}" comes right after "|".
    query = tablefilter.all_of(tablefilter.compare("PartitionKey", "ge", f"{app_id}|"),
                               tablefilter.compare("PartitionKey", "lt", f"{app_id}}}"))
    # An hour is written YYYYMMDDHH, its year unpadded before 1000 (as strftime writes it): a shorter one is older.
    first_kept = f"{day:%Y%m%d}00"
    old: dict[str, list[dict]] = {}
    for row in table.query_entities(query, select=["PartitionKey", "RowKey"]):
        hour = row["RowKey"].partition("|")[2]
        if (len(hour), hour) < (len(first_kept), first_kept):
            old.setdefault(row["PartitionKey"], []).append(
                {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]})
    removed = 0
    for rows in old.values():
        for start in range(0, len(rows), _TRANSACTION_ROWS):
            chunk = rows[start:start + _TRANSACTION_ROWS]
            try:
                table.submit_transaction([("delete", row) for row in chunk])
            except (TableTransactionError, ResourceNotFoundError):  # one was removed meanwhile: one at a time
                for note in chunk:
                    try:
                        table.delete_entity(note["PartitionKey"], note["RowKey"])
                    except ResourceNotFoundError:
                        continue
            removed += len(chunk)
    return removed
