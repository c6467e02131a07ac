"""The sample-data generator: plausible devices, sessions, activities, events, jobs, errors, crashes,
app-info tags, push tokens and push-campaign feedback, a day at a time, deterministic for a seed."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from shared.ingest import rawstore, snapshots
from shared.ingest.records import encode_line, format_time

ACTIVITIES = ("home", "level_select", "level_play", "shop", "settings", "leaderboard", "profile", "inbox")
EVENTS = ("button_click", "level_complete", "purchase", "ad_view", "share", "achievement", "tutorial_step")
ERRORS = ("network_timeout", "asset_missing", "payment_declined", "sync_conflict")
JOBS = ("background_sync", "asset_download", "push_register")
CRASHES = ("java.lang.NullPointerException", "SIGSEGV", "NSInvalidArgumentException", "OutOfMemoryError")
MODELS = (("Pixel 8", "Google", "Android", "14", 34), ("Galaxy S23", "samsung", "Android", "14", 34),
          ("iPhone 15", "Apple", "iOS", "17.4", None), ("Redmi Note 12", "Xiaomi", "Android", "13", 33),
          ("Moto g84", "motorola", "Android", "13", 33), ("iPhone SE", "Apple", "iOS", "16.7", None))
PLACES = (("FR", "Ile-de-France", "Paris"), ("US", "California", "San Francisco"), ("DE", "Bayern", "München"),
          ("JP", "Tokyo", "Shibuya"), ("BR", "São Paulo", "São Paulo"), ("IN", "Karnataka", "Bengaluru"))
CARRIERS = ("Orange", "Verizon", "Telekom", "NTT Docomo", "Vivo", "Jio")
CAMPAIGN_TYPES = ("Announcement", "DataPush", "NativePush", "Poll")


@dataclass(frozen=True)
class Plan:
    """What to generate: ``devices`` devices over the ``days`` UTC days ending ``last_day`` (inclusive)."""

    devices: int
    days: int
    last_day: dt.date
    seed: int = 1

    @property
    def day_list(self) -> list[dt.date]:
        return [self.last_day - dt.timedelta(days=offset) for offset in range(self.days - 1, -1, -1)]


def _device_id(seed: int, index: int) -> str:
    return random.Random(f"device:{seed}:{index}").getrandbits(128).to_bytes(16, "big").hex()


def _extras(rng: random.Random, name: str) -> dict:
    extras = {"screen": name, "level": rng.randint(1, 120)}
    if rng.random() < 0.3:
        extras["item"] = rng.choice(("sword", "shield", "gems_500", "extra_life", "skin, gold \"deluxe\""))
        extras["price"] = round(rng.uniform(0.99, 19.99), 2)
    if rng.random() < 0.1:
        extras["note"] = rng.choice(("première fois", "line1\nline2", "emoji 🎮", "a,b;c"))
    return extras


def _user_id(seed: int, index: int) -> str | None:
    return f"user-{index:07d}" if index % 3 else None


def day_records(plan: Plan, day: dt.date) -> Iterator[dict]:
    """The historical records of one day, every device."""
    for index in range(plan.devices):
        yield from device_day_records(plan, day, index)


def device_day_records(plan: Plan, day: dt.date, index: int) -> Iterator[dict]:
    """The historical records of one device on one day."""
    midnight = dt.datetime.combine(day, dt.time(), dt.UTC)
    rng = random.Random(f"day:{plan.seed}:{index}:{day.isoformat()}")
    device, user = _device_id(plan.seed, index), _user_id(plan.seed, index)
    common = {"deviceId": device, **({"userId": user} if user else {})}
    for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
        session = f"s-{rng.getrandbits(64):016x}"
        clock = midnight + dt.timedelta(seconds=rng.randint(0, 86_000))
        for _ in range(rng.randint(1, 5)):
            name = rng.choice(ACTIVITIES)
            end = clock + dt.timedelta(seconds=rng.randint(5, 300), milliseconds=rng.randint(0, 999))
            yield {"type": "activity", **common, "sessionId": session, "name": name,
                   "start": format_time(clock), "end": format_time(end), "extras": _extras(rng, name)}
            for _ in range(rng.randint(0, 3)):
                moment = clock + (end - clock) * rng.random()
                event = rng.choice(EVENTS)
                yield {"type": "event", **common, "sessionId": session, "name": event,
                       "timestamp": format_time(moment), "extras": _extras(rng, name)}
            if rng.random() < 0.04:
                yield {"type": "error", **common, "sessionId": session, "name": rng.choice(ERRORS),
                       "timestamp": format_time(end), "extras": {"code": rng.randint(400, 599)}}
            clock = end + dt.timedelta(seconds=rng.randint(0, 20))
    if rng.random() < 0.3:
        start = midnight + dt.timedelta(seconds=rng.randint(0, 86_000))
        yield {"type": "job", **common, "name": rng.choice(JOBS), "start": format_time(start),
               "end": format_time(start + dt.timedelta(seconds=rng.randint(1, 120))),
               "extras": {"items": rng.randint(1, 50)}}
    if rng.random() < 0.02:
        yield {"type": "crash", **common, "timestamp": format_time(midnight + dt.timedelta(
            seconds=rng.randint(0, 86_399))), "crashType": rng.choice(CRASHES),
            "message": "unexpected state", "stack": "at Game.update(Game.java:42)\nat Loop.run(Loop.java:7)"}


def snapshot_records(plan: Plan) -> Iterator[dict]:
    """Devices, tags, tokens and push feedback: the current state of every device."""
    for index in range(plan.devices):
        yield from device_snapshot_records(plan, index)


def device_snapshot_records(plan: Plan, index: int) -> Iterator[dict]:
    """One device's report, its tags, its token and its push feedback."""
    seen = format_time(dt.datetime.combine(plan.last_day, dt.time(12), dt.UTC))
    campaign_day = dt.datetime.combine(plan.last_day, dt.time(9), dt.UTC)
    rng = random.Random(f"snapshot:{plan.seed}:{index}")
    device, user = _device_id(plan.seed, index), _user_id(plan.seed, index)
    model, maker, firmware, version, api_level = rng.choice(MODELS)
    country, region, locality = rng.choice(PLACES)
    info = {"phoneModel": model, "phoneManufacturer": maker, "firmwareVersion": version,
            "firmwareName": firmware, "carrierCountry": country.lower(), "locale": f"{country.lower()}_{country}",
            "carrierName": rng.choice(CARRIERS), "networkType": rng.choice(("WIFI", "MOBILE")),
            "applicationVersionName": f"2.{rng.randint(0, 9)}.0", "applicationVersionCode": rng.randint(200, 299),
            "timeZoneOffset": rng.choice((0, 3600, -28800, 32400)), "serviceVersion": "4.1.0"}
    if api_level:
        info["androidAPILevel"] = api_level
    yield {"type": "device", "deviceId": device, "timestamp": seen, "info": info,
           "location": {"countrycode": country, "region": region, "locality": locality},
           "nativePushEnabled": rng.random() < 0.7}
    yield {"type": "tag", "deviceId": device, "name": "favorite_mode", "value": rng.choice(("solo", "coop"))}
    yield {"type": "tag", "deviceId": device, "name": "coins", "value": rng.randint(0, 100_000)}
    yield {"type": "tag", "deviceId": device, "name": "signup_date", "value": (
        plan.last_day - dt.timedelta(days=rng.randint(0, 700))).isoformat()}
    yield {"type": "tag", "deviceId": device, "name": "premium", "value": rng.random() < 0.1}
    token = {"type": "token", "deviceId": device, "token": f"tok-{rng.getrandbits(128):032x}",
             "platform": "apns" if firmware == "iOS" else "fcm"}
    if user:
        token["userId"] = user
    yield token
    for campaign in range(1, 4):
        if rng.random() < 0.5:
            continue
        kind = CAMPAIGN_TYPES[campaign % len(CAMPAIGN_TYPES)]
        moment = campaign_day + dt.timedelta(hours=campaign)
        for action in ("pushed", "replied", "actioned")[:rng.randint(1, 3)]:
            yield {"type": "push", "deviceId": device, "campaignId": campaign, "campaignType": kind,
                   "action": action, "timestamp": format_time(moment)}
            moment += dt.timedelta(minutes=rng.randint(1, 90))


