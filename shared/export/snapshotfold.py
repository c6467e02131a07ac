"""The snapshot log (shared.ingest.snapshots) folded into the current state, as the export rows of each snapshot
type (Device, Tag, Token, Push) in JSON Lines: the export formats convert them as they convert historical rows,
in the same code.

What is folded is the app's newest folded state, if it has one (a generation, written by
shared.export.snapshotstate), and the part of the log that came since (the tail). Both go by buckets of devices:
a generation keeps each kind's rows in one file per bucket, sorted by device, and the tail's rows of the kinds
an export needs are spread over the same buckets (in a temporary folder when the tail is large, so memory stays
flat: about FOLD_BYTES of text at a time). In each bucket, the state's lines of devices the tail does not touch
pass through as they are; only the touched devices are decoded and folded. An app without a generation folds
its whole log the same way, its state empty. Rows keep their stored JSON text for nested values (msgspec.Raw),
so info, location and tag values export as Collect stored them.

A tail's rows are taken as arriving after every row its state holds (the state covers what was in the log when
its compaction read it). The module holds the log's row types, the export rows, the four folds and the bucket
files together because each fold reads the others' types and the buckets' text: split, they would import each
other. What a retried or duplicated work item reads is fixed by its plan (the state's files
and the log's blobs and byte ranges), and its rows come out in one order (bucket, then device), so it writes
the same file.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import os
import re
import tempfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

import msgspec

from shared.export.planning import RawSource, Source
from shared.export.sources import line_text
from shared.ingest.records import format_time

Raw = msgspec.Raw
MISSING = Raw()  # a Raw field's default: the value is not there (left out of the row written)
NULL = b"null"

# Text of one bucket folded at once, and the log's text per byte stored (gzip JSON Lines of snapshot rows
# expand 6-9 times), which sets how many buckets a log is spread over.
FOLD_BYTES = 16 * 1024 * 1024
EXPANSION = 10
MAX_BUCKETS = 1024
RUN_BYTES = 4 * 1024 * 1024  # text of one run handed to the format's converter


class _Logged(msgspec.Struct, tag_field="type"):
    """What every log row has: its device, and its place in arrival order."""

    deviceId: str
    arrival: str


class _Received(_Logged):
    receivedAt: str


class _Device(_Received, tag="device"):
    timestamp: str | None = None
    info: Raw = MISSING  # a nested value kept as its stored text; MISSING when the report has none
    location: Raw = MISSING
    nativePushEnabled: bool | None = None


class _Tag(_Logged, tag="tag"):
    name: str
    value: Raw


class _Token(_Received, tag="token"):
    token: str
    userId: str | None = None
    platform: str | None = None


class _Push(_Logged, tag="push"):
    campaignId: int
    campaignType: str
    action: str
    timestamp: str


_LogRow = _Device | _Tag | _Token | _Push
_DECODE_LOG = msgspec.json.Decoder(list[_LogRow]).decode


# The export rows, which a generation's files hold too (each starts with the device id).
class DeviceRow(msgspec.Struct, omit_defaults=True):
    deviceId: str
    firstSeen: str | None = None
    lastSeen: str | None = None
    nativePushEnabled: bool | None = None
    info: Raw = MISSING
    location: Raw = MISSING
    appInfo: Raw = MISSING


class TagRow(msgspec.Struct):
    deviceId: str
    name: str
    value: Raw


class TokenRow(msgspec.Struct, omit_defaults=True):
    deviceId: str
    userId: str | None = None
    token: str | None = None
    platform: str | None = None
    updated: str | None = None


class PushRow(msgspec.Struct):
    deviceId: str
    campaignId: int
    campaignType: str
    action: str
    timestamp: str


_ROW_TYPES = {"device": DeviceRow, "tag": TagRow, "token": TokenRow, "push": PushRow}
_DECODERS = {kind: msgspec.json.Decoder(list[row_type]).decode  # type: ignore[valid-type]
             for kind, row_type in _ROW_TYPES.items()}
_ENCODE = msgspec.json.Encoder().encode
_BY_ARRIVAL = operator.attrgetter("arrival")
_STATE_DEVICE = re.compile(rb'^\{"deviceId":"([^"]*)"')


def _decoded_lines(kind: str, lines: list[bytes]) -> list:
    return _DECODERS[kind](b"[" + b",".join(lines) + b"]") if lines else []


# --- folding one bucket: the state's rows of the devices the tail touches, and the tail's rows ---------------

def _tag_values(seed: list[TagRow], tail: list[_Tag]) -> dict[str, dict[str, bytes]]:
    """device -> name -> value JSON: the state's tags, then the tail's in arrival order (null removes)."""
    values: dict[str, dict[str, bytes]] = defaultdict(dict)
    for row in seed:
        values[row.deviceId][row.name] = bytes(row.value)
    for tag in sorted(tail, key=_BY_ARRIVAL):
        value = bytes(tag.value)
        if value == NULL:
            values[tag.deviceId].pop(tag.name, None)
        else:
            values[tag.deviceId][tag.name] = value
    return values


def _fold_devices(seed: list[DeviceRow], seed_tags: list[TagRow], tail: list[_LogRow]) -> list[tuple[str, bytes]]:
    """A device's firstSeen is its earliest report's time; a report at or after the latest known sets lastSeen
    and what it carries of info, location and nativePushEnabled; an older report changes nothing else. Its
    appInfo is its tags."""
    reports: dict[str, list[_Device]] = defaultdict(list)
    for row in tail:
        if row.__class__ is _Device:
            reports[row.deviceId].append(row)
    known = {row.deviceId: row for row in seed}
    tags = _tag_values(seed_tags, [row for row in tail if row.__class__ is _Tag])
    folded = []
    for device in set(known) | set(reports):
        state = known.get(device)
        mine = sorted(reports.get(device, ()), key=_BY_ARRIVAL)
        if state is not None:
            first_seen, last_seen = state.firstSeen or "", state.lastSeen or ""
            info, location, push_enabled = state.info, state.location, state.nativePushEnabled
        else:
            first = mine.pop(0)
            first_seen = last_seen = first.timestamp or first.receivedAt
            info, location, push_enabled = first.info, first.location, first.nativePushEnabled
        for report in mine:
            seen = report.timestamp or report.receivedAt
            if seen < first_seen:
                first_seen = seen
            if seen >= last_seen:
                last_seen = seen
                if report.info:
                    info = report.info
                if report.location:
                    location = report.location
                if report.nativePushEnabled is not None:
                    push_enabled = report.nativePushEnabled
        pairs = [b'"%s":%s' % (name.encode(), value) for name, value in sorted(tags.get(device, {}).items())]
        folded.append((device, _ENCODE(DeviceRow(device, first_seen, last_seen, push_enabled, info, location,
                                                 Raw(b"{" + b",".join(pairs) + b"}")))))
    return folded


def _fold_tags(seed: list[TagRow], tail: list[_LogRow]) -> list[tuple[str, bytes]]:
    values = _tag_values(seed, [row for row in tail if row.__class__ is _Tag])
    return [(device, _ENCODE(TagRow(device, name, Raw(value))))
            for device, mine in values.items() for name, value in sorted(mine.items())]


def _fold_tokens(seed: list[TokenRow], tail: list[_LogRow]) -> list[tuple[str, bytes]]:
    """A device's latest token replaces its whole row."""
    rows: dict[str, TokenRow] = {row.deviceId: row for row in seed}
    for token in sorted((row for row in tail if row.__class__ is _Token), key=_BY_ARRIVAL):
        rows[token.deviceId] = TokenRow(token.deviceId, token.userId, token.token,
                                        token.platform, token.receivedAt)
    return [(device, _ENCODE(row)) for device, row in rows.items()]


