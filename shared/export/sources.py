"""What an export reads: raw historical partitions (as bytes, as text or as rows) and sessions computed from
activities; and the text every converted export reads (RowText), of raw partitions or of the folded snapshot
log (shared.export.snapshotfold). Everything streams; nothing holds a whole partition in memory except the
session aggregation, which holds one entry per session of the day."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from isal import isal_zlib

from shared.erasure import pending, scrub
from shared.export.pipeline import prefetch
from shared.export.planning import Source
from shared.export.rows import parse_lines
from shared.ingest import rawstore
from shared.ingest.records import parse_time
from shared.platform import storage

# Rows computed one at a time (sessions) are encoded in batches of this many.
ROW_BATCH = 2000
# Rows are parsed from runs of this much decompressed text, to the next line end, which bounds a batch's objects.
ROW_TEXT_BYTES = 1024 * 1024


def raw_chunks(blobs: Iterable[Source], *, read_ahead: int = 2) -> Iterator[bytes]:
    """The bytes of raw blobs, in order, in the storage client's chunks (4 MiB), read ahead on a thread: up to
    ``read_ahead`` chunks wait, and as many are downloaded at once.

    Each blob is read only up to the size its plan saw: a blob still being appended to gives the same bytes
    on every try, so a retried or duplicated work item writes the same file. The rows of the app's pending
    erasures, as they are when the reading starts, are left out (shared.erasure.pending)."""
    container = storage.container(rawstore.RAW_CONTAINER)
    blobs = list(blobs)
    erasures = pending.read_filter(pending.app_of(source[0] for source in blobs))

    def read() -> Iterator[bytes]:
        for source in blobs:
            name, start, end = (source[0], 0, source[1]) if len(source) == 2 else source
            for first, stop, erased in erasures.segments(name, start, end):
                chunks = container.get_blob_client(name).download_blob(
                    offset=first, length=stop - first, max_concurrency=read_ahead).chunks()
                yield from chunks if erased is None else scrub.without_rows(chunks, erased)

    return prefetch(read(), depth=read_ahead)


# Raw text is decompressed from slices of at most FEED_BYTES of input into pieces of at most PIECE_BYTES. A
# call stopped by its output limit copies the input it has not read, and an output over glibc's mmap threshold
# (128 KiB, see pipeline.tune_allocator) is mapped afresh and faulted in page by page; small slices and pieces
# are reused from the heap. Cutting 2M events' text into runs took 0.75 s of CPU instead of 1.37 with 4 MiB
# slices and 1 MiB pieces, and counting their lines 0.44 s instead of 0.75.
FEED_BYTES = 32 * 1024
PIECE_BYTES = 64 * 1024


class Gunzip:
    """Incremental decompression of concatenated gzip members, in pieces of at most PIECE_BYTES."""

    def __init__(self) -> None:
        self._decompressor = isal_zlib.decompressobj(31)

    def feed(self, data: bytes) -> Iterator[bytes]:
        whole = memoryview(data)
        for start in range(0, len(whole), FEED_BYTES):
            rest: bytes | memoryview = whole[start:start + FEED_BYTES]
            while rest:
                out = self._decompressor.decompress(rest, PIECE_BYTES)
                if out:
                    yield out
                if self._decompressor.eof:
                    rest = self._decompressor.unused_data
                    self._decompressor = isal_zlib.decompressobj(31)
                else:
                    rest = self._decompressor.unconsumed_tail

    def flush(self) -> bytes:
        return self._decompressor.flush()


Text = bytes | memoryview


class _RunCutter:
    """Cuts a stream of text into runs of whole lines, each ending at the first line end from its run_bytes-th
    byte on, without copying it: the pieces it gives are slices of the pieces it is fed. A line is given once its
    line end has come, so the text after the last line end can be judged when the stream ends."""

    def __init__(self, run_bytes: int) -> None:
        self._run_bytes = run_bytes
        self._size = 0  # bytes given of the current run
        self._partial: list[Text] = []  # the pieces of a line whose end has not come

    def feed(self, piece: bytes) -> Iterator[tuple[Text, bool]]:
        """(text, whether a run ends with it) for what ``piece`` completes."""
        last_end = piece.rfind(b"\n") + 1
        if not last_end:
            if piece:
                self._partial.append(piece)
            return
        for part in self._partial:
            yield part, False
            self._size += len(part)
        self._partial = []
        view = memoryview(piece)
        start = 0
        while True:
            # The first line end at or after the run's run_bytes-th byte.
            end = piece.find(b"\n", start + max(0, self._run_bytes - self._size - 1), last_end) + 1
            if not end:
                break
            yield view[start:end], True
            self._size, start = 0, end
        if start < last_end:
            yield view[start:last_end], False
            self._size += last_end - start
        if last_end < len(piece):
            self._partial.append(view[last_end:])

    def finish(self) -> Iterator[tuple[Text, bool]]:
        """The end of the last run: a last line without its line end belongs to it, unless it is blank."""
        partial = b"".join(self._partial)
        if partial.strip():
            yield partial, True
        elif self._size:
            yield b"", True


def line_pieces(blobs: Iterable[Source], *, run_bytes: int | None = None) -> Iterator[tuple[Text, bool]]:
    """The decompressed text of raw blobs as pieces, each with whether a run of whole JSON Lines rows ends with
    it: a run ends at the first line end from its ``run_bytes``-th byte on (ROW_TEXT_BYTES unless given), and the
    last one may lack its line end."""
    cutter = _RunCutter(run_bytes or ROW_TEXT_BYTES)
    stream = Gunzip()
    # Parsing the rows, not downloading them, sets the pace here: one chunk ahead is enough.
    for chunk in raw_chunks(blobs, read_ahead=1):
        for piece in stream.feed(chunk):
            yield from cutter.feed(piece)
    yield from cutter.feed(stream.flush())
    yield from cutter.finish()


def line_text(blobs: Iterable[Source]) -> Iterator[bytes]:
    """Runs of whole JSON Lines rows of raw blobs (see line_pieces), each joined once."""
    run: list[Text] = []
    for text, ends in line_pieces(blobs):
        run.append(text)
        if ends:
            yield b"".join(run)
            run = []


def rows(blobs: Iterable[Source]) -> Iterator[list[dict]]:
    """Batches of rows of raw blobs."""
    for text in line_text(blobs):
        yield parse_lines(text)


def sessions(day_before: Sequence[Source], day: Sequence[Source],
             day_after: Sequence[Source]) -> Iterator[dict]:
    """The sessions whose first activity falls on a day (UTC), computed from the activity blobs of that day.

    A session may run past midnight, so the next day's activities extend it, and the day before names the
    sessions that started then (those belong to that day's export). Sessions longer than a day are cut at
    the end of the next day.
    """
    started_before: set[tuple[str, str]] = set()
    for batch in rows(day_before):
        started_before.update((row["deviceId"], row["sessionId"]) for row in batch)
    found: dict[tuple[str, str], dict] = {}

    def add(row: dict, create: bool) -> None:
        key = (row["deviceId"], row["sessionId"])
        if key in started_before:
            return
        session = found.get(key)
        if session is None:
            if not create:
                return
            found[key] = {"deviceId": row["deviceId"], "userId": row.get("userId"), "sessionId": row["sessionId"],
                          "start": row["start"], "end": row["end"], "activityCount": 1,
                          "firstActivity": row["name"], "lastActivity": row["name"]}
            return
        session["activityCount"] += 1
        if row["start"] < session["start"]:
            session["start"], session["firstActivity"] = row["start"], row["name"]
        if row["end"] >= session["end"]:
            session["end"], session["lastActivity"] = row["end"], row["name"]
        if session["userId"] is None and row.get("userId"):
            session["userId"] = row["userId"]

    for batch in rows(day):
        for row in batch:
            add(row, True)
    for batch in rows(day_after):
        for row in batch:
            add(row, False)
    for key in sorted(found, key=lambda k: (found[k]["start"], k)):
        session = found[key]
        session["duration"] = round((parse_time(session["end"]) - parse_time(session["start"])).total_seconds(), 3)
        yield session


def batched(rows: Iterable[dict]) -> Iterator[list[dict]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= ROW_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


class RowText:
    """JSON Lines rows in an export type's row shape, as a converter reads them: ``runs()`` gives runs of whole
    rows; ``pieces(run_bytes)`` gives pieces of text, each with whether a run of about ``run_bytes`` ends with
    it (so a converter that writes runs to files need not join them)."""

    def runs(self) -> Iterator[bytes]:
        raise NotImplementedError

    def pieces(self, run_bytes: int) -> Iterator[tuple[Text, bool]]:
        raise NotImplementedError


@dataclass(frozen=True)
class RawText(RowText):
    """The rows of raw historical blobs, stored in their export row shape."""

    blobs: Sequence[Source]

    def runs(self) -> Iterator[bytes]:
        return line_text(self.blobs)

    def pieces(self, run_bytes: int) -> Iterator[tuple[Text, bool]]:
        return line_pieces(self.blobs, run_bytes=run_bytes)


@dataclass(frozen=True)
class MadeText(RowText):
    """Rows made by the export as runs (the folded snapshot log): each run is a piece that ends a run."""

    make: Callable[[], Iterator[bytes]]

    def runs(self) -> Iterator[bytes]:
        return self.make()

    def pieces(self, run_bytes: int) -> Iterator[tuple[Text, bool]]:
        return ((run, True) for run in self.make())
