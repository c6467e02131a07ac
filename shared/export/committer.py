"""The commit: every file of a job whose parts are all done is made visible, then the manifest is written.

Each file's staged blocks are committed in order, and the manifest is written last and only created, so a
reader sees a file complete, exactly once, or not at all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContentSettings

from shared.export import deltatable, registry
from shared.export.destination import Destination
from shared.export.spec import HIVE, ExportSpec
from shared.platform.errors import PermanentJobError
from shared.platform.times import iso

log = logging.getLogger(__name__)


class DonePart(Protocol):
    """A part of the export whose blocks are staged (shared.tasks.parts records them): what the commit needs."""

    @property
    def index(self) -> int: ...
    @property
    def file(self) -> str: ...
    @property
    def blocks(self) -> tuple[str, ...]: ...
    @property
    def records(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def md5(self) -> str: ...
    @property
    def stats(self) -> str | None: ...


def manifest(job: ExportSpec, files: list[dict], schema_url: str, table: dict | None = None) -> dict:
    collection, _, name = job.app_id.partition("~")
    document: dict[str, Any] = {"jobId": job.job_id, "app": {"appCollection": collection, "appName": name},
                "exportType": job.export_type, "exportFormat": job.export_format,
                "compression": registry.export_format(job.export_format).compression,
                "readAt": iso(job.read_at), "dateCreated": iso(job.date_created)}
    if job.start_date is not None and job.end_date is not None:
        document["range"] = {"startDate": job.start_date.isoformat(), "endDate": job.end_date.isoformat()}
        if job.hour is not None:
            document["range"]["hour"] = job.hour
    if job.campaign_type is not None:
        document["campaignType"] = job.campaign_type
    if job.campaign_ids is not None:
        document["campaignIds"] = job.campaign_ids
    if job.campaign_window_start is not None:
        document["campaignWindow"] = {"start": iso(job.campaign_window_start),
                                      "end": iso(job.campaign_window_end)}
    if job.schedule:
        document["schedule"] = job.schedule
    if job.run is not None:
        document["pipeline"] = {"name": job.run.pipeline, "run": job.run.run, "sequence": job.run.sequence,
                                "periods": list(job.run.periods), "late": job.run.late}
        if job.run.replaces:
            document["pipeline"]["replaces"] = list(job.run.replaces)
    if job.layout != "flat":
        document["layout"] = job.layout
    if job.projection is not None:
        document["fields"] = job.projection
    if job.name_filter is not None:
        document["names"] = job.name_filter
    if table is not None:
        document["table"] = table
    document["schema"] = {"name": registry.schema_name(job), "url": schema_url}
    document["recordCount"] = sum(f["records"] for f in files)
    document["bytes"] = sum(f["bytes"] for f in files)
    document["files"] = files
    return document


def commit(job: ExportSpec, done: Sequence[DonePart]) -> list[dict]:
    """Commits every file's staged blocks in order, then writes the manifest; returns the files' entries.
    Safe to run twice: the same block lists commit to the same bytes, and the manifest is only created.

    A file is visible once its block list is committed, so a commit that fails for good part-way removes
    the files it committed: a failed export leaves no file that a reader could take for a finished one."""
    target = job.destination.open()
    container = target.container_client()
    files = []
    metadata = {"jobId": job.job_id, "exportType": job.export_type}
    ordered = sorted(done, key=lambda part: part.index)
    content_type = registry.export_format(job.export_format).content_type
    try:
        for part in ordered:
            blob = container.get_blob_client(part.file)
            blob.commit_block_list([BlobBlock(block_id=b) for b in part.blocks],
                                   content_settings=ContentSettings(content_type=content_type),
                                   metadata=dict(metadata, records=str(part.records)))
            files.append({"name": part.file, "url": f"{target.url}/{part.file}", "records": part.records,
                          "bytes": part.bytes, "md5": part.md5})
        table = _commit_table(job, target, ordered)
        schema = registry.published_schema(job)
        container.get_blob_client(registry.schema_name(job)).upload_blob(
            json.dumps(schema, indent=2).encode(), overwrite=True, metadata=metadata,
            content_settings=ContentSettings(content_type="application/schema+json"))
        body = json.dumps(manifest(job, files, f"{target.url}/{registry.schema_name(job)}", table),
                          indent=2).encode()
        try:
            container.get_blob_client(registry.manifest_name(job)).upload_blob(
                body, overwrite=False, metadata=metadata,
                content_settings=ContentSettings(content_type="application/json"))
        except ResourceExistsError:
            pass
        if job.layout == HIVE or job.run is not None:
            container.get_blob_client(registry.success_name(job)).upload_blob(b"", overwrite=True, metadata=metadata)
    except AzureError as error:
        failure = target.failure(error)
        if isinstance(failure, PermanentJobError):
            _remove_files(container, [part.file for part in ordered] + [registry.schema_name(job)])
        raise failure from None
    return files


def _commit_table(job: ExportSpec, target: Destination, ordered: Sequence[DonePart]) -> dict | None:
    """A DeltaLake export's commit of its files to its table, once (shared.export.deltatable): what the manifest
    says of it (None for other formats)."""
    folder = registry.table_folder(job)
    if folder is None:
        return None
    days = deltatable.retention_days(job.app_id)
    version = deltatable.commit(job, target, [deltatable.TableFile(part.file, part.bytes, part.stats)
                                              for part in ordered], retention_days=days)
    return {"format": "delta", "path": folder, "url": f"{target.url}/{folder}", "version": version}


def _remove_files(container, names: list[str]) -> None:
    """Best effort: a destination that refuses this too keeps files without a manifest, which docs/exports.md
    tells readers never to take for a finished export."""
    for name in names:
        try:
            container.delete_blob(name)
        except ResourceNotFoundError:
            pass
        except AzureError as error:
            log.warning("Could not remove %s after a failed commit (%s)", name, type(error).__name__)
            return
