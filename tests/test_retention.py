"""Retention: an app keeps its raw records for its rawRetentionDays (or the service's RAW_RETENTION_DAYS); older days
are refused to exports and backfills with a 400 naming the oldest day kept, and removed by the ApplyRetention timer
with the snapshot devices not seen for that long, the snapshot log a folded state holds, and the late-arrival
notes and pipeline periods of those days. Records are sent through Collect (a backend batch received in the past
goes through the same check and write, with its receive time)."""

from __future__ import annotations

import datetime as dt
import json
import os
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from azure.functions.timer import TimerRequest
from exporting import run_export
from helpers import app_path, container_sas_url, http_request
from pipelining import PipelineApp, event
from test_collect import Device

import ApplyRetention
import ExportTasks
from shared.export import expiry, snapshotfold, snapshotstate
from shared.ingest import collect, latearrivals, rawstore, snapshots
from shared.pipelines import retention as sweep
from shared.pipelines import store
from shared.platform import apps, config, retention, storage, tablefilter
from tools import admin

UTC = dt.UTC


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def keep(app_id: str, days: int | None) -> None:
    apps.set_app_settings(apps.AppRef(*app_id.split("~", 1)), apps.AppSettings(raw_retention_days=days))


def received(app_id: str, records: list[dict], at: dt.datetime) -> None:
    """A batch that Collect received at ``at``: checked and stored as Collect does."""
    batch = collect.check(app_id, records, received=at)
    assert batch.answer == {"accepted": len(records), "rejected": []}, batch.answer
    collect.write(app_id, batch)


def raw_blobs(app_id: str, record_type: str) -> list[str]:
    return [blob.name for blob in rawstore.list_all(app_id, record_type)]


def days_of(names: list[str]) -> set[str]:
    return {"-".join(name.split("/")[2:5]) for name in names}


def post_export(lake: PipelineApp, start: dt.date, end: dt.date, container: str):
    path = app_path(lake.collection, lake.name) + "/exportTasks/events"
    request = http_request("POST", path, key=lake.keys.export_key, body={
        "containerUrl": container, "startDate": start.isoformat(), "endDate": end.isoformat()},
        route_params={"subscriptionId": "s", "resourceGroupName": "g", "appCollection": lake.collection,
                      "appName": lake.name, "rest": "events"})
    response = ExportTasks.main(request)
    return response.status_code, json.loads(response.get_body())


@pytest.fixture
def device(app_env, names):
    return Device(app_env, names)


def test_an_export_or_a_backfill_older_than_the_app_keeps_is_refused_naming_the_oldest_day(app_env, names):
    lake = PipelineApp(app_env, names)
    keep(lake.app.id, 30)
    today = dt.datetime.now(UTC).date()
    oldest = today - dt.timedelta(days=30)
    url = container_sas_url(app_env, names.container("dest"))
    status, answer = post_export(lake, oldest - dt.timedelta(days=1), today, url)
    assert (status, answer["error"]["code"]) == (400, "InvalidParameter")
    assert answer["error"]["message"] == (
        f"startDate ({oldest - dt.timedelta(days=1)}) is older than this app keeps raw records (30 days): the oldest "
        f"day kept is {oldest} (UTC); ask from {oldest} on")
    assert post_export(lake, oldest, today, url)[0] == 202

    body = {"route": "events", "settleMinutes": 0, "containerUrl": lake.container_url(),
            "startFrom": (oldest - dt.timedelta(days=1)).isoformat()}
    status, answer = lake.api("PUT", "backfill", body)
    assert (status, answer["error"]["code"]) == (400, "InvalidParameter")
    assert answer["error"]["message"].startswith(f"startFrom ({oldest - dt.timedelta(days=1)}) is older")
    assert f"the oldest day kept is {oldest}" in answer["error"]["message"]
    assert lake.api("GET", "")[1] == {"value": []}
    assert lake.api("PUT", "backfill", dict(body, startFrom=oldest.isoformat()))[0] == 201
    # The retention shrinks: the pipeline's PUT that changes its destination repeats the startFrom it cannot change.
    keep(lake.app.id, 5)
    assert lake.api("PUT", "backfill", dict(body, startFrom=oldest.isoformat(), description="moved"))[0] == 200


