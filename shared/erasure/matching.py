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
from collections.abc import Iterable, Iterator

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

    def _found_at(self, text: bytes) -> Iterator[int]:
        """Where the search finds the ids in ``text`` (some may be in a row's extras)."""
        if len(self._literals) <= FIND_EACH_UP_TO:
            for literal in self._literals:
                position = text.find(literal)
                while position >= 0:
                    yield position
                    position = text.find(literal, position + len(literal))
        else:
            for match in _FIELDS.finditer(text):
                if match.group(1) in self._values:
                    yield match.start()

    def scrub(self, text: bytes) -> tuple[bytes, int]:
        """``text`` without the rows of the ids, and how many rows went: only the lines where the search finds an
        id are parsed, so a large text with a few rows to remove costs little more than the search."""
        removed: list[tuple[int, int]] = []
        for start in sorted({text.rfind(b"\n", 0, position) + 1 for position in self._found_at(text)}):
            end = text.find(b"\n", start)
            end = len(text) if end < 0 else end + 1
            if self.owns(text[start:end]):
                removed.append((start, end))
        if not removed:
            return text, 0
        kept: list[bytes] = []
        position = 0
        for start, end in removed:
            kept.append(text[position:start])
            position = end
        kept.append(text[position:])
        return b"".join(kept), len(removed)
