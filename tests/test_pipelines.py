"""Pipelines: continuous exports that deliver every acknowledged record exactly once under its event-time period,
however late it arrives, driven through the API, Collect, the pipelines' timer and the export queues."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from pipelining import PipelineApp, event

UTC = dt.UTC


@pytest.fixture
def lake(app_env, names):
    return PipelineApp(app_env, names)


def _day(moment: dt.datetime) -> dt.datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.mark.parametrize("export_format,layout", [("JsonBlob", "flat"), ("CsvBlob", "hive"),
                                                  ("ParquetBlob", "hive")])
def test_late_records_in_waves_are_delivered_once_under_their_period(lake, export_format, layout):
    now = dt.datetime.now(UTC)
    today = _day(now)
    days = [today - dt.timedelta(days=n) for n in (3, 2, 1)]
    sent: Counter = Counter()

    def send(tag: str, moments: list[dt.datetime]) -> None:
        records = [event(f"{tag}-{i}", moment) for i, moment in enumerate(moments)]
        lake.send(records)
        for record, moment in zip(records, moments):
            folder = f"date={moment:%Y-%m-%d}" if layout == "hive" else f"{moment:%Y-%m-%d}"
            sent[(folder, record["name"])] += 1

    send("on-time", [day + dt.timedelta(hours=h, minutes=7) for day in days for h in (1, 9, 17)])
    status, body = lake.api("PUT", "daily", {
        "route": "events", "exportFormat": export_format, "layout": layout, "cadence": "daily",
        "settleMinutes": 0, "lateDeliveryMinutes": 1, "startFrom": f"{days[0]:%Y-%m-%d}",
        "containerUrl": lake.container_url()})
    assert status == 201, body
    lake.run_pipelines(now)
    assert lake.delivered("daily") == sent
    # Late waves: minutes, hours and days after their periods were delivered.
    send("wave1", [days[0] + dt.timedelta(hours=2), days[2] + dt.timedelta(hours=23, minutes=59)])
    lake.run_pipelines(now + dt.timedelta(minutes=2))
    assert lake.delivered("daily") == sent
    send("wave2", [days[1] + dt.timedelta(hours=5), days[0] + dt.timedelta(hours=2), days[0] + dt.timedelta(hours=3)])
    send("wave3", [days[2] + dt.timedelta(hours=1)])
    lake.run_pipelines(now + dt.timedelta(minutes=4))
    assert lake.delivered("daily") == sent
    manifests = lake.manifests("daily")
    assert sorted((m["pipeline"]["periods"], m["pipeline"]["late"]) for m in manifests) == sorted(
        [([f"{d:%Y-%m-%d}"], False) for d in days]
        + [([f"{days[0]:%Y-%m-%d}", f"{days[2]:%Y-%m-%d}"], True),
           ([f"{days[0]:%Y-%m-%d}", f"{days[1]:%Y-%m-%d}", f"{days[2]:%Y-%m-%d}"], True)])
    status, runs = lake.api("GET", "daily/runs")
    assert status == 200
    assert [run["delivery"] for run in runs["value"]] == ["late", "late", "first", "first", "first"]
    assert all(run["state"] == "Succeeded" for run in runs["value"])
    assert sum(run["recordCount"] for run in runs["value"]) == sum(sent.values())
