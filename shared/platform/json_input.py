"""JSON from outside the service: read it without crashing, and find what no writer downstream could write.

Python's json reads things that are not Unicode text or not portable numbers: lone surrogates (``"\\ud800"``),
integers of thousands of digits (which then fail to convert), and nesting deep enough to exhaust the
interpreter's recursion. ``parse`` turns each into a refusal; ``check_writable`` names the first place in a
parsed value that a JSON, CSV, Table or Parquet writer would refuse, so a record is refused at the door
rather than stored to fail every later export.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

# Integer literals longer than this (far past 64 bits) stay text: Python refuses to convert past 4300 digits,
# and the checks name them as the record field they are in.
_LONGEST_INTEGER = 100


class JsonInputError(ValueError):
    """A body that cannot be read as JSON at all."""


class Unwritable(ValueError):
    """A value that no export writer can write; ``path`` names where it is (``extras.a[2]``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class HugeInteger(str):
    """An integer literal too long to be a number any reader holds; refused by ``check_writable``."""

    def __repr__(self) -> str:
        return f"<an integer of {len(self)} digits>"


def _integer(text: str):
    return int(text) if len(text) <= _LONGEST_INTEGER else HugeInteger(text)


def parse(data: bytes) -> Any:
    """The JSON document in ``data``; raises JsonInputError saying why it cannot be read."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonInputError("the body is not UTF-8 text") from None
    try:
        return json.loads(text, parse_int=_integer)
    except json.JSONDecodeError as error:
        raise JsonInputError(f"the body is not valid JSON: {error.msg} at line {error.lineno} column "
                             f"{error.colno}") from None
    except RecursionError:
        raise JsonInputError("the body nests objects and arrays too deeply to be read") from None


def is_text(value: str) -> bool:
    """False for a string holding a lone surrogate, which is not Unicode and cannot be encoded as UTF-8."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _children(value: Any, path: str) -> Iterator[tuple[Any, str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, f"{path}.{key}" if path else str(key), item
    else:
        for index, item in enumerate(value):
            yield None, f"{path}[{index}]", item


def _writable(value: Any, levels: int) -> bool:
    """check_writable's question without the paths it names: the quick test every valid record passes."""
    kind = type(value)
    if kind is str:
        return value.isascii() or is_text(value)
    if kind is dict:
        if levels <= 0:
            return False
        for key, item in value.items():
            if not (key.isascii() or is_text(key)):
                return False
            if type(item) is str:
                if not (item.isascii() or is_text(item)):
                    return False
            elif type(item) in (dict, list, HugeInteger) and not _writable(item, levels - 1):
                return False
        return True
    if kind is list:
        return levels > 0 and all(_writable(item, levels - 1) for item in value)
    return kind is not HugeInteger


def check_writable(value: Any, *, max_depth: int, path: str = "") -> None:
    """Raises Unwritable for the first lone surrogate (in a key or a string), container nested more than
    ``max_depth`` levels (``value`` itself is level 1), or integer too long to be a 64-bit number."""
    if _writable(value, max_depth):
        return
    pending = [(value, path, 1)]
    while pending:
        item, where, depth = pending.pop()
        if isinstance(item, HugeInteger):
            raise Unwritable(where, f"is an integer of {len(item)} digits; integers must be within the 64-bit range")
        if isinstance(item, str):
            if not is_text(item):
                raise Unwritable(where, "holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text")
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > max_depth:
            raise Unwritable(where, f"nests objects and arrays more than {max_depth} levels deep")
        children = []
        for key, child_path, child in _children(item, where):
            if key is not None and not is_text(key):
                raise Unwritable(where or "record", "has a key holding a lone surrogate (\\ud800-\\udfff), "
                                                    "which is not Unicode text")
            children.append((child, child_path, depth + 1))
        pending.extend(reversed(children))
