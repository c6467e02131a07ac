"""Which stored rows belong to the devices and users an erasure names.

A stored row (raw store, snapshot log, folded snapshot state) is one JSON object a line, written by
shared.ingest.records.encode_line (or msgspec, which writes ids the same way), with the device in ``deviceId`` and
the user, when the record has one, in ``userId``. Text is first searched for the ids as those fields would hold
them; only the lines where one is found are parsed, and a row goes only when its own ``deviceId`` or ``userId``
is one of the ids (an id that merely appears in a row's extras keeps the row).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import msgspec

from shared.ingest.records import encoded_text

# Up to this many searched literals, each is looked for with bytes.find (memchr speed); more are found with one
# regular expression over every deviceId and userId field, whose values are then looked up.
FIND_EACH_UP_TO = 24
_FIELDS = re.compile(rb'"(?:deviceId|userId)":("(?:[^"\\]|\\.)*")')
_decode = msgspec.json.Decoder().decode


class Matcher:
    """The rows of ``device_ids`` (by deviceId) and of ``user_ids`` (by userId)."""

    def __init__(self, device_ids: Iterable[str], user_ids: Iterable[str]) -> None:
        self.device_ids = frozenset(device_ids)
        self.user_ids = frozenset(user_ids)
        self._literals = sorted({b'"deviceId":' + encoded_text(i) for i in self.device_ids}
                                | {b'"userId":' + encoded_text(i) for i in self.user_ids})
        self._values = {encoded_text(i) for i in self.device_ids | self.user_ids}

    def __bool__(self) -> bool:
        return bool(self._literals)

    def union(self, other: Matcher) -> Matcher:
        return Matcher(self.device_ids | other.device_ids, self.user_ids | other.user_ids)

    def touches(self, text: bytes | memoryview) -> bool:
        """Whether ``text`` may hold a row of the ids (a fast search: a True is checked row by row)."""
        if len(self._literals) <= FIND_EACH_UP_TO:
            data = bytes(text) if isinstance(text, memoryview) else text
            return any(data.find(literal) >= 0 for literal in self._literals)
        return any(value in self._values for value in _FIELDS.findall(text))

    def owns(self, line: bytes) -> bool:
        """Whether the row ``line`` is one of a device or user of the ids."""
        try:
            row = _decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError):
            try:  # a row msgspec refuses (a lone surrogate escaped) is read as the json module reads it
                row = json.loads(line)
            except ValueError:
                return False
        if not isinstance(row, dict):
            return False
        return row.get("deviceId") in self.device_ids or row.get("userId") in self.user_ids

    def scrub(self, text: bytes) -> tuple[bytes, int]:
        """``text`` without the rows of the ids, and how many rows went."""
        if not self.touches(text):
            return text, 0
        kept: list[bytes] = []
        removed = 0
        for line in _lines(text):
            if self.touches(line) and self.owns(line):
                removed += 1
            else:
                kept.append(line)
        return (b"".join(kept), removed) if removed else (text, 0)


def _lines(text: bytes) -> list[bytes]:
    """The rows of JSON Lines text, each with its line end (the last one may lack it)."""
    lines = text.split(b"\n")
    last = lines.pop()
    return [line + b"\n" for line in lines] + ([last] if last else [])
