"""Listing an app's export tasks, a page at a time, in the orders and with the filters of the API (its
``$orderby`` and ``$filter``, read into a ``JobQuery`` by shared.api.task_query); the page token it gives out is
its own, and one it did not give out is an InvalidInput."""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from shared.platform import storage, tablefilter
from shared.platform.errors import InvalidInput
from shared.platform.times import iso_text
from shared.tasks import jobs
from shared.tasks.jobs import JOBS_TABLE, NEWEST_FIRST_TABLE, ExportJob


@dataclass(frozen=True)
class Page:
    jobs: list[ExportJob]
    next_token: str | None


@dataclass(frozen=True)
class JobQuery:
    """Which of an app's jobs to list, and in which order (``order`` is a property name of the API)."""

    order: str = "taskId"  # taskId | dateCreated | taskStatus | errorDetails
    descending: bool = False
    state: str | None = None
    export_type: str | None = None
    created: tuple[tuple[str, dt.datetime], ...] = ()  # (ge|gt|le|lt|eq, moment)

    @property
    def filtered(self) -> bool:
        return bool(self.state or self.export_type or self.created)

    def table_filter(self, app_id: str) -> str:
        """The Table query of the app's partition narrowed by the filter."""
        clauses = [tablefilter.eq("PartitionKey", app_id)]
        if self.state:
            clauses.append(tablefilter.eq("state", self.state))
        if self.export_type:
            clauses.append(tablefilter.eq("export_type", self.export_type))
        clauses += [tablefilter.compare("date_created", operator, iso_text(moment))
                    for operator, moment in self.created]
        return tablefilter.all_of(*clauses)


# Sort keys of the orders that are not kept by a table's row keys; ties go by task id.
_SORT_COLUMNS = {"taskStatus": "state", "errorDetails": "error_details", "taskId": "RowKey",
                 "dateCreated": "date_created"}


def list_jobs(app_id: str, *, top: int, skip: int = 0, after: str | None = None,
              query: JobQuery = JobQuery()) -> Page:
    """One page of an app's jobs. ``after`` is the continuation token of the previous page; ``skip`` skips
    that many jobs first.

    Oldest first (taskId or dateCreated ascending) streams the jobs table in row-key order, filtered on the
    server; newest first without a filter streams the newest-first index. Other orders read the app's
    matching jobs' sort columns, sort them, and fetch only the page's rows."""
    if not query.descending and query.order in ("taskId", "dateCreated"):
        return _stream(app_id, JOBS_TABLE, query, top, skip, after)
    if query.descending and query.order == "dateCreated" and not query.filtered:
        return _stream(app_id, NEWEST_FIRST_TABLE, query, top, skip, after)
    return _sorted(app_id, query, top, skip, after)


def _fetch(app_id: str, job_ids: list[str]) -> list[ExportJob]:
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda job_id: jobs.find_job(app_id, job_id), job_ids))
    return [job for job in found if job is not None]


def _stream(app_id: str, table_name: str, query: JobQuery, top: int, skip: int, after: str | None) -> Page:
    filter_text = query.table_filter(app_id)
    if after:
        filter_text = tablefilter.all_of(filter_text, tablefilter.compare("RowKey", "gt", after))
    index = table_name == NEWEST_FIRST_TABLE
    rows = storage.table(table_name).query_entities(filter_text, results_per_page=min(1000, skip + top + 1),
                                                    select=["RowKey", "job_id"] if index else None)
    keys: list[dict] = []
    skipped, more = 0, False
    for row in rows:
        if skipped < skip:
            skipped += 1
            continue
        if len(keys) == top:
            more = True
            break
        keys.append(row)
    found = _fetch(app_id, [row["job_id"] for row in keys]) if index else [jobs.from_entity(row) for row in keys]
    return Page(jobs=found, next_token=keys[-1]["RowKey"] if more and keys else None)


def _sorted(app_id: str, query: JobQuery, top: int, skip: int, after: str | None) -> Page:
    filter_text = query.table_filter(app_id)
    column = _SORT_COLUMNS[query.order]
    rows = storage.table(JOBS_TABLE).query_entities(filter_text, results_per_page=1000,
                                                    select=["RowKey", column] if column != "RowKey" else ["RowKey"])
    # A job without the value (no errorDetails yet) sorts before every text, as null does in SQL ascending.
    keys = sorted(((row.get(column) or "", row["RowKey"]) for row in rows), reverse=query.descending)
    if after is not None:
        try:
            last = tuple(json.loads(after))
            if len(last) != 2 or not all(isinstance(part, str) for part in last):
                raise ValueError
        except ValueError:
            raise InvalidInput("$skiptoken is not a token this service gave out for this order; follow nextLink as "
                               "it is") from None
        keys = [key for key in keys if (key < last if query.descending else key > last)]
    page = keys[skip:skip + top]
    more = len(keys) > skip + top
    return Page(jobs=_fetch(app_id, [job_id for _, job_id in page]),
                next_token=json.dumps(list(page[-1])) if more and page else None)
