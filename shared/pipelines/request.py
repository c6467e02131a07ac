"""The body of `PUT .../exportPipelines/{name}`, checked: each refusal names the field and what to send instead,
as exportTasks' bodies are checked (shared.export.export_request, whose checks of the files' shape it reuses)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from shared.export import registry
from shared.export.export_request import (
    MAX_DESCRIPTION,
    choice,
    invalid,
    missing,
    parse_date,
    parse_shape,
    string,
    type_name,
)
from shared.pipelines.model import SHAPE_FIELDS
from shared.pipelines.periods import CADENCES, DAILY
from shared.platform.errors import InvalidInput

# Routes a pipeline can deliver: a period of history, or the snapshot as it is (feedback needs a campaign).
PIPELINE_ROUTES = tuple(route for route, spec in registry.ROUTES.items()
                        if spec.kind in (registry.HISTORICAL, registry.SNAPSHOT))
HOURLY_ROUTES = tuple(route for route in PIPELINE_ROUTES
                      if registry.EXPORT_TYPES[registry.ROUTES[route].export_type].hourly)
PIPELINE_FIELDS = ("route", "cadence", "settleMinutes", "startFrom", "lateDeliveryMinutes")
# A folder of the destination container that no pipeline may take: DeltaLake tables of one-shot exports.
RESERVED_NAMES = ("delta",)
MAX_SETTLE_MINUTES = 7 * 24 * 60
# Lowercase only: a pipeline's folder can never be an export type's (Event/{jobId}/...).
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}\Z")
NAME_RULE = "1-40 characters of a-z, 0-9 and '-', starting with a letter or digit"


@dataclass(frozen=True)
class PipelineRequest:
    """A checked PUT body: what the pipeline exports (route, shape), how often, and where (a SAS URL)."""

    route: str
    shape: dict[str, Any]
    cadence: str
    settle_minutes: int
    late_delivery_minutes: int
    start_from: dt.date | None
    container_url: str
    description: str


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidInput(f"the pipeline name {name[:60]!r} is not valid: {NAME_RULE}", code="InvalidPipelineName")
    if name in RESERVED_NAMES:
        raise InvalidInput(f"the pipeline name {name!r} is reserved (its folder holds the DeltaLake tables of export "
                           f"tasks); choose another name", code="InvalidPipelineName")
    return name


def _minutes(body: dict, field: str, default: int, low: int, high: int) -> int:
    value = body.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(field, f"must be a whole number of minutes from {low} to {high}, not {value!r}")
    return value


def parse_pipeline(body: Any, *, max_backfill_days: int, today: dt.date | None = None) -> PipelineRequest:
    """The checked body; raises InvalidInput naming the first wrong field."""
    if not isinstance(body, dict):
        raise InvalidInput(f"the request body must be a JSON object, not {type_name(body)}",
                           code="InvalidRequestContent")
    route_name = body.get("route")
    if route_name is None:
        raise missing("route", f"the data the pipeline delivers, one of {', '.join(PIPELINE_ROUTES)}")
    if route_name not in PIPELINE_ROUTES:
        raise invalid("route", f"must be one of {', '.join(PIPELINE_ROUTES)}, not {route_name!r}")
    route = registry.ROUTES[route_name]
    allowed = PIPELINE_FIELDS + tuple(f for f in route.fields if f not in ("startDate", "endDate"))
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise invalid(unknown[0], f"is not a field of a {route_name} pipeline (expected: {', '.join(allowed)})")
    cadence = choice(body, "cadence", tuple(CADENCES), DAILY)
    assert cadence is not None
    if cadence != DAILY and route_name not in HOURLY_ROUTES:
        raise invalid("cadence", f"hourly is for {', '.join(HOURLY_ROUTES)}; a {route_name} pipeline is daily")
    container_url = string(body, "containerUrl",
                           required_what="the URL of a blob container with a SAS token that can write")
    assert container_url is not None
    description = string(body, "description") or ""
    if len(description) > MAX_DESCRIPTION:
        raise invalid("description", f"is {len(description)} characters long; at most {MAX_DESCRIPTION}")
    cadence_minutes = int(CADENCES[cadence].total_seconds() // 60)
    settle = _minutes(body, "settleMinutes", 60, 0, MAX_SETTLE_MINUTES)
    late = _minutes(body, "lateDeliveryMinutes", cadence_minutes, 1, MAX_SETTLE_MINUTES)
    start_from = None
    if body.get("startFrom") is not None:
        start_from = parse_date(body, "startFrom")
        today = today or dt.datetime.now(dt.UTC).date()
        if start_from > today:
            raise invalid("startFrom", f"({start_from.isoformat()}) is in the future; a pipeline starts at today "
                                       f"({today.isoformat()}, UTC) at the latest: leave it out to start now")
        if (today - start_from).days > max_backfill_days:
            raise invalid("startFrom", f"({start_from.isoformat()}) is {(today - start_from).days} days ago; a "
                                       f"pipeline backfills at most {max_backfill_days} days")
        if route.kind != registry.HISTORICAL:
            raise invalid("startFrom", f"is for historical routes; a {route_name} pipeline delivers the snapshot as "
                                       f"it is at each period")
    shape = parse_shape(route, body)
    return PipelineRequest(route=route_name, shape={name: shape.get(name) for name in SHAPE_FIELDS},
                           cadence=cadence, settle_minutes=settle, late_delivery_minutes=late, start_from=start_from,
                           container_url=container_url, description=description)


# What a PUT on an existing pipeline may not change: the shape of the files already delivered and the periods
# they cover. The destination, the delays and the description may change.
FIXED_FIELDS = {"route": "route", "shape": "exportFormat, exportOptions, layout, fields or names",
                "cadence": "cadence", "start_from": "startFrom"}
