"""One blob of the raw store rewritten without an erasure's rows: in place, crash-safe, beside Collect.

1. The bytes the erasure covers (before its cut) are searched without any lock: a blob without the rows is
   noted as done and left alone (most blobs).
2. A blob with the rows is leased. While the lease is held, Collect's next append to it is refused
   (LeaseIdMissing) and Collect goes on in a new blob of its own (shared.ingest.rawstore), so the blob's length
   is fixed; a second rewriter of the same blob waits for the lease.
3. Its members that hold the rows are replaced by members of the same length (shared.erasure.scrub), the rest
   and everything after the cut copied as it is, into a temporary blob; then one Copy Blob, conditional on the
   blob being unchanged since it was read, puts the new content in its place. A reader sees the old content or
   the new, never a mix (a read of one range is one request, or the storage client's chunks pinned to one ETag),
   and every offset anyone holds (pipelines' marks, plans, Collect's position, cuts) stays true.

A crash before the copy leaves the blob as it was (the temporary blob is removed with the task); after it, the
next try finds nothing left to remove. The rows removed are counted in the task's progress row *before* the copy,
so a try that finds the blob already clean keeps the count.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobLeaseClient, BlobProperties, BlobType

from shared.erasure import store
from shared.erasure.matching import Matcher
from shared.erasure.scrub import in_place, members
from shared.erasure.store import BlobProgress
from shared.ingest.rawstore import MAX_BLOCK_BYTES, RAW_CONTAINER
from shared.platform import storage
from shared.platform.errors import TransientError

LEASE_SECONDS = 60
RENEW_AFTER_SECONDS = 20.0
COPY_WAIT_SECONDS = 120.0
REWRITES = "erasurerewrites"  # blob metadata: how many times erasures rewrote the blob


class BlobBusy(TransientError):
    """Another erasure is rewriting the blob; this one tries again later."""


def _covered(client: BlobClient, cut: int) -> Iterator[tuple[bytes, bytes]]:
    """The members of the blob's first ``cut`` bytes, with their text."""
    if cut <= 0:
        return iter(())
    return members(client.download_blob(offset=0, length=cut).chunks())


def holds_rows(client: BlobClient, cut: int, matcher: Matcher) -> bool:
    return any(matcher.scrub(text)[1] for _, text in _covered(client, cut))


def erase_in_blob(app_id: str, task_id: str, name: str, cut: int, matcher: Matcher) -> BlobProgress:
    """Removes the matcher's rows from the blob's first ``cut`` bytes; what was removed (by this or an earlier
    try). A blob deleted since the cut (retention) holds nothing."""
    progress = store.read_progress(app_id, task_id, name)
    if progress is not None and progress.done:
        return progress
    client = storage.container(RAW_CONTAINER).get_blob_client(name)
    try:
        found = holds_rows(client, cut, matcher)
    except ResourceNotFoundError:
        found = False
    if not found:
        return _clean(app_id, task_id, name, progress)
    lease = _lease(client)
    try:
        return _rewrite(app_id, task_id, client, lease, cut, matcher)
    except ResourceNotFoundError:
        return _clean(app_id, task_id, name, progress)
    finally:
        try:
            lease.release()
        except HttpResponseError:
            pass  # it runs out by itself


def _clean(app_id: str, task_id: str, name: str, progress: BlobProgress | None) -> BlobProgress:
    """Notes the blob as holding none of the rows now (an earlier try that rewrote it keeps its count)."""
    if progress is None:
        store.record_untouched(app_id, task_id, name)
        return BlobProgress(name, 0, (), True)
    done = BlobProgress(name, progress.removed, progress.hits, True)
    store.record_progress(app_id, task_id, done)
    return done


def _lease(client: BlobClient) -> BlobLeaseClient:
    try:
        return client.acquire_lease(lease_duration=LEASE_SECONDS)
    except HttpResponseError as error:
        if getattr(error, "error_code", None) in ("LeaseAlreadyPresent", "LeaseIdMismatchWithLeaseOperation"):
            raise BlobBusy(f"another erasure is rewriting {client.blob_name}") from None
        raise