_PUSH_KEY = operator.attrgetter("deviceId", "campaignType", "campaignId", "action")


def _fold_feedback(seed: list[PushRow], tail: list[_LogRow]) -> list[tuple[str, bytes]]:
    """One row per device, campaign and action: the latest reported."""
    rows: dict[tuple, PushRow] = {_PUSH_KEY(row): row for row in seed}
    for push in sorted((row for row in tail if row.__class__ is _Push), key=_BY_ARRIVAL):
        rows[_PUSH_KEY(push)] = PushRow(push.deviceId, push.campaignId, push.campaignType,
                                        push.action, push.timestamp)
    return [(key[0], _ENCODE(rows[key])) for key in sorted(rows)]


# The log kinds each state kind is folded from (a Device row carries its tags), which are also the state kinds
# a bucket's fold reads.
LOG_KINDS = {"device": ("device", "tag"), "tag": ("tag",), "token": ("token",), "push": ("push",)}
_LOG_CLASSES = {"device": _Device, "tag": _Tag, "token": _Token, "push": _Push}


def decode_tail(tail_text: bytes) -> list[_LogRow]:
    """A bucket's tail rows, from their log lines."""
    return _DECODE_LOG(b"[" + tail_text.replace(b"\n", b",") + b"]") if tail_text else []  # JSON escapes line ends