def test_the_service_default_applies_unless_the_app_sets_its_own(app_env, names, settings_override):
    settings_override(**{config.RAW_RETENTION_DAYS: 20})
    now = dt.datetime.now(UTC)
    own, default = Device(app_env, names), Device(app_env, SimpleNamespace(token=f"{names.token}b"))
    keep(own.app_id, 10)
    assert retention.oldest_day_kept(own.app_id, now.date()) == now.date() - dt.timedelta(days=10)
    assert retention.oldest_day_kept(default.app_id, now.date()) == now.date() - dt.timedelta(days=20)
    old = now - dt.timedelta(days=15)
    for app in (own, default):
        assert app.post([event("old", old)])[0] == 200
    sweep.apply(own.app_id, now)
    sweep.apply(default.app_id, now)
    assert raw_blobs(own.app_id, "event") == []
    assert days_of(raw_blobs(default.app_id, "event")) == {f"{old:%Y-%m-%d}"}
    with pytest.raises(config.ConfigError, match="RAW_RETENTION_DAYS must be 3650 or less"):
        config.load_settings({**os.environ, config.RAW_RETENTION_DAYS: "4000"})


def test_raw_days_before_the_removal_day_go_and_the_others_stay(device):
    keep(device.app_id, 10)
    now = dt.datetime.now(UTC)
    oldest = retention.oldest_day_kept(device.app_id, now.date())
    before = sweep.removal_day(oldest, now)
    assert before == oldest - dt.timedelta(days=1)  # EXPORT_JOB_DEADLINE_HOURS (24) after the day left
    start = dt.datetime.combine(before, dt.time(), UTC)
    moments = {"gone": start - dt.timedelta(seconds=1), "first-kept": start, "oldest": start + dt.timedelta(days=1),
               "recent": now - dt.timedelta(hours=2)}
    crash = {"type": "crash", "deviceId": "dev-1", "timestamp": stamp(start - dt.timedelta(days=400)), "crashType": "x"}
    assert device.post([event(name, moment) for name, moment in moments.items()] + [crash])[0] == 200
    done = sweep.apply(device.app_id, now)
    assert done["rawBlobs"] == 2
    assert days_of(raw_blobs(device.app_id, "event")) == {f"{moments[name]:%Y-%m-%d}" for name in moments
                                                          if name != "gone"}
    assert raw_blobs(device.app_id, "crash") == []
    rows = run_export(device.app_id, "events", "JsonBlob", start_date=before - dt.timedelta(days=1),
                      end_date=now.date())
    assert sorted(row["name"] for row in rows) == sorted(name for name in moments if name != "gone")
    # What was past is gone; a second run removes nothing more.
    assert sweep.apply(device.app_id, now) == {kind: 0 for kind in done}


def snapshot_state(device: Device) -> dict[str, list]:
    return {"devices": sorted(row["deviceId"] for row in device.snapshot("devices")),
            "tags": sorted((row["deviceId"], row["name"]) for row in device.snapshot("tags")),
            "tokens": sorted(row["deviceId"] for row in device.snapshot("tokens")),
            "push": sorted(row["deviceId"] for row in device.snapshot(
                "feedbackByCampaign", campaign_type="Poll", campaign_ids=[7]))}


