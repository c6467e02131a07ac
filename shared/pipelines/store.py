"""Where pipelines live in the app's storage.

    pipelines/defs/{appId}/{name}.json                          the pipeline (shared.pipelines.model), under its ETag
    pipelines/marks/{appId}/{uid}/{period}/{key}.json           what a run had read of each raw blob of the period,
                                                                by then: {blob name: bytes}; key = its sequence
                                                                and a nonce of the planner that wrote it

A run's marks are written before the pipeline document that names them, and never changed: a planner that loses
the race for the document leaves marks that nothing names, and the period's marks stay those of the run the
document names."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings

from shared.pipelines.model import Pipeline
from shared.platform import storage

PIPELINES_CONTAINER = "pipelines"
_JSON = ContentSettings(content_type="application/json")


class PipelineChanged(Exception):
    """Another instance changed the pipeline since it was read (or made it first); read it again."""


def _definition(app_id: str, name: str) -> str:
    return f"defs/{app_id}/{name}.json"


def _blob(name: str):
    return storage.container(PIPELINES_CONTAINER).get_blob_client(name)


def get_pipeline(app_id: str, name: str) -> Pipeline | None:
    try:
        download = _blob(_definition(app_id, name)).download_blob()
    except ResourceNotFoundError:
        return None
    return Pipeline.from_json(json.loads(download.readall()), etag=download.properties.etag)


def list_pipelines(app_id: str | None = None) -> Iterator[Pipeline]:
    """The app's pipelines (every app's, without one), in name order."""
    prefix = f"defs/{app_id}/" if app_id is not None else "defs/"
    for blob in storage.container(PIPELINES_CONTAINER).list_blobs(name_starts_with=prefix):
        app, _, name = blob.name[len("defs/"):].rpartition("/")
        pipeline = get_pipeline(app, name.removesuffix(".json"))
        if pipeline is not None:  # deleted since the listing
            yield pipeline


def count_pipelines(app_id: str) -> int:
    """How many pipelines the app has (their names listed, none read)."""
    return sum(1 for _ in storage.container(PIPELINES_CONTAINER).list_blobs(name_starts_with=f"defs/{app_id}/"))


def create_pipeline(pipeline: Pipeline) -> Pipeline:
    """Stores a new pipeline; PipelineChanged when one of that name exists."""
    try:
        answer = _blob(_definition(pipeline.app_id, pipeline.name)).upload_blob(
            json.dumps(pipeline.to_json()), overwrite=False, content_settings=_JSON)
    except ResourceExistsError:
        raise PipelineChanged(f"pipeline {pipeline.name} exists") from None
    pipeline.etag = answer["etag"]
    return pipeline


def save_pipeline(pipeline: Pipeline) -> Pipeline:
    """Writes the pipeline if nobody changed it since it was read; PipelineChanged otherwise."""
    try:
        answer = _blob(_definition(pipeline.app_id, pipeline.name)).upload_blob(
            json.dumps(pipeline.to_json()), overwrite=True, content_settings=_JSON, etag=pipeline.etag,
            match_condition=MatchConditions.IfNotModified)
    except (ResourceModifiedError, ResourceNotFoundError):
        raise PipelineChanged(f"pipeline {pipeline.name} changed since it was read") from None
    pipeline.etag = answer["etag"]
    return pipeline


def delete_pipeline(pipeline: Pipeline) -> None:
    try:
        _blob(_definition(pipeline.app_id, pipeline.name)).delete_blob(
            etag=pipeline.etag, match_condition=MatchConditions.IfNotModified)
    except ResourceModifiedError:
        raise PipelineChanged(f"pipeline {pipeline.name} changed since it was read") from None
    except ResourceNotFoundError:
        pass


def _marks(pipeline: Pipeline, label: str, key: str) -> str:
    return f"marks/{pipeline.app_id}/{pipeline.uid}/{label}/{key}.json"


def write_marks(pipeline: Pipeline, label: str, key: str, marks: dict[str, int]) -> None:
    _blob(_marks(pipeline, label, key)).upload_blob(json.dumps(marks), overwrite=False, content_settings=_JSON)


def read_marks(pipeline: Pipeline, label: str) -> dict[str, int]:
    """What the runs of the period had read of each raw blob: nothing before its first run."""
    key = pipeline.periods.get(label)
    if key is None:
        return {}
    return json.loads(_blob(_marks(pipeline, label, key)).download_blob().readall())


def delete_marks_of(pipeline: Pipeline, keys: list[tuple[str, str]]) -> None:
    """Removes marks that the pipeline no longer names ((period, key) pairs), best effort: a crash leaves a blob
    that nothing reads."""
    for label, key in keys:
        try:
            _blob(_marks(pipeline, label, key)).delete_blob()
        except ResourceNotFoundError:
            pass


def delete_marks_where(pipeline: Pipeline, gone: Callable[[str], bool]) -> int:
    """Removes the marks of the periods (labels) that ``gone`` names, whether the pipeline names them or not;
    returns how many went."""
    container = storage.container(PIPELINES_CONTAINER)
    prefix = f"marks/{pipeline.app_id}/{pipeline.uid}/"
    removed = 0
    for blob in container.list_blobs(name_starts_with=prefix):
        if gone(blob.name[len(prefix):].split("/")[0]):
            try:
                container.delete_blob(blob.name)
            except ResourceNotFoundError:
                continue
            removed += 1
    return removed


def delete_marks(pipeline: Pipeline) -> None:
    """Removes what a deleted pipeline had read (best effort: nothing reads marks of a pipeline that is gone)."""
    delete_marks_where(pipeline, lambda label: True)
