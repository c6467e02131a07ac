"""Which export tasks and pipeline runs delivered rows of an erasure's ids, in files the service cannot rewrite.

A JsonBlob, CsvBlob or ParquetBlob file in a customer's container is the customer's. Every task (a pipeline's
runs are tasks too) saved its plan before reading: the raw blobs it read, each up to the size it saw. A rewrite
notes the byte ranges of the members that held the ids (their offsets do not move), so a task delivered such a
row exactly when its plan read one of those ranges. Tasks created after the erasure was asked read without the
rows (shared.erasure.pending) and are not listed; DeltaLake tables are erased (shared.export.deltaerase).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping

from azure.core.exceptions import ResourceNotFoundError

from shared.export import planning
from shared.export.registry import EXPORT_FORMATS
from shared.platform import storage
from shared.platform.times import iso
from shared.tasks import jobs

Ranges = tuple[tuple[int, int], ...]


def _reads_a_hit(sources: Iterable, hits: Mapping[str, Ranges]) -> bool:
    for source in sources:
        name = source[0]
        if name not in hits:
            continue
        start, end = (0, source[1]) if len(source) == 2 else (source[1], source[2])
        if any(first < end and start < last for first, last in hits[name]):
            return True
    return False


def _plans(app_id: str) -> Iterable[tuple[str, list[planning.WorkItem]]]:
    container = storage.container(planning.PLANS_CONTAINER)
    prefix = f"{app_id}/"
    for blob in container.list_blobs(name_starts_with=prefix):
        try:
            document = json.loads(container.get_blob_client(blob.name).download_blob().readall())
        except (ResourceNotFoundError, ValueError):
            continue
        yield blob.name[len(prefix):].removesuffix(".json"), [planning.WorkItem.from_json(d) for d in document["items"]]


def delivered_by(app_id: str, hits: Mapping[str, Ranges], asked: dt.datetime) -> dict[str, list]:
    """{"exportTasks": [...], "pipelineRuns": [...]}: the tasks created before ``asked`` that delivered rows of the
    ids into files (not tables), newest first."""
    found: list[jobs.ExportJob] = []
    if hits:
        for job_id, items in _plans(app_id):
            if not any(_reads_a_hit([*item.sources, *item.before, *item.after, *item.state], hits) for item in items):
                continue
            job = jobs.find_job(app_id, job_id)
            if job is None or job.date_created >= asked or EXPORT_FORMATS[job.export_format].table:
                continue
            found.append(job)
    found.sort(key=lambda job: job.date_created, reverse=True)
    tasks, runs = [], []
    for job in found:
        entry = {"id": job.id, "exportType": job.export_type, "exportFormat": job.export_format,
                 "containerUrl": job.container_url, "state": str(job.state), "dateCompleted": iso(job.date_completed)}
        if job.run is None:
            tasks.append(entry)
        else:
            runs.append({"pipeline": job.run.pipeline, "run": job.run.run, "periods": list(job.run.periods), **entry})
    return {"exportTasks": tasks, "pipelineRuns": runs}