def seed_snapshot(device: Device, now: dt.datetime) -> dt.datetime:
    """Devices seen 40 days ago only, seen then and now, seen now, and one with tags only; returns 40 days ago."""
    then = now - dt.timedelta(days=40)
    reports = [{"type": "device", "deviceId": name, "info": {"phoneModel": "P"}} for name in ("gone", "back")]
    received(device.app_id, reports + [
        {"type": "tag", "deviceId": "gone", "name": "level", "value": 3},
        {"type": "tag", "deviceId": "back", "name": "level", "value": 4},
        {"type": "tag", "deviceId": "tagged", "name": "vip", "value": True},
        {"type": "token", "deviceId": "gone", "token": "tok-gone"},
        {"type": "push", "deviceId": "gone", "campaignId": 7, "campaignType": "Poll", "action": "replied",
         "timestamp": stamp(then)}], then)
    assert device.post([{"type": "device", "deviceId": "back", "info": {"phoneModel": "P2"}},
                        {"type": "device", "deviceId": "new", "info": {"phoneModel": "N"}},
                        {"type": "token", "deviceId": "new", "token": "tok-new"},
                        {"type": "push", "deviceId": "new", "campaignId": 7, "campaignType": "Poll",
                         "action": "pushed", "timestamp": stamp(now - dt.timedelta(minutes=5))}])[0] == 200
    return then


KEPT = {"devices": ["back", "new"], "tags": [("back", "level"), ("tagged", "vip")], "tokens": ["new"],
        "push": ["new"]}


def test_devices_not_seen_for_the_retention_leave_the_snapshot_with_their_tags_tokens_and_feedback(device):
    keep(device.app_id, 30)
    now = dt.datetime.now(UTC)
    seed_snapshot(device, now)
    assert snapshot_state(device)["devices"] == ["back", "gone", "new"]
    done = sweep.apply(device.app_id, now)
    assert done["snapshotGenerations"] == 1
    assert snapshot_state(device) == KEPT
    generation = snapshots.current_generation(device.app_id)
    assert generation is not None and generation.unseen_before == expiry.unseen_cutoff(now.date() -
                                                                                        dt.timedelta(days=30))
    # Compactions after it go on from it: the devices stay out, and the next retention fold waits for the next day.
    assert device.post([{"type": "tag", "deviceId": "new", "name": "level", "value": 1}])[0] == 200
    compacted = snapshotstate.compact(device.app_id, now=now + dt.timedelta(seconds=1))
    assert compacted is not None and compacted.unseen_before == generation.unseen_before
    assert snapshot_state(device) == dict(KEPT, tags=sorted(KEPT["tags"] + [("new", "level")]))
    assert sweep.apply(device.app_id, now)["snapshotGenerations"] == 0


def test_the_snapshot_log_goes_only_once_a_settled_generation_holds_it_and_the_state_stays(device):
    keep(device.app_id, 30)
    now = dt.datetime.now(UTC)
    then = seed_snapshot(device, now)
    old_log = [name for name in raw_blobs(device.app_id, snapshots.LOG_TYPE) if f"{then:%Y/%m/%d}" in name]
    assert old_log
    sweep.apply(device.app_id, now)
    # The generation that holds the old log was just published: an export that planned before it may read the log.
    assert set(old_log) <= set(raw_blobs(device.app_id, snapshots.LOG_TYPE))
    # A log blob of those days that no generation holds yet (a batch received then, stored since) is kept.
    received(device.app_id, [{"type": "tag", "deviceId": "tagged", "name": "late", "value": 1}],
             then.replace(hour=(then.hour + 1) % 24))
    unfolded = [name for name in raw_blobs(device.app_id, snapshots.LOG_TYPE)
                if name not in old_log and f"{then:%Y/%m/%d}" in name]
    assert len(unfolded) == 1
    later = now + dt.timedelta(hours=25)
    before = sweep.removal_day(retention.oldest_day_kept(device.app_id, later.date()), later)
    assert expiry.remove_folded_log(device.app_id, before, later, deadline=float("inf")) == len(old_log)
    assert days_of(raw_blobs(device.app_id, snapshots.LOG_TYPE)) == {f"{then:%Y-%m-%d}", f"{now:%Y-%m-%d}"}
    assert unfolded[0] in raw_blobs(device.app_id, snapshots.LOG_TYPE)
    assert snapshot_state(device) == dict(KEPT, tags=sorted(KEPT["tags"] + [("tagged", "late")]))
    # The next sweep folds it too, and (on this test's clock, what is published now is a day old at ``later``) the
    # generation that holds it is old enough: its blob goes, and the state stays.
    assert sweep.apply(device.app_id, later)["logBlobs"] == 1
    assert days_of(raw_blobs(device.app_id, snapshots.LOG_TYPE)) == {f"{now:%Y-%m-%d}"}
    assert snapshot_state(device) == dict(KEPT, tags=sorted(KEPT["tags"] + [("tagged", "late")]))


