"""The Delta tables the service wrote for an app, for its erasures (shared.export.deltaerase).

A table is a folder of a destination container: `delta/{exportType}/` of a DeltaLake export task, `{name}/` of a
DeltaLake pipeline. Every export task of the app in that format is looked at (a pipeline's runs are export tasks
too), so the tables of a pipeline deleted since, or of the container a pipeline wrote before it was given
another, are found as well as those of the pipelines as they are now. Each table is listed once, with the SAS
that the newest of them holds: the pipeline's current destination when a pipeline writes it now, else that of the
newest task that wrote it.

An operator's pipeline (EXPORT_SCHEDULES) has no destination of its own: its runs' tasks name the container.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.export import deltatable
from shared.export.deltaerase import LakeTable
from shared.export.destination import SealedDestination
from shared.pipelines import store
from shared.tasks import jobs

DELTA_LAKE = "DeltaLake"


@dataclass
class _Found:
    destination: SealedDestination
    pipelines: set[str] = field(default_factory=set)
    task_ids: list[str] = field(default_factory=list)


def lake_tables(app_id: str) -> list[LakeTable]:
    """Every Delta table the service wrote for the app, once each (by container URL and folder), in that order."""
    found: dict[tuple[str, str], _Found] = {}
    for job in jobs.jobs_in_format(app_id, DELTA_LAKE):  # oldest first: the newest task's SAS is kept
        path = job.run.pipeline if job.run is not None else f"delta/{job.export_type}"
        entry = found.setdefault((job.container_url, path), _Found(job.destination))
        entry.destination = job.destination
        if job.run is not None:
            entry.pipelines.add(job.run.pipeline)
        else:
            entry.task_ids.append(job.id)
    for pipeline in store.list_pipelines(app_id):
        if pipeline.shape.get("export_format") != DELTA_LAKE or pipeline.destination is None:
            continue
        entry = found.setdefault((pipeline.destination.url, pipeline.name), _Found(pipeline.destination))
        entry.destination = pipeline.destination
        entry.pipelines.add(pipeline.name)
    days = deltatable.retention_days(app_id)
    return [LakeTable(url=url, path=path, destination=entry.destination, retention_days=days,
                      pipelines=tuple(sorted(entry.pipelines)), task_ids=tuple(entry.task_ids))
            for (url, path), entry in sorted(found.items())]
