"""The parts of an export job: one row per work item (one result file) once it ended, and the fan-in over them.

Table `exportparts`, partition = job id, row key = the item's index. A part that exported holds what the
commit needs (its staged block ids in order, records, bytes, MD5); a part that failed for good holds the
reason, which becomes the job's errorDetails. Writing a part is idempotent: a retried item writes the same row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.platform import storage, tablefilter

PARTS_TABLE = "exportparts"


class PartState(StrEnum):
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Part:
    job_id: str
    index: int
    file: str
    state: PartState
    records: int = 0
    bytes: int = 0
    md5: str = ""
    blocks: tuple[str, ...] = ()
    reason: str | None = None
    stats: str | None = None  # a DeltaLake file's statistics, as the table's log records them (JSON)

    @property
    def done(self) -> bool:
        return self.state is PartState.DONE

    def to_entity(self) -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": self.job_id, "RowKey": _key(self.index), "file": self.file,
                                  "state": self.state.value}
        if self.done:
            entity.update(records=self.records, bytes=self.bytes, md5=self.md5, blocks=json.dumps(list(self.blocks)))
            if self.stats is not None:
                entity["stats"] = self.stats
        else:
            entity["reason"] = self.reason
        return entity

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> Part:
        state = PartState(entity["state"])
        if state is PartState.FAILED:
            return cls(entity["PartitionKey"], int(entity["RowKey"]), entity["file"], state, reason=entity["reason"])
        return cls(entity["PartitionKey"], int(entity["RowKey"]), entity["file"], state, records=entity["records"],
                   bytes=entity["bytes"], md5=entity["md5"], blocks=tuple(json.loads(entity["blocks"])),
                   stats=entity.get("stats"))


def done(job_id: str, index: int, file: str, *, records: int, size: int, md5: str, blocks: list[str],
         stats: str | None = None) -> Part:
    return Part(job_id, index, file, PartState.DONE, records=records, bytes=size, md5=md5, blocks=tuple(blocks),
                stats=stats)


def failed(job_id: str, index: int, file: str, reason: str) -> Part:
    return Part(job_id, index, file, PartState.FAILED, reason=reason)


@dataclass(frozen=True)
class Summary:
    """Where a job's parts stand: ``total`` planned, the ones done and failed so far, each in index order."""

    total: int
    done: tuple[Part, ...]
    failed: tuple[Part, ...]

    @property
    def complete(self) -> bool:
        return len(self.done) >= self.total

    @property
    def first_failure(self) -> Part | None:
        return self.failed[0] if self.failed else None


def _key(index: int) -> str:
    return f"{index:06d}"


def record(part: Part) -> None:
    storage.table(PARTS_TABLE).upsert_entity(part.to_entity(), mode=UpdateMode.REPLACE)


def find_part(job_id: str, index: int) -> Part | None:
    try:
        return Part.from_entity(storage.table(PARTS_TABLE).get_entity(job_id, _key(index)))
    except ResourceNotFoundError:
        return None


def list_parts(job_id: str) -> list[Part]:
    """The job's recorded parts in index order."""
    rows = storage.table(PARTS_TABLE).query_entities(tablefilter.eq("PartitionKey", job_id))
    return sorted((Part.from_entity(row) for row in rows), key=lambda part: part.index)


def summarize(job_id: str, total: int) -> Summary:
    recorded = list_parts(job_id)
    return Summary(total=total, done=tuple(part for part in recorded if part.done),
                   failed=tuple(part for part in recorded if not part.done))


def all_recorded(job_id: str, total: int) -> bool:
    """The fan-in: whether every one of the job's ``total`` parts has ended (done or failed)."""
    return len(list_parts(job_id)) >= total