def device_updates(plan: Plan, index: int) -> Iterator[dict]:
    """What a device sends after its first report, for about half of the devices: a later report without its
    location, a stale report (older than what is known, so it changes only firstSeen), a tag changed, a tag
    removed (set to null), a new push token."""
    rng = random.Random(f"updates:{plan.seed}:{index}")
    if rng.random() < 0.5:
        return
    device = _device_id(plan.seed, index)
    noon = dt.datetime.combine(plan.last_day, dt.time(12), dt.UTC)
    later, stale = noon + dt.timedelta(hours=rng.randint(1, 11)), noon - dt.timedelta(days=rng.randint(1, 30))
    yield {"type": "device", "deviceId": device, "timestamp": format_time(later),
           "info": {"phoneModel": "Pixel 9", "phoneManufacturer": "Google", "firmwareName": "Android",
                    "firmwareVersion": "15", "applicationVersionName": "3.0.0", "applicationVersionCode": 300},
           "nativePushEnabled": rng.random() < 0.5}
    yield {"type": "device", "deviceId": device, "timestamp": format_time(stale),
           "info": {"phoneModel": "stale", "phoneManufacturer": "stale"}, "location": {"countrycode": "XX"}}
    yield {"type": "tag", "deviceId": device, "name": "coins", "value": rng.randint(0, 100_000)}
    yield {"type": "tag", "deviceId": device, "name": "premium", "value": None}
    yield {"type": "token", "deviceId": device, "token": f"tok-{rng.getrandbits(128):032x}", "platform": "fcm"}


