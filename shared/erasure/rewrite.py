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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobLeaseClient, BlobProperties, BlobType

from shared.erasure import store
from shared.erasure.matching import Matcher
from shared.erasure.scrub import in_place, members
from shared.erasure.store import BlobProgress
from shared.ingest.rawstore import ERASURE_REWRITES, MAX_BLOCK_BYTES, RAW_CONTAINER
from shared.platform import storage
from shared.platform.errors import TransientError

LEASE_SECONDS = 60
RENEW_AFTER_SECONDS = 20.0
COPY_WAIT_SECONDS = 120.0
REWRITES = ERASURE_REWRITES


class BlobBusy(TransientError):
    """Another erasure is rewriting the blob; this one tries again later."""


# A blob whose covered bytes are at most this large is rewritten in memory while it is searched, before any lease
# (a rewriting process holds at most twice this); a larger one is searched to its first row, then rewritten in a
# stream under the lease.
KEEP_SEARCHED_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class _Searched:
    """What the search of a blob's covered bytes found: the rows removed and the ranges of the members that held
    them, the members' new bytes (when kept), and the blob's rewrite count then: the covered bytes are still the
    searched ones while it is the same, since only a rewrite changes them."""

    removed: int
    hits: tuple[tuple[int, int], ...]
    members: tuple[bytes, ...] | None
    rewrites: str


class _Rewriting:
    """The members of a blob's covered bytes, each without the matcher's rows, as they are read; counting what
    went, and keeping the new members when ``keep``."""

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self.hits: list[tuple[int, int]] = []
        self.removed = 0

    def members(self, covered: Iterable[bytes], *, stop_at_first: bool = False) -> Iterator[bytes]:
        offset = 0
        for member, text in members(covered):
            replaced, count = in_place(member, text, self.matcher)
            if count:
                self.hits.append((offset, offset + len(member)))
                self.removed += count
                if stop_at_first:
                    return
            offset += len(member)
            yield replaced

    def searched(self, kept: tuple[bytes, ...] | None, rewrites: str) -> _Searched:
        return _Searched(self.removed, _merged(self.hits), kept, rewrites)


def _search(client: BlobClient, cut: int, matcher: Matcher) -> _Searched:
    if cut <= 0:
        return _Searched(0, (), None, "0")
    downloader = client.download_blob(offset=0, length=cut)
    rewriting = _Rewriting(matcher)
    if cut <= KEEP_SEARCHED_BYTES:
        kept: tuple[bytes, ...] | None = tuple(rewriting.members(downloader.chunks()))
    else:
        kept = None
        for _ in rewriting.members(downloader.chunks(), stop_at_first=True):
            pass
    return rewriting.searched(kept, downloader.properties.metadata.get(REWRITES, "0"))


def erase_in_blob(app_id: str, task_id: str, name: str, cut: int, matcher: Matcher) -> BlobProgress:
    """Removes the matcher's rows from the blob's first ``cut`` bytes; what was removed (by this or an earlier
    try). A blob deleted since the cut (retention) holds nothing."""
    progress = store.read_progress(app_id, task_id, name)
    if progress is not None and progress.done:
        return progress
    client = storage.container(RAW_CONTAINER).get_blob_client(name)
    try:
        searched = _search(client, cut, matcher)
    except ResourceNotFoundError:
        return _clean(app_id, task_id, name, progress)
    if not searched.removed:
        return _clean(app_id, task_id, name, progress)
    lease = _lease(client)
    try:
        return _rewrite(app_id, task_id, client, lease, cut, matcher, searched)
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
             matcher: Matcher, searched: _Searched) -> BlobProgress:
    renew = _Renewal(lease)
    properties = client.get_blob_properties()
    if properties.size < cut:  # a blob never shrinks: an answer that says so is not to be written back
        raise TransientError(f"{client.blob_name} is said to be {properties.size} bytes, less than the "
                             f"{cut} its erasure covers; tried again later")
    rewriting = _Rewriting(matcher)
    if searched.members is not None and properties.metadata.get(REWRITES, "0") == searched.rewrites:
        covered: Iterable[bytes] = searched.members
        rewriting.removed, rewriting.hits = searched.removed, list(searched.hits)
    else:  # too large to keep, or rewritten since the search (by another erasure): rewritten in a stream
        covered = rewriting.members(client.download_blob(offset=0, length=cut).chunks())

    def content() -> Iterator[bytes]:
        for member in covered:
            renew()
            yield member
        if properties.size > cut:
            yield from client.download_blob(offset=cut, length=properties.size - cut).chunks()

    temporary = storage.container(store.WORK_CONTAINER).get_blob_client(
        f"{app_id}/{task_id}/{hashlib.blake2b(client.blob_name.encode('utf-8'), digest_size=16).hexdigest()}")
    if properties.blob_type == BlobType.APPENDBLOB:
        _write_append_blob(temporary, content(), renew)
    else:  # a folded snapshot state file: a block blob
        temporary.upload_blob(b"".join(content()), overwrite=True)
    if not rewriting.removed:  # another erasure's rewrite removed them while this one waited for the lease
        temporary.delete_blob()
        return _clean(app_id, task_id, client.blob_name, store.read_progress(app_id, task_id, client.blob_name))
    progress = BlobProgress(client.blob_name, rewriting.removed, _merged(rewriting.hits), False)
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