def fold_bucket(kind: str, state: dict[str, bytes], tail: list[_LogRow]) -> bytes:
    """One bucket of a kind's rows (JSON Lines, sorted by device): ``state`` is the bucket's text of each state
    kind (device folds use the tags' too), ``tail`` the bucket's tail rows (of any kind)."""
    own = state.get(kind, b"")
    classes = tuple(_LOG_CLASSES[name] for name in LOG_KINDS[kind])
    touched: set[bytes] = {row.deviceId.encode() for row in tail if row.__class__ in classes}
    if not touched:
        return own
    kept: list[tuple[bytes, int, bytes]] = []  # the untouched devices' lines, in their order
    seed_lines: list[bytes] = []
    for index, line in enumerate(own.split(b"\n")):
        if line:
            device = _state_device(line)
            if device in touched:
                seed_lines.append(line)
            else:
                kept.append((device, index, line))
    seed = _decoded_lines(kind, seed_lines)
    if kind == "device":
        tag_lines = [line for line in state.get("tag", b"").split(b"\n")
                     if line and (match := _STATE_DEVICE.match(line)) and match.group(1) in touched]
        folded = _fold_devices(seed, _decoded_lines("tag", tag_lines), tail)
    elif kind == "tag":
        folded = _fold_tags(seed, tail)
    elif kind == "token":
        folded = _fold_tokens(seed, tail)
    else:
        folded = _fold_feedback(seed, tail)
    # Untouched lines keep their place among their device's; a touched device's rows come in its fold's order.
    merged = kept + [(device.encode(), index, line) for index, (device, line) in enumerate(folded)]
    merged.sort(key=operator.itemgetter(0, 1))
    return b"".join(line + b"\n" for _, _, line in merged)



# --- devices not seen for a while (shared.platform.retention) ------------------------------------------------

# When a device was last seen, read off the start or the end of its state rows: a device row's lastSeen (after
# its optional firstSeen, before any nested value), a token row's updated and a push row's timestamp (their last
# fields). A JSON string escapes its quotes, so no value can imitate these.
_SEEN = {"device": re.compile(rb'^\{"deviceId":"([^"]*)"(?:,"firstSeen":"[^"]*")?,"lastSeen":"([^"]*)"'),
         "token": re.compile(rb'^\{"deviceId":"([^"]*)".*,"updated":"([^"]*)"\}$'),
         "push": re.compile(rb'^\{"deviceId":"([^"]*)".*,"timestamp":"([^"]*)"\}$')}


def unseen_devices(texts: dict[str, bytes], before: str) -> set[bytes]:
    """The devices of a bucket's state rows (kind -> text) last seen before ``before`` (a stored time): the newest
    of their device report (lastSeen), token (updated) and push feedback (timestamp). A device with tags only has
    no time and is kept."""
    newest: dict[bytes, bytes] = {}
    for kind, pattern in _SEEN.items():
        for line in texts.get(kind, b"").split(b"\n"):
            match = pattern.match(line)
            if match and match.group(2) > newest.get(match.group(1), b""):
                newest[match.group(1)] = match.group(2)
    cutoff = before.encode()
    return {device for device, seen in newest.items() if seen < cutoff}


def without_devices(texts: dict[str, bytes], devices: set[bytes]) -> dict[str, bytes]:
    """A bucket's state rows (kind -> text) without the rows of ``devices``: their devices, tags, tokens, feedback."""
    if not devices:
        return texts
    return {kind: _kept_lines(text, lambda device: device not in devices) for kind, text in texts.items()}


# --- spreading the tail over buckets --------------------------------------------------------------------------

def _kinds_pattern(kinds: tuple[str, ...]) -> re.Pattern[bytes]:
    # A log row starts with its type and its device id (shared.ingest.records.encode_line keeps the keys'
    # order), and a device id holds no quote or backslash, so both are read off the line's start.
    alternatives = b"|".join(re.escape(kind.encode()) for kind in kinds)
    return re.compile(rb'^(\{"type":"(?:' + alternatives + rb')","deviceId":"([^"]*)".*)$', re.MULTILINE)


