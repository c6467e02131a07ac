"""Keyed hashes of an erasure's ids, kept once the ids are deleted: an auditor who is asked later whether a device
or user was erased computes the hash of its id (``python -m tools.admin erasure-hash``) and looks for it in the
app's erasure tasks, without the tasks holding the id. The key is derived from the service's secret
(EXPORT_SAS_ENCRYPTION_KEY), so the hashes cannot be computed from a guessed id by anyone without it."""

from __future__ import annotations

import hashlib
import hmac

from shared.platform.config import get_settings


def _key() -> bytes:
    return hmac.new(get_settings().sas_encryption_key.encode("utf-8"), b"erasure-audit", hashlib.sha256).digest()


def id_hash(kind: str, value: str) -> str:
    """The hash of one id: ``kind`` is deviceId or userId."""
    return hmac.new(_key(), f"{kind}:{value}".encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


def hashes(device_ids: tuple[str, ...], user_ids: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted({id_hash("deviceId", i) for i in device_ids} | {id_hash("userId", i) for i in user_ids}))