def backend_records(plan: Plan) -> Iterator[dict]:
    """Every record of the plan in the order a backend that forwards its users' data sends them (see
    ``backend_phases``)."""
    for phase in backend_phases(plan):
        yield from phase


def backend_phases(plan: Plan) -> list[Iterator[dict]]:
    """The plan as a backend sends it, in two phases: device by device, each one's history, report, tags, token
    and push feedback; then what devices sent later (``device_updates``), which must arrive after the first
    phase. Cut into batches of a few hundred, each batch holds dozens of devices, many in one snapshot bucket."""
    def first() -> Iterator[dict]:
        for index in range(plan.devices):
            for day in plan.day_list:
                yield from device_day_records(plan, day, index)
            yield from device_snapshot_records(plan, index)

    def later() -> Iterator[dict]:
        for index in range(plan.devices):
            yield from device_updates(plan, index)

    return [first(), later()]


def records(plan: Plan) -> Iterator[dict]:
    """Every record of the plan: each day's historical records, then the snapshot."""
    for day in plan.day_list:
        yield from day_records(plan, day)
    yield from snapshot_records(plan)


def load(app_id: str, plan: Plan, *, progress=None) -> dict[str, int]:
    """Writes the plan straight into the raw store (historical records and the snapshot log), as Collect would
    store them; returns counts."""
    counts: dict[str, int] = defaultdict(int)
    writer = rawstore.writer()
    for day in plan.day_list:
        partitions: dict[str, list[bytes]] = defaultdict(list)
        for record in day_records(plan, day):
            counts[record["type"]] += 1
            hour = rawstore.hour_of(record)
            partitions[rawstore.hour_prefix(app_id, record["type"], hour)].append(encode_line(record))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda item: writer.append_lines(*item), partitions.items()))
        if progress:
            progress(f"{day.isoformat()}: {sum(len(v) for v in partitions.values())} historical records")
    for kind, count in log_snapshot(app_id, snapshot_records(plan)).items():
        counts[kind] += count
    return dict(counts)


def log_snapshot(app_id: str, records: Iterable[dict]) -> dict[str, int]:
    """Appends snapshot records to the app's snapshot log as Collect would, 20,000 a batch; returns counts."""
    counts: dict[str, int] = defaultdict(int)
    writer = rawstore.writer()
    batch: list[dict] = []

    def log() -> None:
        writer.append_rows(rawstore.partition_rows(app_id, snapshots.log_rows(batch, dt.datetime.now(
            dt.UTC))))

    for record in records:
        counts[record["type"]] += 1
        batch.append(record)
        if len(batch) >= 20_000:
            log()
            batch = []
    if batch:
        log()
    return dict(counts)


def load_devices(app_id: str, devices: int, *, seed: int = 1) -> int:
    """The snapshot records of ``devices`` devices (report, tags, token, push feedback) into the app's snapshot
    log; returns how many records."""
    plan = Plan(devices=devices, days=1, last_day=dt.date(2026, 1, 15), seed=seed)
    return sum(log_snapshot(app_id, snapshot_records(plan)).values())


