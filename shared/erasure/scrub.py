"""Rows taken out of gzip files of JSON Lines, one gzip member at a time.

Every raw blob is a series of gzip members (one per append, shared.ingest.rawstore), and a folded snapshot state
file is one member. Other parts of the service keep byte offsets into these blobs: pipelines' marks (how far a
pipeline read each blob), saved export plans (each blob as far as the plan saw it), Collect's own append position,
an erasure's cut. All of them fall on member boundaries. So a member that holds an erased row is replaced *in
place*: by a member of the rows it keeps, padded to the very length of the one it replaces, which keeps every
offset anyone holds true and every member boundary where it was.

The padding is standard gzip (RFC 1952): an ``FEXTRA`` field in the new member's header (subfield ``EP``, zeros)
and, when more is needed, members that hold no text, each with such a field. Every gzip reader skips them (zlib,
Python's gzip, ISA-L, pyarrow and DuckDB were tried; DuckDB refuses a header over 32 KiB, so each field holds at
most PAD_FIELD_BYTES). The erased rows' bytes are gone: the padding is zeros.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator

from isal import igzip, isal_zlib

from shared.erasure.matching import Matcher
from shared.ingest.rawstore import GZIP_LEVEL

PAD_FIELD_BYTES = 16_000
_EMPTY_DEFLATE = b"\x03\x00"  # a final fixed-Huffman block holding nothing
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no flags, no time, unknown OS
_FEXTRA = 0x04
# Input fed to the decompressor at a time: what it returns unread past a member's end is copied, so a small
# slice keeps splitting a blob of many members linear.
SLICE_BYTES = 256 * 1024


class BrokenMember(ValueError):
    """The bytes are not whole gzip members."""


class CannotFit(ValueError):
    """A member's kept rows do not compress into its length (never seen: each try below is another compressor)."""


class MemberSplitter:
    """Cuts a stream of bytes into its gzip members, each with its decompressed text."""

    def __init__(self) -> None:
        self._decompressor: object | None = None
        self._compressed: list[bytes] = []
        self._text: list[bytes] = []

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(member, text) for each member ``chunk`` completes."""
        view = memoryview(chunk)
        position = 0
        while position < len(view):
            if self._decompressor is None:
                self._decompressor = isal_zlib.decompressobj(31)
            decompressor = self._decompressor
            piece = view[position:position + SLICE_BYTES]
            try:
                self._text.append(decompressor.decompress(piece))  # type: ignore[attr-defined]
            except (isal_zlib.error, zlib.error) as error:  # type: ignore[misc]
                raise BrokenMember(f"not a gzip member: {error}") from None
            if decompressor.eof:  # type: ignore[attr-defined]
                used = len(piece) - len(decompressor.unused_data)  # type: ignore[attr-defined]
                self._compressed.append(bytes(piece[:used]))
                position += used
                yield b"".join(self._compressed), b"".join(self._text)
                self._decompressor, self._compressed, self._text = None, [], []
            else:
                self._compressed.append(bytes(piece))
                position += len(piece)

    def finish(self) -> None:
        if self._decompressor is not None or self._compressed:
            raise BrokenMember("the bytes end inside a gzip member")


def members(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """(member, text) of every gzip member of a stream of bytes, in order."""
    splitter = MemberSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    splitter.finish()


def without_rows(chunks: Iterable[bytes], matcher: Matcher) -> Iterator[bytes]:
    """The gzip stream without the matcher's rows, for a reader: members without them as they are, the others
    compressed again from the rows they keep (nothing, when none)."""
    for member, text in members(chunks):
        kept, removed = matcher.scrub(text)
        if not removed:
            yield member
        elif kept:
            yield igzip.compress(kept, GZIP_LEVEL, mtime=0)


def in_place(member: bytes, text: bytes, matcher: Matcher) -> tuple[bytes, int]:
    """The member without the matcher's rows, exactly as long as ``member`` (see the module's note), and how many
    rows went; the member itself when none."""
    kept, removed = matcher.scrub(text)
    if not removed:
        return member, 0
    return fit(kept, len(member)), removed


def _compressors() -> Iterator[Callable[[bytes], bytes]]:
    """Ways to compress, tried in turn until the kept rows fit: the raw store's own first."""
    for level in (GZIP_LEVEL, 3, 1):
        yield functools.partial(_isal_gzip, level=level)
    for level, strategy in ((9, zlib.Z_DEFAULT_STRATEGY), (6, zlib.Z_DEFAULT_STRATEGY), (9, zlib.Z_FILTERED)):
        yield functools.partial(_zlib_gzip, level=level, strategy=strategy)


def _isal_gzip(text: bytes, level: int) -> bytes:
    return igzip.compress(text, level, mtime=0)


def _zlib_gzip(text: bytes, level: int, strategy: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
    return _member(compressor.compress(text) + compressor.flush(), text, None)


def fit(text: bytes, length: int) -> bytes:
    """Gzip members holding ``text``, ``length`` bytes long in all."""
    for compress in _compressors():
        body = compress(text)
        spare = length - len(body)
        if spare == 0:
            return body
        if spare >= 2:
            return _padded(body, text, spare)
    raise CannotFit(f"{len(text)} bytes of kept rows do not compress into {length} bytes")


def _padded(member: bytes, text: bytes, spare: int) -> bytes:
    """``member`` (whose header has no optional field) grown by ``spare`` >= 2 bytes: an extra field in its header,
    then, if more is needed, empty members with extra fields of their own."""
    empty_members = 0 if spare <= 2 + PAD_FIELD_BYTES else -(-(spare - 2 - PAD_FIELD_BYTES) // (22 + PAD_FIELD_BYTES))
    # Each field costs 2 bytes (its length) plus what it holds, each empty member 20 more: what is left to hold.
    to_hold = spare - 2 - empty_members * 22
    fields = []
    for _ in range(empty_members + 1):
        fields.append(min(PAD_FIELD_BYTES, to_hold))
        to_hold -= fields[-1]
    deflate = member[10:-8]
    padded = [_member(deflate, text, fields[0])]
    padded += [_member(_EMPTY_DEFLATE, b"", size) for size in fields[1:]]
    return b"".join(padded)


def _member(deflate: bytes, text: bytes, extra: int | None) -> bytes:
    """A gzip member of a raw deflate stream of ``text``, with an extra field holding ``extra`` bytes, or none."""
    header = _GZIP_HEADER
    if extra is not None:
        field = b"EP" + struct.pack("<H", extra - 4) + bytes(extra - 4) if extra >= 4 else bytes(extra)
        header = header[:3] + bytes([_FEXTRA]) + header[4:] + struct.pack("<H", extra) + field
    return header + deflate + struct.pack("<II", zlib.crc32(text), len(text) & 0xFFFFFFFF)
