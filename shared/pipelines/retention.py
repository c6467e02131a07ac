"""The ApplyRetention timer's sweep: for each app with data, what it no longer keeps is removed.

An app keeps the raw records of the days from its oldest day kept on (shared.platform.retention), and from that day
on exports and backfills that ask for older days are refused. What is older is removed a little later: on day D,
the days before the oldest day kept on the day EXPORT_JOB_DEADLINE_HOURS ago (``removal_day``), so that an export
or a pipeline run that started while the day was still kept reads it to the end. For each app, in an order that
leaves nothing half-done (shared.export.expiry says how each step is safe to repeat and to run twice at once):

1. its historical raw partitions of those days;
2. its snapshot state without the devices not seen since the oldest day kept (their device rows, tags, tokens and
   push feedback), folded into a new generation once each day;
3. its snapshot log blobs of those days, once a generation that holds them is old enough;
4. its late-arrival notes of those days, and its pipelines' record of those periods (the periods named in each
   pipeline's document, changed under its ETag, then their marks).

A pipeline that was paused past its periods skips those older than the oldest day kept (shared.pipelines.driver).
A sweep works for at most SWEEP_SECONDS; what is left waits for the next tick.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time

from shared.export import expiry
from shared.ingest import latearrivals, rawstore
from shared.pipelines import store
from shared.pipelines.store import PipelineChanged
from shared.platform import apps, retention, storage
from shared.platform.config import get_settings

SWEEP_SECONDS = 180.0

log = logging.getLogger(__name__)


def apps_with_data() -> list[str]:
    """Every registered app, and every app the raw store holds data of (an app deleted keeps its data until its
    retention removes it)."""
    found = set(apps.list_app_ids())
    for item in storage.container(rawstore.RAW_CONTAINER).walk_blobs(delimiter="/"):
        if item.name.endswith("/"):
            found.add(item.name.rstrip("/"))
    return sorted(found)


def removal_day(oldest: dt.date, now: dt.datetime) -> dt.date:
    """The day before which the app's data is removed, given its oldest day kept today: the oldest day it kept
    EXPORT_JOB_DEADLINE_HOURS ago."""
    return oldest - (now.date() - (now - dt.timedelta(hours=get_settings().job_deadline_hours)).date())


def apply(app_id: str, now: dt.datetime, *, deadline: float | None = None) -> dict[str, int]:
    """Removes what the app no longer keeps at ``now``; returns how much of each kind went."""
    deadline = deadline if deadline is not None else time.monotonic() + SWEEP_SECONDS
    oldest = retention.oldest_day_kept(app_id, now.date())
    before = removal_day(oldest, now)
    done = {"rawBlobs": expiry.remove_raw_days(app_id, before, deadline)}
    done["snapshotGenerations"] = int(expiry.fold_out_unseen(app_id, oldest, now) is not None)
    done["logBlobs"] = expiry.remove_folded_log(app_id, before, now, deadline)
    done["lateNotes"] = latearrivals.forget_before(app_id, before)
    done["pipelinePeriods"] = forget_periods(app_id, before)
    return done


def _day(label: str) -> dt.date:
    return dt.date.fromisoformat(label[:10])


def _unnamed_before(label: str, *, named: set[str], before: dt.date) -> bool:
    return label not in named and _day(label) < before


def forget_periods(app_id: str, before: dt.date) -> int:
    """Takes the periods of days before ``before`` out of the app's pipelines (but those of a run in flight), then
    removes their marks; returns how many periods went. A pipeline changed meanwhile waits for the next sweep."""
    forgotten = 0
    for pipeline in store.list_pipelines(app_id):
        busy = set(pipeline.in_flight.periods) if pipeline.in_flight is not None else set()
        old = [label for label in pipeline.periods if _day(label) < before and label not in busy]
        if old:
            changed = pipeline.copy()
            for label in old:
                del changed.periods[label]
            try:
                pipeline = store.save_pipeline(changed)
            except PipelineChanged:
                continue
            forgotten += len(old)
        store.delete_marks_where(pipeline, functools.partial(_unnamed_before, named=set(pipeline.periods) | busy,
                                                             before=before))
    return forgotten


def sweep(now: dt.datetime) -> dict[str, int]:
    """The timer's work: ``apply`` to every app with data, for about SWEEP_SECONDS at most; returns the totals.
    One app's failure does not stop the others'."""
    deadline = time.monotonic() + SWEEP_SECONDS
    totals: dict[str, int] = {}
    for app_id in apps_with_data():
        if time.monotonic() > deadline:
            break
        try:
            for kind, count in apply(app_id, now, deadline=deadline).items():
                totals[kind] = totals.get(kind, 0) + count
        except Exception:
            log.exception("applying the retention of app %s failed; the next sweep tries again", app_id)
    return totals
