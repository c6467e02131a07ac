"""The body of ``POST .../devices/erasureTasks``, checked: every refusal names the field and what it takes.

    {"deviceIds": ["..."], "userIds": ["..."], "reason": "...", "removeTableFilesNow": false}

At least one id, at most MAX_IDS in all; each checked as Collect checks the field it matches (a device id is
kept in the form Collect stores it, NFC). ``reason`` is for the audit (at most MAX_REASON characters);
``removeTableFilesNow`` asks for the files of the app's Delta tables that held the rows to go at once, not when
the table's retention has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.ingest.records import RecordError, check_device_id, check_user_id
from shared.platform.errors import InvalidInput

MAX_IDS = 1000
MAX_REASON = 500
FIELDS = ("deviceIds", "userIds", "reason", "removeTableFilesNow")
CODE = "InvalidErasureRequest"


@dataclass(frozen=True)
class ErasureRequest:
    device_ids: tuple[str, ...]
    user_ids: tuple[str, ...]
    reason: str | None
    remove_table_files_now: bool


def _refuse(message: str) -> InvalidInput:
    return InvalidInput(message, code=CODE)


def _ids(body: dict, field: str, check) -> tuple[str, ...]:
    value = body.get(field)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _refuse(f"{field} must be a JSON array of strings")
    if len(value) > MAX_IDS:
        raise _refuse(f"{field} holds {len(value)} ids; send at most {MAX_IDS} ids a request")
    ids: dict[str, None] = {}
    for index, item in enumerate(value):
        try:
            ids[check(item)] = None
        except RecordError as error:
            raise _refuse(f"{field}[{index}] {error.reason}") from None
    return tuple(ids)


def parse(body: Any) -> ErasureRequest:
    if not isinstance(body, dict):
        raise _refuse(f"the body must be a JSON object with {' and/or '.join(FIELDS[:2])}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise _refuse(f"{unknown[0]} is not a field of an erasure request (fields: {', '.join(FIELDS)})")
    device_ids = _ids(body, "deviceIds", check_device_id)
    user_ids = _ids(body, "userIds", check_user_id)
    if not device_ids and not user_ids:
        raise _refuse("name what to erase: deviceIds and/or userIds, each a non-empty array of ids")
    if len(device_ids) + len(user_ids) > MAX_IDS:
        raise _refuse(f"deviceIds and userIds hold {len(device_ids) + len(user_ids)} ids together; send at most "
                      f"{MAX_IDS} a request")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON
                               or not reason.isprintable()):
        raise _refuse(f"reason must be printable text of 1 to {MAX_REASON} characters, or left out")
    remove_now = body.get("removeTableFilesNow", False)
    if not isinstance(remove_now, bool):
        raise _refuse("removeTableFilesNow must be true or false")
    return ErasureRequest(device_ids, user_ids, reason, remove_now)
