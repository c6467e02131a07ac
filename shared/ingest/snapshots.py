"""Snapshot state (devices, app-info tags, push tokens, push-campaign feedback) kept as a log in the raw store.

Each accepted snapshot record is appended like a historical record, under the hour it was received:

    raw/{appId}/snapshot/{yyyy}/{MM}/{dd}/{HH}/{writer}-{n}.jsonl.gz

so a device report costs what an event costs: one share of a group-committed append, with no read, no merge and
no race between writers. An export folds the log into the current state (shared.export.snapshotfold). Each row
is the normalized record plus two stamps:

- ``receivedAt``: when Collect received it, the time a device report without its own ``timestamp`` is seen at,
  and a token's ``updated``;
- ``arrival``: its place in the order records reached the service, as text that sorts in that order: the
  receive time to the microsecond, a digest of the batch's snapshot rows, the record's index in the batch.
  Reports of one device in one batch keep the batch's order; a batch received later comes later.

The stamps are a function of the batch and of its receive time only, so a batch whose Idempotency-Key owner died
is written again by the copy that takes it over (with the first owner's receive time) as the very same rows,
which the takeover finds instead of appending twice (shared.ingest.idempotency).

The state an export derives (shared.export.snapshotfold), unchanged from the table store this replaced:
a device's ``firstSeen`` is its earliest report's time, and a report at or after the latest one known sets
``lastSeen`` and the info, location and nativePushEnabled it carries; a tag's latest value wins and ``null``
removes it; a device's latest token replaces the whole row; a push action's latest report wins.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from azure.core.exceptions import ResourceNotFoundError

from shared.ingest import rawstore
from shared.ingest.records import Row, encode_line, format_time
from shared.platform import storage

LOG_TYPE = "snapshot"  # the raw store's record type of the log
STATE_TYPE = "snapshot-state"  # where the folded state's generations are kept, beside the log
KINDS = ("device", "tag", "token", "push")


def log_rows(records: list[dict], received: dt.datetime) -> list[Row]:
    """The log rows of a batch's normalized snapshot records, in the batch's order."""
    if not records:
        return []
    lines = [encode_line(record) for record in records]
    batch = hashlib.blake2b(b"".join(lines), digest_size=5).hexdigest()
    received_at = format_time(received)
    stamp = received.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    # Each line ends with '}\n' and is an object with at least type and deviceId: the stamps go before its end.
    return [Row(LOG_TYPE, received_at,
                b'%s,"receivedAt":"%s","arrival":"%s-%s-%06d"}\n' % (line[:-2], received_at.encode(),
                                                                    stamp.encode(), batch.encode(), index))
            for index, line in enumerate(lines)]


@dataclass(frozen=True)
class Generation:
    """A folded state of an app's snapshot log (shared.export.snapshotstate writes them): for each kind and
    bucket of devices, a file of the kind's export rows, sorted; ``covers`` says how many bytes of each log blob
    it holds, so what came since is the rest of each blob and the blobs it does not name."""

    app_id: str
    name: str  # sorts in the order generations were started
    buckets: int
    covers: dict[str, int]
    # Devices not seen since this time (ISO, as the rows write it) were left out when it or a generation it goes on
    # from was folded (shared.platform.retention); None when no such fold made it.
    unseen_before: str | None = None

    @property
    def folder(self) -> str:
        return f"{self.app_id}/{STATE_TYPE}/{self.name}/"

    def file(self, kind: str, bucket: int) -> str:
        return f"{self.folder}{kind}-{bucket:03d}.jsonl.gz"

    @property
    def manifest(self) -> str:
        return f"{self.folder}manifest.json"


def new_generation(app_id: str, buckets: int, covers: dict[str, int], now: dt.datetime, *,
                   unseen_before: str | None = None) -> Generation:
    name = f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
    return Generation(app_id, name, buckets, dict(covers), unseen_before)


def publish(generation: Generation) -> None:
    """Makes a generation whose files are all written the current one: its manifest is written last."""
    document = {"buckets": generation.buckets, "covers": generation.covers, "unseenBefore": generation.unseen_before}
    manifest = storage.container(rawstore.RAW_CONTAINER).get_blob_client(generation.manifest)
    manifest.upload_blob(json.dumps(document), overwrite=True)


def current_generation(app_id: str) -> Generation | None:
    """The app's newest published generation (None before its first compaction)."""
    return next(published_generations(app_id), None)


def published_generations(app_id: str, *, before: dt.datetime | None = None) -> Iterator[Generation]:
    """The app's published generations, newest first (only those published before ``before``, given one)."""
    container = storage.container(rawstore.RAW_CONTAINER)
    manifests = [blob.name for blob in container.list_blobs(name_starts_with=f"{app_id}/{STATE_TYPE}/")
                 if blob.name.endswith("/manifest.json") and (before is None or blob.last_modified < before)]
    for name in sorted(manifests, reverse=True):
        try:
            document = json.loads(container.get_blob_client(name).download_blob().readall())
        except ResourceNotFoundError:  # removed since it was listed: an older one is still there
            continue
        yield Generation(app_id, name.split("/")[-2], document["buckets"], document["covers"],
                         document.get("unseenBefore"))