def bucket_count(tail: Sequence[Source], state_bytes: int = 0) -> int:
    """Buckets enough that each holds about FOLD_BYTES of text."""
    stored = sum(source[-1] - (source[1] if len(source) == 3 else 0) for source in tail) + state_bytes
    return max(1, min(MAX_BUCKETS, -(-stored * EXPANSION // FOLD_BYTES)))


def spread(tail: Sequence[Source], kinds: tuple[str, ...], buckets: int) -> Iterator[tuple[int, bytes]]:
    """(bucket, its tail rows of ``kinds`` as log lines) for every bucket in order; b"" for a bucket without."""
    pattern = _kinds_pattern(kinds)
    if buckets == 1:
        yield 0, b"\n".join(line for text in line_text(tail) for line, _ in pattern.findall(text))
        return
    sizes = [0] * buckets
    with tempfile.TemporaryDirectory(prefix="ee-fold-") as folder:
        paths = [os.path.join(folder, f"bucket-{index:04d}.jsonl") for index in range(buckets)]
        files: dict[int, BinaryIO] = {}
        try:
            for text in line_text(tail):
                spread_lines: dict[int, list[bytes]] = defaultdict(list)
                for line, device in pattern.findall(text):
                    spread_lines[zlib.crc32(device) % buckets].append(line)
                for index, lines in spread_lines.items():
                    if index not in files:
                        files[index] = open(paths[index], "wb")
                    chunk = b"\n".join(lines) + b"\n"
                    files[index].write(chunk)
                    sizes[index] += len(chunk)
        finally:
            for handle in files.values():
                handle.close()
        for index in range(buckets):
            if not sizes[index]:
                yield index, b""
                continue
            with open(paths[index], "rb") as bucket:
                text = bucket.read()
            os.remove(paths[index])
            yield index, text.rstrip(b"\n")


# --- a generation's files --------------------------------------------------------------------------------------

def state_text(state: Sequence[RawSource], kind: str, bucket: int) -> bytes:
    """A generation's rows of one kind and bucket (its files are named ``{kind}-{bucket:03d}.jsonl.gz``)."""
    suffix = f"/{kind}-{bucket:03d}.jsonl.gz"
    files = [source for source in state if source[0].endswith(suffix)]
    return b"".join(line_text(files))


def _kept_lines(text: bytes, keep: Callable[[bytes], bool]) -> bytes:
    """The lines of ``text`` (state rows) whose device ``keep`` keeps."""
    return b"".join(line + b"\n" for line in text.split(b"\n") if line and keep(_state_device(line)))


def _in_bucket(device: bytes, *, bucket: int, buckets: int) -> bool:
    return zlib.crc32(device) % buckets == bucket


def _state_device(line: bytes) -> bytes:
    match = _STATE_DEVICE.match(line)
    return match.group(1) if match else b""


def folded(kinds: tuple[str, ...], state: Sequence[RawSource], buckets: int,
           tail: Sequence[Source], *, state_buckets: int = 0) -> Iterator[tuple[int, dict[str, bytes]]]:
    """(bucket, each of ``kinds``' rows of the bucket) for every bucket: the state's, with the tail folded in,
    the tail read once. Without a state (``buckets`` 0), the whole tail folds into as many buckets as its size
    needs. A state kept in fewer buckets (``state_buckets``, of which ``buckets`` is a multiple: a device of
    bucket b is in the state's bucket b % state_buckets) is spread over the new ones."""
    if not buckets:
        state, buckets = (), bucket_count(tail)
    needs = tuple(sorted({name for kind in kinds for name in LOG_KINDS[kind]}))
    for bucket, tail_text in spread(tail, needs, buckets):
        if state_buckets and state_buckets != buckets:
            mine = functools.partial(_in_bucket, bucket=bucket, buckets=buckets)
            texts = {name: _kept_lines(state_text(state, name, bucket % state_buckets), mine) for name in needs}
        else:
            texts = {name: state_text(state, name, bucket) for name in needs} if state else {}
        rows = decode_tail(tail_text)
        yield bucket, {kind: fold_bucket(kind, texts, rows) for kind in kinds}


def _runs(text: bytes) -> Iterator[bytes]:
    """A bucket's text cut into runs of about RUN_BYTES, at line ends."""
    start = 0
    while start < len(text):
        end = text.find(b"\n", start + RUN_BYTES)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def rows(kind: str, state: Sequence[RawSource], buckets: int, tail: Sequence[Source]) -> Iterator[bytes]:
    """Runs of the kind's export rows: the whole snapshot."""
    for _, texts in folded((kind,), state, buckets, tail):
        yield from _runs(texts[kind])


def _push_filter(campaign_type: str, campaign_ids: Sequence[int] | None,
                 window: tuple[dt.datetime, dt.datetime] | None) -> Callable[[PushRow], bool]:
    if campaign_ids is not None:
        wanted: set[int] = set(campaign_ids)
        return lambda push: push.campaignType == campaign_type and push.campaignId in wanted
    if window is not None:
        start, end = format_time(window[0]), format_time(window[1])
        return lambda push: push.campaignType == campaign_type and start <= push.timestamp <= end
    raise ValueError("a feedback export reads by campaign ids or by a time window")


def feedback(state: Sequence[RawSource], buckets: int, tail: Sequence[Source], *, campaign_type: str,
             campaign_ids: Sequence[int] | None = None,
             window: tuple[dt.datetime, dt.datetime] | None = None) -> Iterator[bytes]:
    """Push-campaign feedback of one campaign type, by campaign ids or by a time window (both ends included)."""
    keep = _push_filter(campaign_type, campaign_ids, window)
    for _, texts in folded(("push",), state, buckets, tail):
        lines = [line for line in texts["push"].split(b"\n") if line]
        kept = [line for line, row in zip(lines, _decoded_lines("push", lines)) if keep(row)]
        if kept:
            yield b"\n".join(kept) + b"\n"

