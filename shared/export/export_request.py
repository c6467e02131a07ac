"""The export routes of the 2014-12-01 contract and the checking of their request bodies.

Each check names the field and what is wrong with it; unknown fields are refused too, because a misspelt
optional field (``exportformat``) would otherwise silently export in the default format.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from shared.export import registry
from shared.export.registry import FEEDBACK_BY_CAMPAIGN, FEEDBACK_BY_DATE, HISTORICAL, ExportRoute
from shared.export.spec import HIVE, ExportScope
from shared.ingest.records import MAX_NAME
from shared.platform.errors import InvalidInput

EXPORT_FORMATS = tuple(registry.EXPORT_FORMATS)
CAMPAIGN_TYPES = ("Announcement", "DataPush", "NativePush", "Poll")
MAX_DESCRIPTION = 1024
MAX_CAMPAIGN_IDS = 1000
MAX_NAMES = 1000
MAX_NAME_LENGTH = MAX_NAME
_FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
_MIDNIGHT = re.compile(r"^(\d{4}-\d{2}-\d{2})T00:00:00(?:\.0+)?(?:Z|[+-]00:00)\Z")


@dataclass(frozen=True)
class ExportRequest:
    """A checked request: its route, where it goes and its description, and what it exports (its scope)."""

    route: ExportRoute
    container_url: str
    scope: ExportScope
    description: str = ""

    @classmethod
    def of(cls, *, route: ExportRoute, container_url: str, description: str = "", **scope: Any) -> ExportRequest:
        """The request of ``route`` with the scope's fields given by name (the export type is the route's)."""
        return cls(route, container_url, ExportScope(export_type=route.export_type, **scope), description)


def invalid(field: str, problem: str) -> InvalidInput:
    return InvalidInput(f"{field} {problem}")


def missing(field: str, what: str) -> InvalidInput:
    return InvalidInput(f"{field} is required: {what}", code="MissingParameter")


def type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number",
            str: "a string", type(None): "null"}.get(type(value), type(value).__name__)


def string(body: dict, field: str, *, required_what: str | None = None) -> str | None:
    value = body.get(field)
    if value is None:
        if required_what:
            raise missing(field, required_what)
        return None
    if not isinstance(value, str):
        raise invalid(field, f"must be a string, not {type_name(value)}")
    return value


def _required_string(body: dict, field: str, what: str) -> str:
    value = string(body, field, required_what=what)
    if value is None:  # _string raises for a missing required field; this tells the type checker so
        raise missing(field, what)
    return value


def choice(body: dict, field: str, choices: tuple[str, ...], default: str | None) -> str | None:
    value = string(body, field, required_what=None if default is not None else f"one of {', '.join(choices)}")
    if value is None:
        return default
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise invalid(field, f"must be one of {', '.join(choices)}, not {value!r}")


def parse_date(body: dict, field: str) -> dt.date:
    value = _required_string(body, field, "a day as YYYY-MM-DD (RFC 3339 full-date, UTC)")
    midnight = _MIDNIGHT.match(value)
    text = midnight.group(1) if midnight else value
    if not _FULL_DATE.match(text):
        raise invalid(field, f"must be a day as YYYY-MM-DD (RFC 3339 full-date), not {value!r}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise invalid(field, f"is not a real day: {value!r}") from None


def utc_datetime(value: str) -> dt.datetime:
    """An RFC 3339 date-time with a zone, in UTC; raises ValueError saying what is wrong with ``value``."""
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"must be an RFC 3339 date-time such as 2015-01-31T00:00:00Z, not {value!r}") from None
    if "T" not in value.upper() or moment.tzinfo is None:
        raise ValueError(f"must be a date-time with a time zone (…T00:00:00Z), not {value!r}")
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(f"is outside the years 1 to 9999 once in UTC: {value!r}") from None


def parse_time(body: dict, field: str) -> dt.datetime:
    value = _required_string(body, field, "an RFC 3339 date-time with a zone, such as 2015-01-31T00:00:00Z")
    try:
        return utc_datetime(value)
    except ValueError as problem:
        raise invalid(field, str(problem)) from None


def _range_checks(first_field: str, first, last_field: str, last, max_days: int, unit_days: float) -> None:
    if first > last:
        raise invalid(first_field, f"({first.isoformat()}) is after {last_field} ({last.isoformat()})")
    if unit_days > max_days:
        raise invalid(last_field, f"makes a range of {unit_days:g} days; at most {max_days} days can be "
                                   f"exported in one task")


def parse_request(route: ExportRoute, body: Any, *, max_range_days: int,
                  today: dt.date | None = None) -> ExportRequest:
    """The checked request for ``route``; raises InvalidInput naming the first wrong field."""
    if not isinstance(body, dict):
        raise InvalidInput(f"the request body must be a JSON object, not {type_name(body)}",
                           code="InvalidRequestContent")
    unknown = sorted(set(body) - set(route.fields))
    if unknown:
        raise invalid(unknown[0], f"is not a parameter of exportTasks/{route.route} "
                                   f"(expected: {', '.join(route.fields)})")
    today = today or dt.datetime.now(dt.UTC).date()
    values: dict[str, Any] = {"route": route}
    values["container_url"] = string(
        body, "containerUrl", required_what="the URL of a blob container with a SAS token that can write")
    description = string(body, "description") or ""
    if len(description) > MAX_DESCRIPTION:
        raise invalid("description", f"is {len(description)} characters long; at most {MAX_DESCRIPTION}")
    values["description"] = description
    if route.kind == HISTORICAL:
        start, end = parse_date(body, "startDate"), parse_date(body, "endDate")
        if end > today:
            raise invalid("endDate", f"({end.isoformat()}) is in the future; the last day that can be exported "
                                      f"is today, {today.isoformat()} (UTC)")
        _range_checks("startDate", start, "endDate", end, max_range_days, (end - start).days + 1)
        values.update(start_date=start, end_date=end)
    elif route.kind == FEEDBACK_BY_DATE:
        values["campaign_type"] = choice(body, "campaignType", CAMPAIGN_TYPES, None)
        start, end = parse_time(body, "campaignWindowStart"), parse_time(body, "campaignWindowEnd")
        _range_checks("campaignWindowStart", start, "campaignWindowEnd", end, max_range_days,
                      (end - start).total_seconds() / 86400)
        values.update(campaign_window_start=start, campaign_window_end=end)
    elif route.kind == FEEDBACK_BY_CAMPAIGN:
        values["campaign_type"] = choice(body, "campaignType", CAMPAIGN_TYPES, None)
        ids = body.get("campaignIds")
        if ids is None:
            raise missing("campaignIds", "an array of campaign ids (integers)")
        if not isinstance(ids, list) or not ids:
            raise invalid("campaignIds", f"must be a non-empty array of integers, not {type_name(ids)}"
                                          if not isinstance(ids, list) else "must not be empty")
        if len(ids) > MAX_CAMPAIGN_IDS:
            raise invalid("campaignIds", f"has {len(ids)} ids; at most {MAX_CAMPAIGN_IDS}")
        for index, value in enumerate(ids):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise invalid(f"campaignIds[{index}]", f"must be a positive integer, not {value!r}")
        values["campaign_ids"] = tuple(sorted(set(ids)))
    return ExportRequest.of(**values, **parse_shape(route, body))


def parse_shape(route: ExportRoute, body: dict) -> dict[str, Any]:
    """How a request for ``route`` writes its files (scope fields by name): its exportFormat, exportOptions,
    layout, fields and names, checked as exportTasks and exportPipelines both take them."""
    values: dict[str, Any] = {"export_format": choice(body, "exportFormat", EXPORT_FORMATS, registry.DEFAULT_FORMAT)}
    options = body.get("exportOptions")
    if options is not None:
        if not isinstance(options, dict):
            raise invalid("exportOptions", f"must be an object, not {type_name(options)}")
        unknown = sorted(set(options) - set(route.options))
        if unknown:
            raise invalid(f"exportOptions.{unknown[0]}",
                           f"is not an export option (expected: {', '.join(route.options)})")
        flag = options.get("exportUserId", False)
        if flag is not None and not isinstance(flag, bool):
            raise invalid("exportOptions.exportUserId", f"must be true or false, not {type_name(flag)}")
        values["export_user_id"] = bool(flag)
    if "layout" in route.fields:
        values["layout"] = choice(body, "layout", registry.LAYOUTS, registry.LAYOUTS[0])
        if registry.export_format(values["export_format"]).table:
            if body.get("layout") not in (None, HIVE):
                raise invalid("layout", f"must be {HIVE} (or left out) with exportFormat {values['export_format']}: "
                                        f"its tables are partitioned by date")
            values["layout"] = HIVE
    if body.get("fields") is not None:
        values["projection"] = _projection(route, body["fields"], bool(values.get("export_user_id")))
    if body.get("names") is not None:
        values["name_filter"] = _name_filter(route, body["names"])
    return values


def _projection(route: ExportRoute, fields: Any, export_user_id: bool) -> tuple[str, ...]:
    export_type = registry.export_type(route.export_type)
    if not isinstance(fields, list) or not fields:
        raise invalid("fields", f"must be a non-empty array of column names of {export_type.name} exports "
                                 f"({', '.join(export_type.columns)}), not "
                                 f"{type_name(fields) if not isinstance(fields, list) else 'an empty array'}")
    for index, name in enumerate(fields):
        if not isinstance(name, str):
            raise invalid(f"fields[{index}]", f"must be a column name (a string), not {type_name(name)}")
        if name not in export_type.columns:
            raise invalid(f"fields[{index}]", f"({name!r}) is not a column of {export_type.name} exports; columns "
                                               f"are {', '.join(export_type.columns)}")
        if name == export_type.user_id_column and not export_user_id:
            raise invalid(f"fields[{index}]", f"({name!r}) is only exported with exportOptions.exportUserId true")
    return tuple(column for column in export_type.columns if column in fields)


def _name_filter(route: ExportRoute, names: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(names, dict) or len(names) != 1 or next(iter(names)) not in ("include", "exclude"):
        raise invalid("names", 'must be an object with one key, "include" or "exclude", whose value is an array of '
                                'names, such as {"include": ["purchase"]}')
    (key, listed), = names.items()
    if not isinstance(listed, list) or not listed:
        raise invalid(f"names.{key}", "must be a non-empty array of names")
    if len(listed) > MAX_NAMES:
        raise invalid(f"names.{key}", f"has {len(listed)} names; at most {MAX_NAMES}")
    for index, name in enumerate(listed):
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
            raise invalid(f"names.{key}[{index}]", f"must be a name of 1 to {MAX_NAME_LENGTH} characters, not "
                                                    f"{name!r}")
    return {key: tuple(sorted(set(listed)))}
