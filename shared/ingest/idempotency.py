"""Exactly-once batches: a batch sent with an `Idempotency-Key` header is stored once per app and key for 24
hours, and every copy of it gets the first one's answer.

A key is claimed by a row of the `idempotency` table (app, SHA-256 of the key) created before anything is
written. The row holds the body's digest, the answer, and where each raw partition's next rows would go
(shared.ingest.rawstore.Position) at the time of the claim. The row then says:

- `pending`: its owner is storing the batch. A copy waits for the answer (COLLECT_IDEMPOTENCY_WAIT_SECONDS),
  then gets a 409 with Retry-After. A claim pending past COLLECT_IDEMPOTENCY_LEASE_SECONDS belongs to a
  process that died: the next copy takes it over.
- `abandoned`: its owner failed to store the batch (storage down) and said so: the next copy takes it over.
- `done`: stored; copies get the stored answer, marked `Idempotent-Replayed: true`.

Taking over, a copy checks the batch again as of the first owner's receive time (kept in the claim), so its
rows are the very rows that owner wrote, snapshot log rows included (they carry that time); it then looks for
them after the positions the claim recorded: rows the dead owner stored are found there and not written again;
only the partitions whose rows are missing are written. A key sent with another body is a 422.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.ingest import collect, rawstore
from shared.ingest.records import format_time, parse_time
from shared.platform import storage, tablefilter
from shared.platform.config import get_settings
from shared.platform.errors import BatchInProgress, InvalidInput, KeyReused, TransientError

TABLE = "idempotency"
HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_LIFETIME = dt.timedelta(hours=24)
PENDING, ABANDONED, DONE = "pending", "abandoned", "done"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}\Z")
_POLL_SECONDS = 0.05
# A table property holds at most 64 KiB: a long answer (thousands of refused records) is split over several.
_ANSWER_PART_BYTES = 60_000


def check_key(value: str) -> str:
    if not _KEY.match(value):
        raise InvalidInput(f"the {HEADER} header must be 1 to 255 visible ASCII characters (a UUID is a good key)",
                         code="InvalidIdempotencyKey")
    return value


@dataclass(frozen=True)
class Outcome:
    answer: dict
    replayed: bool


def ingest_once(app_id: str, key: str, body: bytes, raw_records: list,
                admit: Callable[[collect.CheckedBatch], None]) -> Outcome:
    """Stores the batch unless a batch with this key was stored (or is being stored); ``admit`` may refuse a
    new batch (the app's quota) before anything is written, and then the key is released."""
    digest = hashlib.sha256(body).hexdigest()
    batch = collect.check(app_id, raw_records)
    table = storage.table(TABLE)
    row_key = hashlib.sha256(key.encode("ascii")).hexdigest()
    claim = _new_claim(app_id, row_key, digest, batch)
    waited_until = time.monotonic() + get_settings().idempotency_wait_seconds
    while True:
        try:
            created = table.create_entity(claim)
        except ResourceExistsError:
            pass
        else:
            return _store(table, app_id, batch, claim, created["etag"], admit, search=None)
        try:
            existing = table.get_entity(app_id, row_key)
        except ResourceNotFoundError:
            continue  # released or expired and removed since: claim it again
        if existing["claimedAt"] < format_time(_now() - KEY_LIFETIME):
            etag = _replace(table, existing, claim)
            if etag:
                return _store(table, app_id, batch, claim, etag, admit, search=None)
            continue
        if existing["bodyDigest"] != digest:
            raise KeyReused(f"this {HEADER} was used {existing['claimedAt']} with another body; a key names one "
                            f"batch: send a new key for a new batch")
        if existing["state"] == DONE:
            return Outcome(_answer_of(existing), replayed=True)
        lease = dt.timedelta(seconds=get_settings().idempotency_lease_seconds)
        if existing["state"] == ABANDONED or parse_time(existing["claimedAt"]) + lease < _now():
            # The batch as its first owner checked it, at its receive time: the same rows, which are found where
            # that owner stored them (snapshot rows carry the receive time).
            first = _received_of(existing)
            mine = batch if first is None or first == batch.received else collect.check(app_id, raw_records,
                                                                                         received=first)
            fresh = _new_claim(app_id, row_key, digest, mine)
            # Every owner's positions stay listed: a copy taking over from us looks behind each of them.
            earlier = json.loads(existing["positions"])
            taken = _with_answer(dict(fresh, receivedAt=existing.get("receivedAt", fresh["receivedAt"]),
                                      positions=json.dumps(earlier + json.loads(fresh["positions"]))),
                                 _answer_of(existing))
            etag = _replace(table, existing, taken)
            if etag:
                return _store(table, app_id, mine, taken, etag, admit, search=earlier)
            continue
        if time.monotonic() > waited_until:
            retry_after = max(1, int((parse_time(existing["claimedAt"]) + lease - _now()).total_seconds()) + 1)
            raise BatchInProgress(f"a batch with this {HEADER} is being stored; send it again after {retry_after} "
                                  f"seconds to get its answer", retry_after=min(retry_after, 60))
        time.sleep(_POLL_SECONDS)


def _store(table, app_id: str, batch: collect.CheckedBatch, claim: dict, etag: str,
           admit: Callable[[collect.CheckedBatch], None], *, search: list[list] | None) -> Outcome:
    """Writes the batch under our claim (only the partitions whose rows are not found behind the earlier
    owners' positions ``search``), then marks it done."""
    answer = _answer_of(claim)
    if search is None:  # a batch taken over was admitted by its first owner, and its claim must stay
        try:
            admit(batch)
        except Exception:
            _release(table, claim, etag)
            raise
    lease_ends = time.monotonic() + get_settings().idempotency_lease_seconds / 2
    try:
        missing = None if search is None else _missing_partitions(batch, search)
        # Rows not appended by half the lease are dropped: past the lease another copy may take the key over.
        collect.write(app_id, batch, partitions=missing, deadline=lease_ends)
    except BaseException:
        _mark(table, claim, etag, ABANDONED)
        raise
    _mark(table, claim, etag, DONE)
    return Outcome(answer, replayed=False)


def _new_claim(app_id: str, row_key: str, digest: str, batch: collect.CheckedBatch) -> dict:
    writer = rawstore.writer()
    claimed_at = format_time(_now())
    positions = [[p.prefix, writer.writer_id, p.blob, p.offset, claimed_at] for p in map(writer.position, batch.rows)]
    claim = {"PartitionKey": app_id, "RowKey": row_key, "bodyDigest": digest, "state": PENDING,
             "owner": writer.writer_id, "claimedAt": claimed_at, "receivedAt": batch.received.isoformat(),
             "positions": json.dumps(positions)}
    return _with_answer(claim, batch.answer)


def _received_of(claim: dict) -> dt.datetime | None:
    """When the claim's first owner received the batch (None for a claim written before this was kept)."""
    text = claim.get("receivedAt")
    return dt.datetime.fromisoformat(text) if text else None


def _with_answer(claim: dict, answer: dict) -> dict:
    packed = base64.b64encode(gzip.compress(json.dumps(answer).encode("utf-8"))).decode("ascii")
    claim = {k: v for k, v in claim.items() if not k.startswith("answer")}
    parts = [packed[i:i + _ANSWER_PART_BYTES] for i in range(0, len(packed), _ANSWER_PART_BYTES)] or [""]
    claim["answerParts"] = len(parts)
    claim.update({f"answer{index}": part for index, part in enumerate(parts)})
    return claim


def _answer_of(row: dict) -> dict:
    packed = "".join(row[f"answer{index}"] for index in range(row["answerParts"]))
    return json.loads(gzip.decompress(base64.b64decode(packed)))


def _replace(table, existing, claim: dict) -> str | None:
    """Takes an expired, abandoned or dead claim over: its new ETag, or None when another copy took it first."""
    try:
        return table.update_entity(claim, mode=UpdateMode.REPLACE, etag=existing.metadata["etag"],
                                   match_condition=MatchConditions.IfNotModified)["etag"]
    except (ResourceModifiedError, ResourceNotFoundError):
        return None


def _mark(table, claim: dict, etag: str, state: str) -> None:
    try:
        table.update_entity(dict(claim, state=state), mode=UpdateMode.REPLACE, etag=etag,
                            match_condition=MatchConditions.IfNotModified)
    except ResourceModifiedError:
        # Our lease ran out and another copy took the key over: it finds our rows and stores nothing twice.
        pass
    except AzureError:
        if state == DONE:
            raise TransientError("the batch is stored but its key could not be marked done; send it again with "
                                 "the same key to get its answer") from None
        # Not marked abandoned: the claim's lease runs out instead.


def _release(table, claim: dict, etag: str) -> None:
    try:
        table.delete_entity(claim["PartitionKey"], claim["RowKey"], etag=etag,
                            match_condition=MatchConditions.IfNotModified)
    except AzureError:
        pass  # the claim then expires like a dead one: the next copy looks for rows, finds none, stores


def _missing_partitions(batch: collect.CheckedBatch, positions: list[list]) -> list[str]:
    """The raw partitions of the batch whose rows no earlier owner stored."""
    return [prefix for prefix, lines in batch.rows.items()
            if not any(_stored_after(prefix, owner, blob, offset, claimed_at, b"".join(lines))
                       for recorded, owner, blob, offset, claimed_at in positions if recorded == prefix)]


def _stored_after(prefix: str, owner: str, recorded_blob: str | None, offset: int, claimed_at: str,
                  rows: bytes) -> bool:
    """Whether ``rows`` are in the owner's blobs of the partition: after the recorded position, or in a blob
    of that owner created since its claim."""
    container = storage.container(rawstore.RAW_CONTAINER)
    since = parse_time(claimed_at) - dt.timedelta(minutes=5)  # clocks of instances differ a little
    for blob in container.list_blobs(name_starts_with=f"{prefix}{owner}-", include=["metadata"]):
        if blob.name == recorded_blob:
            start = offset
        elif blob.creation_time is not None and blob.creation_time >= since:
            start = 0
        else:
            continue
        if blob.size <= start:
            continue
        text = gzip.decompress(container.get_blob_client(blob.name).download_blob(offset=start).readall())
        if rows in text or (rawstore.ERASURE_REWRITES in (blob.metadata or {}) and _stored_but_erased(rows, text)):
            return True
    return False


def _stored_but_erased(rows: bytes, text: bytes) -> bool:
    """Whether ``rows`` were stored in ``text`` and an erasure took some of them out since: the rows still there
    follow each other, as an erasure's rewrite leaves a member (shared.erasure.rewrite)."""
    left = b"".join(line + b"\n" for line in rows.split(b"\n") if line and line + b"\n" in text)
    return bool(left) and left in text


# Claims of keys never sent again would stay for ever: StartExport's timer removes the expired ones, at most
# this often in a process.
SWEEP_EVERY = dt.timedelta(hours=1)
_last_sweep: dt.datetime | None = None


def forget_expired(now: dt.datetime, *, limit: int = 5000) -> int:
    """Deletes up to ``limit`` claims older than KEY_LIFETIME (their keys are free again anyway); returns how
    many. Does nothing when this process swept less than SWEEP_EVERY ago. A claim replaced meanwhile by a new
    batch with its key (another ETag) is kept."""
    global _last_sweep
    if _last_sweep is not None and now - _last_sweep < SWEEP_EVERY:
        return 0
    table = storage.table(TABLE)
    removed = 0
    expired = table.query_entities(tablefilter.compare("claimedAt", "lt", format_time(now - KEY_LIFETIME)),
                                   select=["PartitionKey", "RowKey"])
    for row in expired:
        try:
            table.delete_entity(row["PartitionKey"], row["RowKey"], etag=row.metadata["etag"],
                                match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            continue
        removed += 1
        if removed >= limit:
            break
    _last_sweep = now  # only a pass that got through: storage that failed it is tried again at the next tick
    return removed


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
