"""The ingestion invariant, property-based: a record that Collect accepts exports in every type and format
that includes it, and Collect never answers 5xx for any input.

Hypothesis builds batches of records from arbitrary JSON: every string class (lone surrogates, control
characters, astral planes), deep nesting, huge and negative numbers, times from year 1 to year 9999 with
any offset. Each batch goes through the Collect function as a client would send it; then what was accepted
is exported by the engine, each type and format, and read back row by row.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import defaultdict

import expected
import pytest
from exporting import FORMATS, as_read, run_export
from helpers import app_path, http_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import Collect
from shared.export.registry import ROUTES
from shared.ingest.records import CAMPAIGN_TYPES, HISTORICAL_TYPES, normalize
from shared.platform import apps

NOW = dt.datetime.now(dt.UTC)
TODAY = NOW.date()
# Times cluster on a few days (so each example exports a few day ranges), at the edges of what a date can
# name, shifted by any zone offset; a share is fully random over the years 1-9999.
ANCHOR_DAYS = [dt.date(1, 1, 1), dt.date(1, 1, 2), dt.date(1969, 12, 31), dt.date(2000, 2, 29),
               TODAY - dt.timedelta(days=1), TODAY, dt.date(9999, 12, 31)]

any_text = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates included
names = st.one_of(st.sampled_from(["open", "buy", "é", "名前", "x" * 64]), any_text)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), any_text)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(any_text, inner, max_size=3)),
                           max_leaves=12)
keys = st.one_of(st.from_regex(r"[a-zA-Z0-9_]{1,8}", fullmatch=True), st.just("level\n"), any_text)


@st.composite
def deep(draw):
    """Extras nested 1 to 40 levels: the limit is 16 levels in a record."""
    value = draw(scalars)
    for _ in range(draw(st.integers(1, 40))):
        value = {draw(st.from_regex(r"[a-z]{1,3}", fullmatch=True)): value}
    return value


extras = st.one_of(st.none(), st.dictionaries(keys, json_values, max_size=4), deep())


@st.composite
def times(draw):
    if draw(st.integers(0, 4)) == 0:
        moment = draw(st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59)))
    else:
        day = draw(st.sampled_from(ANCHOR_DAYS))
        moment = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=draw(st.integers(0, 86399)))
    minutes = draw(st.sampled_from([0, 0, 0, 60, -60, 330, -570, 14 * 60, -14 * 60]))
    zone = "Z" if not minutes else f"{'+' if minutes > 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return moment.isoformat(timespec="milliseconds") + zone


# Ids in several scripts, one written decomposed (e + combining acute): stored and exported as NFC.
devices = st.sampled_from(["dev-1", "d.3:x@y", "dev-0007-e\u0301", "устройство-1", "端末-٣", "جهاز_٤", "dev-1\n"])
sessions = st.sampled_from(["s1", "s2"])


def record_of(kind):
    common = {"type": st.just(kind), "deviceId": devices}
    optional_user = st.one_of(st.none(), any_text)
    shapes = {
        "activity": dict(userId=optional_user, sessionId=sessions, name=names, start=times(), end=times(),
                         extras=extras),
        "event": dict(userId=optional_user, sessionId=st.one_of(st.none(), sessions), name=names,
                      timestamp=times(), extras=extras),
        "job": dict(name=names, start=times(), end=times(), extras=extras),
        "crash": dict(timestamp=times(), crashType=names, message=st.one_of(st.none(), any_text),
                      stack=st.one_of(st.none(), any_text)),
        "device": dict(timestamp=st.one_of(st.none(), times()),
                       info=st.one_of(st.none(), st.fixed_dictionaries({}, optional={
                           "phoneModel": any_text, "androidAPILevel": scalars, "locale": any_text})),
                       location=st.one_of(st.none(), st.fixed_dictionaries({"countrycode": any_text})),
                       nativePushEnabled=st.one_of(st.none(), st.booleans())),
        "tag": dict(name=keys, value=scalars),
        "token": dict(userId=optional_user, token=any_text, platform=st.one_of(st.none(), names)),
        "push": dict(campaignId=st.one_of(st.integers(1, 2**40), st.integers(-5, 2**70)),
                     campaignType=st.sampled_from(CAMPAIGN_TYPES), action=st.sampled_from(["pushed", "replied"]),
                     timestamp=times()),
    }[kind]
    return st.fixed_dictionaries({**common, **shapes}).map(
        lambda record: {key: value for key, value in record.items() if value is not None})


kinds = ["activity", "event", "job", "crash", "device", "tag", "token", "push"]
record_strategy = st.one_of([record_of(kind) for kind in kinds]
                            + [record_of("event").map(lambda r: dict(r, type="error"))])


def post(app, records):
    # As a client's JSON encoder sends them: lone surrogates escaped, NaN and Infinity as Python writes them.
    raw = json.dumps({"records": records}).encode()
    request = http_request("POST", app_path(app.collection, app.name) + "/collect", key=app.collect_key, raw=raw,
                           route_params={"appCollection": app.collection, "appName": app.name})
    response = Collect.main(request)
    return response.status_code, json.loads(response.get_body())


def as_csv(rows, export_type):
    return as_read(rows, export_type, "CsvBlob")


def day_of(record):
    return dt.date.fromisoformat((record.get("start") or record["timestamp"])[:10])


class App:
    def __init__(self, token, number):
        self.collection, self.name = f"inv{token}", f"a{number}"
        keys = apps.register_app(self.collection, self.name)
        self.collect_key = keys.collect_key
        self.id = f"{self.collection}~{self.name}"


@pytest.fixture
def fresh_app(app_env, names, settings_override):
    settings_override(EXPORT_CONVERT_PROCESSES="0")
    counter = iter(range(10**6))
    return lambda: App(names.token, next(counter))


def check_historical(app, accepted):
    by_type = defaultdict(list)
    for record in accepted:
        by_type[record["type"]].append(record)
    routes = {"activity": "activities", "event": "events", "job": "jobs", "error": "errors", "crash": "crashes"}
    for record_type, stored in by_type.items():
        route = routes[record_type]
        for day in sorted({day_of(record) for record in stored}):
            want = [record for record in stored if day_of(record) == day]
            for export_format in FORMATS:
                got = run_export(app.id, route, export_format, start_date=day, end_date=day)
                assert expected.canonical(got) == expected.canonical(
                    as_read(want, ROUTES[route].export_type, export_format))
    activities = by_type.get("activity", [])
    exported_sessions = set()
    for day in sorted({day_of(record) for record in activities}):
        for export_format in FORMATS:
            rows = run_export(app.id, "sessions", export_format, start_date=day, end_date=day)
            exported_sessions |= {(row["deviceId"], row["sessionId"]) for row in rows}
    assert {(a["deviceId"], a["sessionId"]) for a in activities} <= exported_sessions


def check_snapshots(app, accepted):
    reports = defaultdict(list)
    for record in accepted:
        if record["type"] == "device":
            reports[record["deviceId"]].append(record)
    # A report without a time is seen when it is received, which the test does not know to the millisecond.
    timed = all(report.get("timestamp") is not None for kept in reports.values() for report in kept)
    pushes = [record for record in accepted if record["type"] == "push"]
    for export_format in FORMATS:
        got_tags = run_export(app.id, "tags", export_format)
        assert expected.canonical(got_tags) == expected.canonical(as_read(expected.tags(accepted), "Tag",
                                                                          export_format))
        got_tokens = run_export(app.id, "tokens", export_format, export_user_id=True)
        assert {(row["deviceId"], row["token"]) for row in got_tokens} == {
            (row["deviceId"], row["token"]) for row in expected.tokens(accepted, export_user_id=True)}
        got_devices = run_export(app.id, "devices", export_format)
        if timed:
            assert expected.canonical(got_devices) == expected.canonical(
                as_read(expected.devices(accepted), "Device", export_format))
        assert {row["deviceId"] for row in got_devices} == set(reports)
        for row in got_devices:
            (only, *more) = reports[row["deviceId"]]
            if not more and "info" in only:
                assert row["info"] == only["info"]
        for campaign_type in {push["campaignType"] for push in pushes}:
            ids = sorted({push["campaignId"] for push in pushes if push["campaignType"] == campaign_type})
            got = run_export(app.id, "feedbackByCampaign", export_format, campaign_type=campaign_type,
                             campaign_ids=ids)
            want = expected.feedback(pushes, campaign_type)  # a row per device, campaign and action
            assert expected.canonical(got) == expected.canonical(as_read(want, "Push", export_format))


def check_stored(app, batch, status, answer):
    """What Collect answered is what it stored: every accepted record exports, in every type and format."""
    assert status == 200, answer
    refused = {rejection["index"] for rejection in answer["rejected"]}
    assert answer["accepted"] == len(batch) - len(refused)
    # What the service stored, as it read it (after its clock: whatever it accepted, this accepts too).
    now = dt.datetime.now(dt.UTC)
    accepted = [normalize(json.loads(json.dumps(record)), now=now) for index, record in enumerate(batch)
                if index not in refused]
    check_historical(app, [record for record in accepted if record["type"] in HISTORICAL_TYPES])
    check_snapshots(app, [record for record in accepted if record["type"] not in HISTORICAL_TYPES])


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(batch=st.lists(record_strategy, min_size=1, max_size=14))
def test_every_accepted_record_exports_in_every_type_and_format(fresh_app, batch):
    app = fresh_app()
    check_stored(app, batch, *post(app, batch))


@st.composite
def backend_batch(draw):
    """A backend's batch: 100 to 250 devices, each with a report, two tags, a token and push feedback drawn
    from pools of (often hostile) records, many devices sharing a snapshot bucket, half of them beside a
    historical record; then a second report and a tag change for some."""
    pools = {kind: draw(st.lists(record_of(kind), min_size=2, max_size=5)) for kind in kinds}
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    scripts = ["dev-", "d.3:x@y-", "устройство-", "端末-٣-", "e\u0301-"]
    batch = []
    for index in range(draw(st.integers(100, 250))):
        device = f"{rng.choice(scripts)}{index}"
        for kind in ("device", "tag", "tag", "token", "push"):
            batch.append(dict(rng.choice(pools[kind]), deviceId=device))
        if rng.random() < 0.5:
            batch.append(dict(rng.choice(pools[rng.choice(["activity", "event", "job", "crash"])]), deviceId=device))
    for record in [r for r in batch if r["type"] in ("device", "tag")][:60]:
        batch.append(dict(rng.choice(pools[record["type"]]), deviceId=record["deviceId"]))
    return batch


@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(batch=backend_batch())
def test_a_backends_batch_of_many_devices_exports_in_every_type_and_format(fresh_app, batch):
    app = fresh_app()
    check_stored(app, batch, *post(app, batch))
