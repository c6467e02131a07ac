"""Where erasure tasks are kept.

- Table ``erasuretasks``: a row per task (PartitionKey the app, RowKey the task id), its document and state.
- Container ``erasures``: the task's work blob ``{app}/{task}/work.json.gz`` while it runs: the ids, and the
  *cut*, the size of every blob of the app's raw store when the request was answered: the bytes before it are
  what the erasure covers, the bytes after it came later and are kept. Deleted when the task ends.
- Table ``erasureprogress``: a row per blob the task has dealt with (PartitionKey app|task), so a task resumed
  after a crash or a time slice goes on where it was, and counts what it removed once.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.erasure.matching import Matcher
from shared.erasure.model import PENDING, ErasureTask
from shared.platform import storage, tablefilter
from shared.platform.errors import ErasureNotFound

TASKS_TABLE = "erasuretasks"
PROGRESS_TABLE = "erasureprogress"
WORK_CONTAINER = "erasures"


class TaskChanged(Exception):
    """The task's row changed since it was read (another worker): read it again."""


@dataclass(frozen=True)
class Work:
    """What a task erases: the ids, and the cut (blob name -> its size when the request was answered)."""

    device_ids: tuple[str, ...]
    user_ids: tuple[str, ...]
    cut: dict[str, int]

    @property
    def matcher(self) -> Matcher:
        return Matcher(self.device_ids, self.user_ids)

    def to_bytes(self) -> bytes:
        return gzip.compress(json.dumps({"deviceIds": self.device_ids, "userIds": self.user_ids,
                                         "cut": self.cut}, ensure_ascii=False).encode("utf-8"), 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> Work:
        doc = json.loads(gzip.decompress(data))
        return cls(tuple(doc["deviceIds"]), tuple(doc["userIds"]), doc["cut"])


def _work_blob(app_id: str, task_id: str):
    return storage.container(WORK_CONTAINER).get_blob_client(f"{app_id}/{task_id}/work.json.gz")


def save_work(app_id: str, task_id: str, work: Work) -> None:
    _work_blob(app_id, task_id).upload_blob(work.to_bytes(), overwrite=True)


# A task's work never changes while it exists: readers keep the last few they read (a cut names every blob).
_WORK_CACHE_SIZE = 8
_work_cache: OrderedDict[tuple[str, str], Work] = OrderedDict()
_work_lock = threading.Lock()


def read_work(app_id: str, task_id: str) -> Work | None:
    """The task's work, or None once it has ended (its work blob is gone)."""
    key = (app_id, task_id)
    with _work_lock:
        if key in _work_cache:
            _work_cache.move_to_end(key)
            return _work_cache[key]
    try:
        work = Work.from_bytes(_work_blob(app_id, task_id).download_blob().readall())
    except ResourceNotFoundError:
        return None
    with _work_lock:
        _work_cache[key] = work
        while len(_work_cache) > _WORK_CACHE_SIZE:
            _work_cache.popitem(last=False)
    return work


def delete_work(app_id: str, task_id: str) -> None:
    """Deletes the task's work blob and whatever the task left in its folder (unfinished rewrites)."""
    container = storage.container(WORK_CONTAINER)
    for blob in container.list_blobs(name_starts_with=f"{app_id}/{task_id}/"):
        try:
            container.delete_blob(blob.name)
        except ResourceNotFoundError:
            pass
    with _work_lock:
        _work_cache.pop((app_id, task_id), None)


def _entity(task: ErasureTask) -> dict:
    return {"PartitionKey": task.app_id, "RowKey": task.id, "state": str(task.state),
            "doc": json.dumps(task.to_document(), ensure_ascii=False, separators=(",", ":"))}


def create_task(task: ErasureTask) -> None:
    storage.table(TASKS_TABLE).create_entity(_entity(task))


def read_task(app_id: str, task_id: str) -> tuple[ErasureTask, str]:
    """The task and its row's etag; ErasureNotFound when the app has no such task."""
    try:
        entity = storage.table(TASKS_TABLE).get_entity(app_id, task_id)
    except ResourceNotFoundError:
        raise ErasureNotFound(f"the app has no erasure task {task_id}") from None
    return ErasureTask.from_document(app_id, json.loads(entity["doc"])), str(entity.metadata["etag"])


def save_task(task: ErasureTask, etag: str) -> str:
    """Replaces the task's row if it is still the one read with ``etag``; its new etag, or TaskChanged."""
    try:
        answer = storage.table(TASKS_TABLE).update_entity(_entity(task), etag=etag,
                                                           match_condition=MatchConditions.IfNotModified)
    except (ResourceModifiedError, ResourceNotFoundError):
        raise TaskChanged(task.id) from None
    return answer["etag"]


def list_tasks(app_id: str) -> list[ErasureTask]:
    """The app's erasure tasks, newest first."""
    rows = storage.table(TASKS_TABLE).query_entities(tablefilter.eq("PartitionKey", app_id), select=["doc"])
    tasks = [ErasureTask.from_document(app_id, json.loads(row["doc"])) for row in rows]
    return sorted(tasks, key=lambda task: (task.requested, task.id), reverse=True)


def pending_task_ids(app_id: str) -> list[str]:
    """The ids of the app's erasures that have not ended."""
    return sorted(pending_requests(app_id))


def pending_requests(app_id: str) -> dict[str, dt.datetime]:
    """The app's erasures that have not ended: task id -> when it was asked."""
    rows = storage.table(TASKS_TABLE).query_entities(
        tablefilter.all_of(tablefilter.eq("PartitionKey", app_id),
                           tablefilter.any_of(*(tablefilter.eq("state", str(state)) for state in PENDING))),
        select=["RowKey", "doc"])
    return {row["RowKey"]: ErasureTask.from_document(app_id, json.loads(row["doc"])).requested for row in rows}


@dataclass(frozen=True)
class BlobProgress:
    """What a task did to one blob: rows removed, and the byte ranges of the members that held them (old
    offsets, which a rewrite keeps) — ``done`` once the blob holds none of the task's rows."""

    name: str
    removed: int
    hits: tuple[tuple[int, int], ...]
    done: bool


def _progress_key(app_id: str, task_id: str, name: str) -> tuple[str, str]:
    return f"{app_id}|{task_id}", hashlib.blake2b(name.encode("utf-8"), digest_size=16).hexdigest()


# A table property holds at most 64 KiB: ranges past this many are merged into one that covers them.
_MAX_RANGES = 500


def _ranges_text(hits: tuple[tuple[int, int], ...]) -> str:
    if len(hits) > _MAX_RANGES:
        hits = hits[:_MAX_RANGES - 1] + ((hits[_MAX_RANGES - 1][0], hits[-1][1]),)
    return json.dumps([list(hit) for hit in hits], separators=(",", ":"))


def read_progress(app_id: str, task_id: str, name: str) -> BlobProgress | None:
    partition, row = _progress_key(app_id, task_id, name)
    try:
        entity = storage.table(PROGRESS_TABLE).get_entity(partition, row)
    except ResourceNotFoundError:
        return None
    return _progress_of(entity)


def _progress_of(entity) -> BlobProgress:
    return BlobProgress(entity["name"], entity["removed"], tuple(tuple(hit) for hit in json.loads(entity["hits"])),
                        entity["done"])


def record_progress(app_id: str, task_id: str, progress: BlobProgress) -> None:
    partition, row = _progress_key(app_id, task_id, progress.name)
    storage.table(PROGRESS_TABLE).upsert_entity({"PartitionKey": partition, "RowKey": row, "name": progress.name,
                                                 "removed": progress.removed, "hits": _ranges_text(progress.hits),
                                                 "done": progress.done})


def record_untouched(app_id: str, task_id: str, name: str) -> None:
    """Notes a blob found without the task's rows, unless a row for it is there (a rewrite counted it)."""
    partition, row = _progress_key(app_id, task_id, name)
    try:
        storage.table(PROGRESS_TABLE).create_entity({"PartitionKey": partition, "RowKey": row, "name": name,
                                                     "removed": 0, "hits": "[]", "done": True})
    except ResourceExistsError:
        pass


def all_progress(app_id: str, task_id: str) -> list[BlobProgress]:
    rows = storage.table(PROGRESS_TABLE).query_entities(tablefilter.eq("PartitionKey", f"{app_id}|{task_id}"))
    return [_progress_of(row) for row in rows]


def delete_progress(app_id: str, task_id: str) -> None:
    table = storage.table(PROGRESS_TABLE)
    for row in table.query_entities(tablefilter.eq("PartitionKey", f"{app_id}|{task_id}"),
                                    select=["PartitionKey", "RowKey"]):
        try:
            table.delete_entity(row["PartitionKey"], row["RowKey"])
        except ResourceNotFoundError:
            pass