def test_a_state_that_outgrows_its_buckets_keeps_the_devices_whose_log_is_gone(device, monkeypatch):
    keep(device.app_id, 30)
    now = dt.datetime.now(UTC)
    seed_snapshot(device, now)
    later = now + dt.timedelta(hours=25)  # generations are named by the time they start: this test's clock goes on
    sweep.apply(device.app_id, now)
    sweep.apply(device.app_id, later)
    assert days_of(raw_blobs(device.app_id, snapshots.LOG_TYPE)) == {f"{now:%Y-%m-%d}"}
    first = snapshots.current_generation(device.app_id)
    assert first is not None
    monkeypatch.setattr(snapshotfold, "FOLD_BYTES", 2000)  # the state and the log now need more buckets
    assert device.post([{"type": "device", "deviceId": f"more-{n}", "info": {"phoneModel": "M"}}
                        for n in range(40)])[0] == 200
    grown = snapshotstate.compact(device.app_id, now=later + dt.timedelta(minutes=1))
    assert grown is not None and grown.buckets > first.buckets and grown.buckets % first.buckets == 0
    assert snapshots.current_generation(device.app_id) == grown
    state = snapshot_state(device)
    assert state["devices"] == sorted(KEPT["devices"] + [f"more-{n}" for n in range(40)])
    assert (state["tags"], state["tokens"], state["push"]) == (KEPT["tags"], KEPT["tokens"], KEPT["push"])


def daily_pipeline(app_env, names) -> tuple[PipelineApp, dt.datetime, list[dt.datetime]]:
    """An app with an event on each of the four days before today and a daily pipeline from the first of them."""
    lake = PipelineApp(app_env, names)
    now = dt.datetime.now(UTC)
    today = dt.datetime.combine(now.date(), dt.time(), UTC)
    days = [today - dt.timedelta(days=n) for n in (4, 3, 2, 1)]
    lake.send([event(f"e{n}", day + dt.timedelta(hours=3)) for n, day in enumerate(days)])
    assert lake.api("PUT", "daily", {"route": "events", "settleMinutes": 0, "containerUrl": lake.container_url(),
                                     "lateDeliveryMinutes": 1, "startFrom": f"{days[0]:%Y-%m-%d}"})[0] == 201
    return lake, now, days


def test_late_notes_and_pipeline_periods_of_removed_days_go(app_env, names):
    lake, now, days = daily_pipeline(app_env, names)
    today = days[-1] + dt.timedelta(days=1)
    lake.run_pipelines(now)
    assert sorted(lake.pipeline("daily").periods) == [f"{day:%Y-%m-%d}" for day in days]
    keep(lake.app.id, 2)
    before = sweep.removal_day(retention.oldest_day_kept(lake.app.id, now.date()), now)
    assert before == (today - dt.timedelta(days=3)).date()
    done = sweep.apply(lake.app.id, now)
    assert done["pipelinePeriods"] == 1 and done["lateNotes"] >= 1
    pipeline = lake.pipeline("daily")
    assert sorted(pipeline.periods) == [f"{day:%Y-%m-%d}" for day in days[1:]]
    marks = [blob.name.split("/")[3] for blob in storage.container(store.PIPELINES_CONTAINER).list_blobs(
        name_starts_with=f"marks/{lake.app.id}/{pipeline.uid}/")]
    assert sorted(set(marks)) == sorted(pipeline.periods)
    notes = storage.table(latearrivals.LATE_TABLE).query_entities(tablefilter.all_of(
        tablefilter.compare("PartitionKey", "ge", f"{lake.app.id}|"),
        tablefilter.compare("PartitionKey", "lt", f"{lake.app.id}}}")))
    hours = sorted(note["RowKey"].split("|")[1] for note in notes)
    assert hours and hours[0] >= f"{before:%Y%m%d}00"
    # The pipeline goes on: a late record of a day it still keeps is delivered once.
    lake.send([event("late", days[2] + dt.timedelta(hours=5))])
    lake.run_pipelines(now + dt.timedelta(minutes=5))
    assert lake.delivered("daily")[(f"{days[2]:%Y-%m-%d}", "late")] == 1