# A backend's batch: a few hundred records, gzip, each with its own Idempotency-Key so a retry is stored once.
BACKEND_BATCH = 500
POST_TRIES = 8


def post(base_url: str, collection: str, app: str, collect_key: str, plan: Plan, *,
         batch_size: int = BACKEND_BATCH, concurrency: int = 4, session=None) -> dict[str, int]:
    """Sends the plan through the Collect endpoint over HTTP as a backend does (``backend_phases``): gzip
    batches of ``batch_size`` records, ``concurrency`` at a time, each with an Idempotency-Key that its
    retries keep (after a lost answer, a 409, 429 or 5xx, waiting as Retry-After says). Returns counts of
    the records sent by type; raises if Collect refuses any."""
    import requests

    session = session or requests.Session()
    url = (f"{base_url}/subscriptions/sample/resourceGroups/sample/providers/Microsoft.MobileEngagement/"
           f"appcollections/{collection}/apps/{app}/devices/collect")
    counts: dict[str, int] = defaultdict(int)

    def send(batch: list[dict]) -> None:
        body = gzip.compress(json.dumps({"records": batch}).encode(), 5)
        headers = {"Authorization": f"Bearer {collect_key}", "Content-Type": "application/json",
                   "Content-Encoding": "gzip", "Idempotency-Key": str(uuid.uuid4())}
        for attempt in range(POST_TRIES):
            last = attempt + 1 == POST_TRIES
            try:
                response = session.post(url, params={"api-version": "2014-12-01"}, data=body, timeout=60,
                                        headers=headers)
            except requests.ConnectionError:
                if last:
                    raise
                time.sleep(0.5 * 2 ** attempt)
                continue
            if not last and (response.status_code in (409, 429) or response.status_code >= 500):
                time.sleep(float(response.headers.get("Retry-After", 0.5 * 2 ** attempt)))
                continue
            response.raise_for_status()
            result = response.json()
            if result["rejected"]:
                raise ValueError(f"Collect refused sample records: {result['rejected'][:3]}")
            return

    with ThreadPoolExecutor(concurrency) as pool:
        for phase in backend_phases(plan):
            pending = []
            batch: list[dict] = []
            for record in phase:
                counts[record["type"]] += 1
                batch.append(record)
                if len(batch) >= batch_size:
                    pending.append(pool.submit(send, batch))
                    batch = []
            if batch:
                pending.append(pool.submit(send, batch))
            for future in pending:  # the next phase starts once this one is stored
                future.result()
    return dict(counts)


def event_records(day: dt.date, count: int, *, seed: int = 1) -> Iterator[dict]:
    """``count`` events spread evenly over one UTC day, from a pool of devices, with realistic extras."""
    rng = random.Random(f"events:{seed}:{day.isoformat()}")
    midnight = dt.datetime.combine(day, dt.time(), dt.UTC)
    devices = [_device_id(seed, index) for index in range(max(1, count // 50))]
    step = 86_400 / count
    for index in range(count):
        device_index = rng.randrange(len(devices))
        moment = midnight + dt.timedelta(seconds=index * step)
        record: dict[str, Any] = {"type": "event", "deviceId": devices[device_index]}
        user = _user_id(seed, device_index)
        if user:
            record["userId"] = user
        record.update(sessionId=f"s-{device_index:08x}-{index // 2000:04x}", name=rng.choice(EVENTS),
                      timestamp=format_time(moment), extras=_extras(rng, rng.choice(ACTIVITIES)))
        yield record


def load_events(app_id: str, day: dt.date, count: int, *, seed: int = 1) -> int:
    """Writes ``event_records`` into the raw store, an hour partition at a time; returns the count."""
    writer = rawstore.writer()
    batch: list[bytes] = []
    prefix = ""
    written = 0
    with ThreadPoolExecutor(4) as pool:
        pending = []
        for record in event_records(day, count, seed=seed):
            hour_prefix = rawstore.hour_prefix(app_id, "event", rawstore.hour_of(record))
            if hour_prefix != prefix and batch:
                pending.append(pool.submit(writer.append_lines, prefix, batch))
                batch = []
            prefix = hour_prefix
            batch.append(encode_line(record))
            written += 1
        if batch:
            pending.append(pool.submit(writer.append_lines, prefix, batch))
        for future in pending:
            future.result()
    return written
