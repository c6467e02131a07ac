"""The record schema, one for ingestion and export, and its checks by the platform's limits.

`normalize(raw)` returns the record as it is stored and exported (camelCase, UTC times as
`YYYY-MM-DDTHH:MM:SS.mmmZ`, fields in a fixed order) or raises RecordError naming the field and the reason.
`quick_row(raw)` is the same checks' fast path for plainly valid historical records.

It is longer than most modules because the full checks and the quick path read one table of fields and rules
(`_HISTORICAL_FIELDS`): kept in one module, they cannot come to disagree on what a record may hold.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple, overload

import msgspec

from shared.platform.json_input import Unwritable, check_writable

HISTORICAL_TYPES = ("activity", "event", "job", "error", "crash")
SNAPSHOT_TYPES = ("device", "tag", "token", "push")
RECORD_TYPES = HISTORICAL_TYPES + SNAPSHOT_TYPES
CAMPAIGN_TYPES = ("Announcement", "DataPush", "NativePush", "Poll")
PUSH_ACTIONS = ("pushed", "replied", "actioned", "exited")
DEVICE_INFO_FIELDS = ("phoneModel", "phoneManufacturer", "firmwareVersion", "firmwareName", "androidAPILevel",
                      "carrierCountry", "locale", "carrierName", "networkType", "networkSubtype",
                      "applicationVersionName", "applicationVersionCode", "timeZoneOffset", "serviceVersion")
LOCATION_FIELDS = ("countrycode", "region", "locality")
MAX_NAME = 64
MAX_EXTRAS_BYTES = 1024
MAX_TAG_VALUE = 1024
MAX_ID = 128
# Objects and arrays nested in one record, the record itself included: deep enough for any real extras, and
# far inside what JSON and CSV writers accept (orjson refuses past 255).
MAX_NESTING = 16
# A device clock this far ahead is wrong: a record dated later could not be exported until that day came.
MAX_CLOCK_AHEAD = dt.timedelta(days=1)
# Patterns end with \Z, not $: $ also matches before a trailing newline, which Table keys refuse.
_KEY = re.compile(r"^[a-zA-Z0-9_]{1,64}\Z")
# Device ids become table row keys, which forbid '/', '\\', '#', '?' and control characters: an id is letters,
# marks and digits of any script (normalised to NFC) and these separators; '|' separates key parts.
_ASCII_DEVICE_ID = re.compile(r"^[A-Za-z0-9._:@=+-]{1,128}\Z")
_DEVICE_ID_PUNCTUATION = frozenset("._:@=+-")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")


class RecordError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_STORED_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\Z")


@functools.lru_cache(maxsize=4)
def _latest_accepted(now: dt.datetime) -> str:
    return format_time(now + MAX_CLOCK_AHEAD)


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stored_time(value: str, field: str, now: dt.datetime) -> str:
    """A time already in the stored form (_STORED_TIME), as SDKs send it: such texts order as the times they
    name."""
    if value > _latest_accepted(now):
        raise RecordError(field, f"is more than a day after the time it was received ({format_time(now)}); "
                                 f"the device's clock is wrong")
    try:
        dt.datetime.fromisoformat(value[:-1])
    except ValueError:
        raise RecordError(field, f"is not an ISO 8601 time: {value[:40]!r}") from None
    return value


def _time(raw: dict, field: str, now: dt.datetime) -> str:
    value = raw.get(field)
    if type(value) is str and _STORED_TIME.match(value):
        return _stored_time(value, field, now)
    if value is None:
        raise RecordError(field, "is required: an ISO 8601 time with a zone, such as 2026-01-31T12:00:00Z")
    if not isinstance(value, str):
        raise RecordError(field, "must be an ISO 8601 string")
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise RecordError(field, f"is not an ISO 8601 time: {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise RecordError(field, "needs a time zone (Z or +hh:mm)")
    try:
        text = format_time(moment)
    except OverflowError:
        raise RecordError(field, f"is outside the years 1 to 9999 once in UTC: {value[:40]!r}") from None
    if moment > now + MAX_CLOCK_AHEAD:
        raise RecordError(field, f"is more than a day after the time it was received ({format_time(now)}); "
                                 f"the device's clock is wrong")
    return text


@overload
def _text(raw: dict, field: str, *, limit: int, required: Literal[True]) -> str: ...


@overload
def _text(raw: dict, field: str, *, limit: int, required: bool) -> str | None: ...


def _text(raw: dict, field: str, *, limit: int, required: bool) -> str | None:
    value = raw.get(field)
    if value is None:
        if required:
            raise RecordError(field, "is required")
        return None
    if not isinstance(value, str):
        raise RecordError(field, "must be a string")
    if not value or len(value) > limit:
        raise RecordError(field, f"must be 1 to {limit} characters, not {len(value)}")
    return value


def _portable_numbers(value: Any, field: str) -> None:
    """Raises unless every number in ``value`` reads back the same in any JSON reader: finite, and integers
    within 64 bits (Python's json accepts NaN, Infinity and 1e400, which are not JSON)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RecordError(field, "numbers must be finite (NaN and Infinity are not JSON)")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -2**63 <= value < 2**63:
            raise RecordError(field, "integers must be within the 64-bit range")
    elif isinstance(value, dict):
        for item in value.values():
            _portable_numbers(item, field)
    elif isinstance(value, list):
        for item in value:
            _portable_numbers(item, field)


def _extras(raw: dict) -> dict | None:
    value = raw.get("extras")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordError("extras", "must be a JSON object")
    for key in value:
        if not _KEY.match(key):
            raise RecordError("extras", f"key {key[:70]!r} must be 1 to 64 of a-z, A-Z, 0-9 and _")
    _portable_numbers(value, "extras")
    size = len(_JSON.encode(value).encode("utf-8"))
    if size > MAX_EXTRAS_BYTES:
        raise RecordError("extras", f"is {size} bytes once encoded; at most {MAX_EXTRAS_BYTES}")
    return value


def _range(record: dict) -> None:
    if record["end"] < record["start"]:
        raise RecordError("end", "is before start")


def _object(raw: dict, field: str, allowed: tuple[str, ...]) -> dict | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordError(field, "must be an object")
    for key, item in value.items():
        if key not in allowed:
            raise RecordError(f"{field}.{key}", f"is not a {field} field (expected: {', '.join(allowed)})")
        if item is not None and not isinstance(item, (str, int, float)) or isinstance(item, bool):
            raise RecordError(f"{field}.{key}", "must be a string or a number")
        _portable_numbers(item, f"{field}.{key}")
        if isinstance(item, str) and len(item) > 256:
            raise RecordError(f"{field}.{key}", "must be at most 256 characters")
    return {key: value[key] for key in allowed if value.get(key) is not None}


def _tag_value(raw: dict):
    if "value" not in raw:
        raise RecordError("value", "is required (a string, integer, yyyy-MM-dd date, boolean, or null to delete)")
    value = raw["value"]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        _portable_numbers(value, "value")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TAG_VALUE:
            raise RecordError("value", f"is {len(value)} characters; at most {MAX_TAG_VALUE}")
        if _DATE.match(value):
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                raise RecordError("value", f"looks like a date but is not a real day: {value!r}") from None
        return value
    raise RecordError("value", "must be a string, an integer, a yyyy-MM-dd date, a boolean or null")


def _choice(raw: dict, field: str, choices: tuple[str, ...]) -> str:
    value = raw.get(field)
    if value not in choices:
        raise RecordError(field, f"must be one of {', '.join(choices)}")
    return value


def _bool(raw: dict, field: str) -> bool | None:
    value = raw.get(field)
    if value is not None and not isinstance(value, bool):
        raise RecordError(field, "must be true or false")
    return value


def _device(raw, now):
    return {"timestamp": _time(raw, "timestamp", now) if raw.get("timestamp") is not None else None,
            "info": _object(raw, "info", DEVICE_INFO_FIELDS), "location": _object(raw, "location", LOCATION_FIELDS),
            "nativePushEnabled": _bool(raw, "nativePushEnabled")}


def _tag(raw, now):
    name = raw.get("name")
    if not isinstance(name, str) or not _KEY.match(name):
        raise RecordError("name", "must be 1 to 64 of a-z, A-Z, 0-9 and _")
    return {"name": name, "value": _tag_value(raw)}


def _token(raw, now):
    return {"token": _text(raw, "token", limit=4096, required=True),
            "platform": _text(raw, "platform", limit=MAX_NAME, required=False)}


def _push(raw, now):
    campaign = raw.get("campaignId")
    if isinstance(campaign, bool) or not isinstance(campaign, int) or not 0 < campaign < 10**12:
        raise RecordError("campaignId", "must be a positive integer")
    return {"campaignId": campaign, "campaignType": _choice(raw, "campaignType", CAMPAIGN_TYPES),
            "action": _choice(raw, "action", PUSH_ACTIONS), "timestamp": _time(raw, "timestamp", now)}


class _Text:
    def __init__(self, limit: int, *, required: bool) -> None:
        self.limit, self.required = limit, required

    def check(self, raw: dict, field: str, now: dt.datetime) -> str | None:
        return _text(raw, field, limit=self.limit, required=self.required)

    def quick(self, value: Any, now: dt.datetime) -> Any:
        if value is None:
            return _DOUBT if self.required else None
        return value if type(value) is str and 0 < len(value) <= self.limit else _DOUBT


class _Time:
    def check(self, raw: dict, field: str, now: dt.datetime) -> str:
        return _time(raw, field, now)

    def quick(self, value: Any, now: dt.datetime) -> Any:
        if type(value) is str and _STORED_TIME.match(value):
            try:
                return _stored_time(value, "", now)
            except RecordError:
                return _DOUBT
        return _DOUBT


class _Extras:
    def check(self, raw: dict, field: str, now: dt.datetime) -> dict | None:
        return _extras(raw)

    def quick(self, value: Any, now: dt.datetime) -> Any:
        """Extras whose numbers every encoder writes alike, nested within the record's limit; the size is
        checked on the encoded row by quick_row, and a lone surrogate by its encoding."""
        if value is None:
            return None
        if type(value) is not dict or not all(map(_EXTRAS_KEY, value)):
            return _DOUBT
        # The record is level 1 and its extras level 2: objects and arrays inside may go MAX_NESTING - 2 deeper.
        return value if _plain_values(value.values(), MAX_NESTING - 2) else _DOUBT


def _plain_values(values: Iterable[Any], levels: int) -> bool:
    """Whether every value is a string, boolean, null, 64-bit integer, float in _PLAIN_FLOATS, or an object or
    array of such values nested at most ``levels`` deep."""
    for item in values:
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -2**63 <= item < 2**63:
                continue
        elif kind is float:
            if item == 0.0 or _PLAIN_FLOATS[0] <= abs(item) < _PLAIN_FLOATS[1]:  # NaN and inf fail both
                continue
        elif kind is dict and levels > 0:
            if _plain_values(item.values(), levels - 1):
                continue
        elif kind is list and levels > 0:
            if _plain_values(item, levels - 1):
                continue
        return False
    return True


_Rule = _Text | _Time | _Extras
_DOUBT = object()  # what a quick check returns when the full check must decide
_TIME, _EXTRAS = _Time(), _Extras()
_EXTRAS_KEY = _KEY.match
# Within these bounds, msgspec writes a float as Python's repr does (1e-05 is 0.00001 for msgspec, 1e16 is 1e16
# where repr writes 1e+16): quick_row's rows are the bytes encode_line writes.
_PLAIN_FLOATS = (1e-4, 1e16)

# The historical types' own fields, in the order they are checked and stored (after type, deviceId and
# userId), with the field each is filed under.
_HISTORICAL_FIELDS: dict[str, tuple[tuple[str, _Rule], ...]] = {
    "activity": (("sessionId", _Text(MAX_ID, required=True)), ("name", _Text(MAX_NAME, required=True)),
                 ("start", _TIME), ("end", _TIME), ("extras", _EXTRAS)),
    "event": (("sessionId", _Text(MAX_ID, required=False)), ("jobId", _Text(MAX_ID, required=False)),
              ("name", _Text(MAX_NAME, required=True)), ("timestamp", _TIME), ("extras", _EXTRAS)),
    "job": (("name", _Text(MAX_NAME, required=True)), ("start", _TIME), ("end", _TIME), ("extras", _EXTRAS)),
    "crash": (("timestamp", _TIME), ("crashType", _Text(MAX_NAME, required=True)),
              ("message", _Text(4096, required=False)), ("stack", _Text(65536, required=False))),
}
_HISTORICAL_FIELDS["error"] = _HISTORICAL_FIELDS["event"]
_USER_ID = ("userId", _Text(MAX_ID, required=False))


def _historical(fields: tuple[tuple[str, _Rule], ...]) -> Callable[[dict, dt.datetime], dict]:
    def check(raw: dict, now: dt.datetime) -> dict:
        record = {field: rule.check(raw, field, now) for field, rule in fields}
        if "end" in record:
            _range(record)
        return record
    return check


_BY_TYPE: dict[str, tuple[Callable[[dict, dt.datetime], dict], tuple[str, ...]]] = {
    **{kind: (_historical(fields), ("userId",) + tuple(field for field, _ in fields))
       for kind, fields in _HISTORICAL_FIELDS.items()},
    "device": (_device, ("timestamp", "info", "location", "nativePushEnabled")),
    "tag": (_tag, ("name", "value")),
    "token": (_token, ("userId", "token", "platform")),
    "push": (_push, ("campaignId", "campaignType", "action", "timestamp")),
}


def _device_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise RecordError("deviceId", "is required: 1 to 128 letters, digits (any script) and . _ : @ = + -")
    if _ASCII_DEVICE_ID.match(value):
        return value
    device = unicodedata.normalize("NFC", value)
    if len(device) > MAX_ID:
        raise RecordError("deviceId", f"is {len(device)} characters; at most {MAX_ID}")
    for character in device:
        if character not in _DEVICE_ID_PUNCTUATION and unicodedata.category(character)[0] not in "LMN":
            raise RecordError("deviceId", f"holds {ascii(character)}: only letters, digits (any script) and "
                                          f". _ : @ = + - are allowed")
    return device


def check_device_id(value: Any) -> str:
    """A device id as Collect stores it (NFC); RecordError("deviceId", why) when Collect would refuse it."""
    return _device_id(value)


def check_user_id(value: Any) -> str:
    """A user id as Collect stores it; RecordError("userId", why) when Collect would refuse it."""
    try:
        check_writable(value, max_depth=1)
    except Unwritable as problem:
        raise RecordError("userId", problem.reason) from None
    text = _text({"userId": value}, "userId", limit=MAX_ID, required=True)
    return text


def normalize(raw: Any, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The stored form of one incoming record, received at ``now``; raises RecordError(field, reason)."""
    if not isinstance(raw, dict):
        raise RecordError("record", "must be a JSON object")
    try:
        # First, so that no later message quotes a string that is not Unicode text.
        check_writable(raw, max_depth=MAX_NESTING)
    except Unwritable as problem:
        raise RecordError(problem.path or "record", problem.reason) from None
    kind = raw.get("type")
    if type(kind) is not str or kind not in _BY_TYPE:
        raise RecordError("type", f"must be one of {', '.join(RECORD_TYPES)}")
    device = _device_id(raw.get("deviceId"))
    check, allowed = _BY_TYPE[kind]
    unknown = sorted(set(raw) - {"type", "deviceId"} - set(allowed))
    if unknown:
        raise RecordError(unknown[0], f"is not a field of a {kind} record (fields: {', '.join(allowed)})")
    record: dict[str, Any] = {"type": kind, "deviceId": device}
    if "userId" in allowed:
        record["userId"] = _text(raw, "userId", limit=MAX_ID, required=False)
    record.update(check(raw, now or dt.datetime.now(dt.UTC)))
    return {key: value for key, value in record.items() if value is not None or key == "value"}


def partition_time(record: dict[str, Any]) -> str:
    """The time a historical record is filed under: its start, or its timestamp."""
    return record.get("start") or record["timestamp"]


def encode_line(record: dict[str, Any]) -> bytes:
    """One JSON Lines row, as stored in the raw store and written to JsonBlob exports."""
    return _JSON.encode(record).encode("utf-8") + b"\n"


def encoded_text(value: str) -> bytes:
    """A text value as a stored row holds it: a JSON string."""
    return _JSON.encode(value).encode("utf-8")


# json.dumps with these options builds an encoder on every call; one encoder serves every record.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class Row(NamedTuple):
    """A historical record as the raw store files it: its type, the time it is filed under, its stored row."""

    kind: str
    moment: str
    line: bytes


def stored_row(record: dict[str, Any]) -> Row:
    """The row of a normalized historical record."""
    return Row(record["type"], partition_time(record), encode_line(record))


_QUICK_FIELDS = {kind: (frozenset(field for field, _ in fields) | {"type", "deviceId", "userId"}, (_USER_ID,) + fields)
                 for kind, fields in _HISTORICAL_FIELDS.items()}
_ENCODE = msgspec.json.Encoder().encode


def quick_row(raw: Any, now: dt.datetime) -> Row | None:
    """The stored row of a historical record that plainly passes every check, or None when normalize must
    decide: a time in another form than the stored one, a float msgspec writes otherwise than encode_line, a
    device id outside ASCII, extras nested too deep, anything refused. Most records SDKs send take this way,
    at a third of the cost; what it returns is what stored_row(normalize(raw)) returns (tests/test_quick_rows.py)."""
    if type(raw) is not dict:
        return None
    kind = raw.get("type")
    if type(kind) is not str or kind not in _QUICK_FIELDS:
        return None
    names, fields = _QUICK_FIELDS[kind]
    device = raw.get("deviceId")
    if not names.issuperset(raw) or type(device) is not str or not _ASCII_DEVICE_ID.match(device):
        return None
    record = {"type": kind, "deviceId": device}
    for field, rule in fields:
        value = rule.quick(raw.get(field), now)
        if value is _DOUBT:
            return None
        if value is not None:
            record[field] = value
    if "end" in record and record["end"] < record["start"]:
        return None
    try:
        line = _ENCODE(record)
    except UnicodeEncodeError:  # a lone surrogate, which normalize names
        return None
    # The extras' encoding is part of the row, so a short row has small enough extras.
    if len(line) > MAX_EXTRAS_BYTES and len(_ENCODE(record.get("extras"))) > MAX_EXTRAS_BYTES:
        return None
    return Row(kind, partition_time(record), line + b"\n")