def test_a_pipeline_paused_past_its_periods_skips_those_older_than_kept(app_env, names):
    lake, now, days = daily_pipeline(app_env, names)
    assert lake.api("POST", "daily/pause")[0] == 200
    keep(lake.app.id, 2)
    assert lake.api("POST", "daily/resume")[0] == 200
    lake.run_pipelines(now)
    kept = [day for day in days if day.date() >= now.date() - dt.timedelta(days=2)]
    assert sorted(lake.delivered("daily")) == [(f"{day:%Y-%m-%d}", f"e{days.index(day)}") for day in kept]
    assert sorted(lake.pipeline("daily").periods) == [f"{day:%Y-%m-%d}" for day in kept]


def test_the_timer_run_twice_and_twice_at_once_leaves_what_one_run_leaves(device, monkeypatch):
    keep(device.app_id, 30)
    now = dt.datetime.now(UTC)
    seed_snapshot(device, now)
    assert device.post([event("old", now - dt.timedelta(days=45)), event("new", now)])[0] == 200
    monkeypatch.setattr(sweep, "apps_with_data", lambda: [device.app_id])
    with ThreadPoolExecutor(2) as pool:  # two instances at once; result() raises what either raised
        for running in [pool.submit(ApplyRetention.main, TimerRequest(past_due=False)) for _ in range(2)]:
            running.result()
    ApplyRetention.main(TimerRequest(past_due=True))
    assert days_of(raw_blobs(device.app_id, "event")) == {f"{now:%Y-%m-%d}"}
    assert snapshot_state(device) == KEPT


def test_an_app_deleted_keeps_its_data_until_its_retention_removes_it(device):
    assert device.post([event("old", dt.datetime.now(UTC) - dt.timedelta(days=800))])[0] == 200
    apps.delete_app(apps.AppRef(device.collection, device.app))
    assert device.app_id in sweep.apps_with_data()
    sweep.apply(device.app_id, dt.datetime.now(UTC))  # the service's default (730 days)
    assert raw_blobs(device.app_id, "event") == []


def test_the_admin_command_reads_and_sets_the_apps_retention(device, capsys, monkeypatch):
    monkeypatch.setattr(admin.localenv, "prepare", lambda: None)
    assert admin.main(["app-settings", "--collection", device.collection, "--app", device.app]) == 0
    assert json.loads(capsys.readouterr().out) == {"rawRetentionDays": None, "tableRetentionDays": None}
    assert admin.main(["app-settings", "--collection", device.collection, "--app", device.app,
                       "--set", "tableRetentionDays=9"]) == 0
    assert admin.main(["app-settings", "--collection", device.collection, "--app", device.app,
                       "--set", "rawRetentionDays=45"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"rawRetentionDays": 45, "tableRetentionDays": 9}
    assert retention.days_kept(device.app_id) == 45
    assert admin.main(["app-settings", "--collection", device.collection, "--app", device.app,
                       "--set", "rawRetentionDays=0"]) == 2
    assert "rawRetentionDays must be a whole number of days from 1 to 3650" in capsys.readouterr().err
    assert admin.main(["app-settings", "--collection", device.collection, "--app", device.app,
                       "--set", "rawRetentionDays=null"]) == 0
    assert retention.days_kept(device.app_id) == config.get_settings().raw_retention_days == 730
