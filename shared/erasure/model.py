"""An erasure task: what was asked (how many ids, never which once it ends), its state, and what it erased where."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.platform.times import iso, parse_iso


class ErasureState(StrEnum):
    QUEUED = "Queued"
    STARTED = "Started"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


# An erasure in these states still has its ids, and every export that starts reading leaves their rows out.
PENDING = (ErasureState.QUEUED, ErasureState.STARTED)

# The counts of what an erasure removed, by store: rows of historical records in the raw store, rows of the
# snapshot log and of the folded snapshot state (device, tags, tokens, push feedback), the raw blobs rewritten,
# and rows deleted from the app's Delta tables.
COUNTS = ("rawRecords", "snapshotRows", "rawBlobsRewritten", "lakeRows")


@dataclass(frozen=True)
class ErasureTask:
    app_id: str
    id: str
    requested: dt.datetime
    device_ids: int  # how many were asked (the ids themselves are in the task's work blob until it ends)
    user_ids: int
    reason: str | None = None
    remove_table_files_now: bool = False
    state: ErasureState = ErasureState.QUEUED
    started: dt.datetime | None = None
    completed: dt.datetime | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    lake_tables: tuple[dict, ...] = ()  # per Delta table: where, rows deleted, version, when its old files go
    delivered_by: dict[str, list] = field(default_factory=dict)  # exportTasks, pipelineRuns: files we cannot rewrite
    error_details: str | None = None
    id_hashes: tuple[str, ...] = ()  # keyed hashes of the ids, kept once the ids are gone (shared.erasure.audit)
    event_sent: bool = False  # its erasure.completed event went out

    @property
    def ended(self) -> bool:
        return self.state not in PENDING

    def but(self, **changes: Any) -> ErasureTask:
        return dataclasses.replace(self, **changes)

    def to_document(self) -> dict:
        return {"id": self.id, "requested": iso(self.requested), "deviceIds": self.device_ids,
                "userIds": self.user_ids, "reason": self.reason, "removeTableFilesNow": self.remove_table_files_now,
                "state": str(self.state), "started": iso(self.started), "completed": iso(self.completed),
                "counts": self.counts, "lakeTables": list(self.lake_tables), "deliveredBy": self.delivered_by,
                "errorDetails": self.error_details, "idHashes": list(self.id_hashes), "eventSent": self.event_sent}

    @classmethod
    def from_document(cls, app_id: str, doc: dict) -> ErasureTask:
        requested = parse_iso(doc["requested"])
        if requested is None:
            raise ValueError(f"erasure task {doc['id']} has no time it was asked")
        return cls(app_id=app_id, id=doc["id"], requested=requested, device_ids=doc["deviceIds"],
                   user_ids=doc["userIds"], reason=doc.get("reason"),
                   remove_table_files_now=bool(doc.get("removeTableFilesNow")), state=ErasureState(doc["state"]),
                   started=parse_iso(doc.get("started")), completed=parse_iso(doc.get("completed")),
                   counts={**dict.fromkeys(COUNTS, 0), **doc.get("counts", {})},
                   lake_tables=tuple(doc.get("lakeTables", ())), delivered_by=doc.get("deliveredBy", {}),
                   error_details=doc.get("errorDetails"), id_hashes=tuple(doc.get("idHashes", ())),
                   event_sent=bool(doc.get("eventSent")))

    def to_result(self) -> dict:
        """The erasureTask resource of the API: never an id of a device or user."""
        result: dict[str, Any] = {
            "id": self.id,
            "state": str(self.state),
            "dateCreated": iso(self.requested),
            "dateStarted": iso(self.started),
            "dateCompleted": iso(self.completed),
            "reason": self.reason,
            "deviceIdCount": self.device_ids,
            "userIdCount": self.user_ids,
            "removeTableFilesNow": self.remove_table_files_now,
            "erased": dict(self.counts),
            "lakeTables": list(self.lake_tables),
            "deliveredBy": {"exportTasks": list(self.delivered_by.get("exportTasks", ())),
                            "pipelineRuns": list(self.delivered_by.get("pipelineRuns", ()))},
            "errorDetails": self.error_details,
        }
        if self.id_hashes:
            result["idHashes"] = list(self.id_hashes)
        return {key: value for key, value in result.items() if value is not None}  # left out until known
