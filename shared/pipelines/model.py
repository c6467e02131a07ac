"""A pipeline as it is stored: its definition (what it exports, how often, where) and its progress (the next
period to deliver, what each delivered period's runs read, the run in flight, its failures and alerts).

One JSON document per pipeline, changed only under its ETag (shared.pipelines.store), so two timers or an API call
and a timer never both act on the same state."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from shared.export import registry
from shared.export.destination import SealedDestination
from shared.export.spec import ExportScope, RunTag, frozen
from shared.pipelines.periods import CADENCES, Period, parse_label
from shared.platform.times import iso, parse_iso

ACTIVE, PAUSED, FAILING = "Active", "Paused", "Failing"
# Alerts: each is sent once when it starts and once when it ends (shared.pipelines.driver).
RUN_FAILED, BEHIND, SAS_EXPIRING = "runFailed", "behind", "sasExpiring"
# A period not delivered this long after it was due raises the alert that the pipeline is behind.
BEHIND_AFTER = dt.timedelta(hours=1)
# The fields of the scope that a pipeline keeps for all its runs (the range is each run's).
SHAPE_FIELDS = ("export_format", "export_user_id", "projection", "name_filter", "layout")


@dataclass(frozen=True)
class InFlight:
    """The run under way: its sequence number, the export task of its current attempt, and what it delivers and
    reads (enough to make its task and its history row again after a crash)."""

    sequence: int
    job_id: str
    attempt: int
    periods: tuple[str, ...]
    late: bool
    planned: dt.datetime
    raw_bytes: int = 0
    newest_acknowledged: dt.datetime | None = None
    replaces: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"sequence": self.sequence, "jobId": self.job_id, "attempt": self.attempt,
                "periods": list(self.periods), "late": self.late, "planned": iso(self.planned),
                "rawBytes": self.raw_bytes, "newestAcknowledged": iso(self.newest_acknowledged),
                "replaces": list(self.replaces)}

    @classmethod
    def from_json(cls, doc: dict) -> InFlight:
        return cls(doc["sequence"], doc["jobId"], doc["attempt"], tuple(doc["periods"]), doc["late"],
                   parse_iso(doc["planned"]), doc.get("rawBytes", 0),  # type: ignore[arg-type]
                   parse_iso(doc.get("newestAcknowledged")), tuple(doc.get("replaces", ())))


@dataclass
class Pipeline:
    app_id: str
    name: str
    uid: str  # random at creation: a pipeline deleted and made again under the same name is another pipeline
    route: str
    shape: dict[str, Any]  # SHAPE_FIELDS of its scope
    cadence: str
    settle_minutes: int
    late_delivery_minutes: int
    first_period: dt.datetime  # the start of the first period it delivers
    created: dt.datetime
    updated: dt.datetime
    destination: SealedDestination | None = None  # None for an operator's pipeline (operator_container)
    operator_container: str | None = None  # EXPORT_SCHEDULES: a container of the destination storage
    start_from: dt.date | None = None
    description: str = ""
    paused: bool = False
    next_period: dt.datetime | None = None  # the start of the next period whose first run is due (first_period)
    sequence: int = 0  # of the last run planned
    # label -> the key of the marks of the last run that read the period (what of each raw blob it had read)
    periods: dict[str, str] = field(default_factory=dict)
    late_looked_at: dt.datetime | None = None  # when its last look for late records started
    in_flight: InFlight | None = None
    failure: dict[str, Any] | None = None  # {"reason", "since", "retryAt"} of the run in flight's failed attempt
    alerts: dict[str, str] = field(default_factory=dict)  # active alert -> its reason
    last_delivered: dict[str, Any] | None = None  # {"period", "run", "at"} of the newest period first delivered
    outbox: list[dict[str, Any]] = field(default_factory=list)  # alert events saved with the change, not yet sent
    resumed: dt.datetime | None = None  # when it was last resumed
    etag: str | None = field(default=None, compare=False)

    @property
    def export_type(self) -> str:
        return registry.ROUTES[self.route].export_type

    @property
    def step(self) -> dt.timedelta:
        return CADENCES[self.cadence]

    @property
    def settle(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.settle_minutes)

    @property
    def late_delivery(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.late_delivery_minutes)

    @property
    def historical(self) -> bool:
        return registry.ROUTES[self.route].kind == registry.HISTORICAL

    @property
    def next(self) -> Period:
        return Period(self.next_period or self.first_period, self.cadence)

    def period(self, label: str) -> Period:
        return parse_label(label, self.cadence)

    def run_name(self, sequence: int) -> str:
        return f"run-{sequence:06d}-{self.uid[:8]}"

    def run_tag(self, sequence: int, periods: tuple[str, ...], late: bool, replaces: tuple[str, ...] = ()) -> RunTag:
        """What the export task of run ``sequence`` is (shared.export.spec.RunTag)."""
        return RunTag(pipeline=self.name, run=self.run_name(sequence), sequence=sequence, periods=periods, late=late,
                      replaces=replaces)

    @staticmethod
    def sequence_of(marks_key: str) -> int:
        """The run sequence of a period's marks key ("{sequence:06d}-{nonce}")."""
        return int(marks_key.split("-")[0])

    def scope(self, periods: list[Period]) -> ExportScope:
        """The scope of a run delivering ``periods``: the pipeline's shape over their range (a snapshot: none)."""
        values: dict[str, Any] = {name: frozen(value) for name, value in self.shape.items() if value is not None}
        if self.historical and periods:
            values.update(start_date=min(p.day for p in periods), end_date=max(p.day for p in periods))
            if len(periods) == 1 and periods[0].hour is not None:
                values["hour"] = periods[0].hour
        return ExportScope(export_type=self.export_type, **values)

    def oldest_undelivered(self) -> Period:
        """The oldest period not delivered yet: the first run's in flight, or the next one."""
        run = self.in_flight
        if run is not None and not run.late:
            return self.period(run.periods[0])
        return self.next

    def current_alerts(self, now: dt.datetime) -> dict[str, str]:
        """The alerts that hold now, each with its reason (shared.pipelines.driver sends their changes)."""
        found: dict[str, str] = {}
        if self.failure is not None and self.in_flight is not None:
            found[RUN_FAILED] = (f"run {self.run_name(self.in_flight.sequence)} of "
                                 f"{', '.join(self.in_flight.periods)} failed: {self.failure['reason']}")
        oldest = self.oldest_undelivered()
        # A period is late from when it was due, or from when the pipeline could first deliver it (a backfill, a
        # resume), whichever is later.
        due = max([oldest.due(self.settle), self.created] + ([self.resumed] if self.resumed else []))
        if not self.paused and now >= due + BEHIND_AFTER:
            found[BEHIND] = f"period {oldest.label} was due at {iso(due)} and is not delivered yet"
        destination = self.destination
        if destination is not None and destination.expires <= now + self.settle + self.step:
            verb = "expired" if destination.expires <= now else "expires"
            found[SAS_EXPIRING] = (f"the destination's SAS {verb} at {iso(destination.expires)}, before the next "
                                   f"period can be delivered; PUT the pipeline again with a containerUrl whose SAS "
                                   f"lasts longer")
        return found

    def state(self, holding: dict[str, str]) -> tuple[str, list[str]]:
        """Its state and, when Failing, why, given the alerts that hold."""
        if self.paused:
            return PAUSED, []
        reasons = [holding[kind] for kind in (RUN_FAILED, SAS_EXPIRING) if kind in holding]
        return (FAILING, reasons) if reasons else (ACTIVE, [])

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app_id, "name": self.name, "uid": self.uid, "route": self.route, "shape": self.shape,
            "cadence": self.cadence, "settleMinutes": self.settle_minutes,
            "lateDeliveryMinutes": self.late_delivery_minutes, "firstPeriod": iso(self.first_period),
            "created": iso(self.created), "updated": iso(self.updated),
            "destination": None if self.destination is None else {
                "url": self.destination.url, "sealedSas": self.destination.sealed_sas,
                "expires": iso(self.destination.expires)},
            "operatorContainer": self.operator_container,
            "startFrom": self.start_from.isoformat() if self.start_from else None,
            "description": self.description, "paused": self.paused, "nextPeriod": iso(self.next_period),
            "sequence": self.sequence, "periods": self.periods, "lateLookedAt": iso(self.late_looked_at),
            "inFlight": self.in_flight.to_json() if self.in_flight else None, "failure": self.failure,
            "alerts": self.alerts, "lastDelivered": self.last_delivered, "outbox": self.outbox,
            "resumed": iso(self.resumed)}

    @classmethod
    def from_json(cls, doc: dict[str, Any], etag: str | None = None) -> Pipeline:
        sealed = doc.get("destination")
        destination = None if sealed is None else SealedDestination(
            url=sealed["url"], sealed_sas=sealed["sealedSas"], expires=parse_iso(sealed["expires"]))  # type: ignore[arg-type]
        return cls(
            app_id=doc["app"], name=doc["name"], uid=doc["uid"], route=doc["route"], shape=doc["shape"],
            cadence=doc["cadence"], settle_minutes=doc["settleMinutes"],
            late_delivery_minutes=doc["lateDeliveryMinutes"], first_period=parse_iso(doc["firstPeriod"]),  # type: ignore[arg-type]
            created=parse_iso(doc["created"]), updated=parse_iso(doc["updated"]),  # type: ignore[arg-type]
            destination=destination, operator_container=doc.get("operatorContainer"),
            start_from=dt.date.fromisoformat(doc["startFrom"]) if doc.get("startFrom") else None,
            description=doc.get("description", ""), paused=doc.get("paused", False),
            next_period=parse_iso(doc.get("nextPeriod")), sequence=doc.get("sequence", 0),
            periods=dict(doc.get("periods") or {}), late_looked_at=parse_iso(doc.get("lateLookedAt")),
            in_flight=InFlight.from_json(doc["inFlight"]) if doc.get("inFlight") else None,
            failure=doc.get("failure"), alerts=dict(doc.get("alerts") or {}),
            last_delivered=doc.get("lastDelivered"), outbox=list(doc.get("outbox") or []),
            resumed=parse_iso(doc.get("resumed")), etag=etag)

    def copy(self) -> Pipeline:
        return replace(self, shape=dict(self.shape), periods=dict(self.periods), alerts=dict(self.alerts),
                       outbox=list(self.outbox))

    def to_result(self, now: dt.datetime) -> dict[str, Any]:
        """The pipeline as the API shows it at ``now``: its container URL without the SAS, its state and progress."""
        shape = self.shape
        holding = self.current_alerts(now)
        state, reasons = self.state(holding)
        result: dict[str, Any] = {
            "name": self.name, "route": self.route, "exportType": self.export_type,
            "exportFormat": shape["export_format"], "cadence": self.cadence, "settleMinutes": self.settle_minutes,
            "lateDeliveryMinutes": self.late_delivery_minutes, "description": self.description,
            "state": state, "dateCreated": iso(self.created), "dateUpdated": iso(self.updated),
            "firstPeriod": Period(self.first_period, self.cadence).label, "nextPeriod": self.next.label,
            "managedBy": "operator" if self.operator_container else "app",
        }
        if reasons:
            result["stateDetails"] = "; ".join(reasons)
        if holding:
            result["alerts"] = [{"kind": kind, "reason": reason} for kind, reason in sorted(holding.items())]
        if self.destination is not None:
            result["containerUrl"] = self.destination.url
            result["sasExpires"] = iso(self.destination.expires)
        else:
            result["container"] = self.operator_container
        if self.start_from is not None:
            result["startFrom"] = self.start_from.isoformat()
        if shape.get("layout") and shape["layout"] != "flat":
            result["layout"] = shape["layout"]
        if shape.get("projection") is not None:
            result["fields"] = list(shape["projection"])
        if shape.get("name_filter") is not None:
            result["names"] = {key: list(names) for key, names in shape["name_filter"].items()}
        if self.route == "tokens":
            result["exportOptions"] = {"exportUserId": bool(shape.get("export_user_id"))}
        if self.last_delivered:
            result["lastDeliveredPeriod"] = self.last_delivered["period"]
            result["lastDeliveredAt"] = self.last_delivered["at"]
        if self.late_looked_at is not None:
            result["lateCheckedAt"] = iso(self.late_looked_at)
        if self.in_flight is not None:
            result["runInFlight"] = {"run": self.run_name(self.in_flight.sequence), "taskId": self.in_flight.job_id,
                                     "periods": list(self.in_flight.periods), "late": self.in_flight.late}
        return result