class _Renewal:
    """Keeps a lease while a long rewrite runs."""

    def __init__(self, lease: BlobLeaseClient) -> None:
        self._lease = lease
        self._renewed = time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self._renewed >= RENEW_AFTER_SECONDS:
            self._lease.renew()
            self._renewed = time.monotonic()


def _rewrite(app_id: str, task_id: str, client: BlobClient, lease: BlobLeaseClient, cut: int,
             matcher: Matcher) -> BlobProgress:
    renew = _Renewal(lease)
    properties = client.get_blob_properties()
    hits: list[tuple[int, int]] = []
    removed = 0
    offset = 0

    def content() -> Iterator[bytes]:
        nonlocal removed, offset
        for member, text in _covered(client, cut):
            new, count = in_place(member, text, matcher)
            if count:
                hits.append((offset, offset + len(member)))
                removed += count
            offset += len(member)
            renew()
            yield new
        if properties.size > cut:
            yield from client.download_blob(offset=cut, length=properties.size - cut).chunks()

    temporary = storage.container(store.WORK_CONTAINER).get_blob_client(
        f"{app_id}/{task_id}/{hashlib.blake2b(client.blob_name.encode('utf-8'), digest_size=16).hexdigest()}")
    if properties.blob_type == BlobType.APPENDBLOB:
        _write_append_blob(temporary, content(), renew)
    else:  # a folded snapshot state file: a block blob
        temporary.upload_blob(b"".join(content()), overwrite=True)
    if not removed:  # another rewriter finished it while this one waited for the lease
        temporary.delete_blob()
        return _clean(app_id, task_id, client.blob_name, store.read_progress(app_id, task_id, client.blob_name))
    progress = BlobProgress(client.blob_name, removed, _merged(hits), False)
    store.record_progress(app_id, task_id, progress)
    _replace(client, temporary, properties, lease, renew)
    temporary.delete_blob()
    done = BlobProgress(progress.name, progress.removed, progress.hits, True)
    store.record_progress(app_id, task_id, done)
    return done


def _write_append_blob(blob: BlobClient, content: Iterator[bytes], renew: _Renewal) -> None:
    blob.create_append_blob()  # replaces what a crashed try left
    buffer = bytearray()
    for piece in content:
        buffer += piece
        while len(buffer) >= MAX_BLOCK_BYTES:
            blob.append_block(bytes(buffer[:MAX_BLOCK_BYTES]))
            del buffer[:MAX_BLOCK_BYTES]
            renew()
    if buffer:
        blob.append_block(bytes(buffer))


def _replace(client: BlobClient, temporary: BlobClient, properties: BlobProperties, lease: BlobLeaseClient,
             renew: _Renewal) -> None:
    """Puts the temporary blob's content in the blob's place, if the blob is still the one read."""
    metadata = {**properties.metadata, REWRITES: str(int(properties.metadata.get(REWRITES, "0")) + 1)}
    try:
        copy = client.start_copy_from_url(temporary.url, metadata=metadata, etag=properties.etag,
                                          match_condition=MatchConditions.IfNotModified, destination_lease=lease)
    except ResourceModifiedError:
        raise TransientError(f"{client.blob_name} changed while it was rewritten; the rewrite is tried again") from None
    status = copy.get("copy_status")
    waited_until = time.monotonic() + COPY_WAIT_SECONDS
    while status == "pending":  # a copy in the same account usually ends at once; Azure may take a moment
        if time.monotonic() > waited_until:
            raise TransientError(f"the copy that rewrites {client.blob_name} has not ended; tried again later")
        time.sleep(0.2)
        renew()
        status = client.get_blob_properties().copy.status
    if status != "success":
        raise TransientError(f"the copy that rewrites {client.blob_name} ended {status}; tried again later")


def _merged(hits: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Adjacent ranges as one."""
    merged: list[tuple[int, int]] = []
    for start, end in hits:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)
