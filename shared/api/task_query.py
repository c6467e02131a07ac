"""`$orderby` and `$filter` of the export task list, read into a ``joblist.JobQuery``.

`$orderby` is the 2014-12-01 contract's: `{property} [asc|desc]`, one property of taskId, errorDetails,
dateCreated, taskStatus; asc by default, and `taskId asc` when absent. `$filter` is this service's extension,
a small OData subset: `state eq 'Failed'`, `exportType eq 'Event'`, `dateCreated ge|gt|le|lt <date-time>`,
joined with `and`. Every refusal names what is not supported and what is.
"""

from __future__ import annotations

import datetime as dt
import re

from shared.api.errors import BadRequest
from shared.export.export_request import utc_datetime
from shared.export.registry import EXPORT_TYPES as TYPES
from shared.tasks.joblist import JobQuery
from shared.tasks.jobs import STATES

ORDER_PROPERTIES = {"taskid": "taskId", "errordetails": "errorDetails", "datecreated": "dateCreated",
                    "taskstatus": "taskStatus"}
EXPORT_TYPES = tuple(TYPES)
FILTER_FIELDS = ("state", "exportType", "dateCreated")
_COMPARISONS = ("eq", "ge", "gt", "le", "lt")
_CLAUSE = re.compile(r"\s*([A-Za-z]+)\s+([A-Za-z]+)\s+('(?:[^']|'')*'|\S+)\s*")


def _invalid(name: str, problem: str) -> BadRequest:
    return BadRequest(f"{name} {problem}", code="InvalidParameter")


def parse_orderby(text: str | None) -> tuple:
    """(property, descending) of an `$orderby` value."""
    if text is None or not text.strip():
        return "taskId", False
    words = text.split()
    prop = ORDER_PROPERTIES.get(words[0].lower())
    direction = words[1].lower() if len(words) == 2 else "asc"
    if prop is None or len(words) > 2 or direction not in ("asc", "desc"):
        raise _invalid("$orderby", f"must be one of {', '.join(ORDER_PROPERTIES.values())}, optionally followed by "
                                   f"asc or desc, not {text[:80]!r}")
    return prop, direction == "desc"


def _clauses(text: str) -> list[str]:
    """The clauses of a filter split on `and`, outside quoted strings."""
    parts, current = [], ""
    for token in re.split(r"('(?:[^']|'')*'|\s+)", text):
        if token.startswith("'"):
            current += token
            continue
        if token.strip().lower() in ("or", "not") or "(" in token or ")" in token:
            raise _invalid("$filter", f"supports only clauses joined with 'and' (no {token.strip()!r}, and no "
                                      f"parentheses)")
        if token.strip().lower() == "and":
            parts.append(current)
            current = ""
        else:
            current += token
    parts.append(current)
    if any(not part.strip() for part in parts):
        raise _invalid("$filter", "has an empty clause: write clauses such as state eq 'Failed' joined by 'and'")
    return parts


def _text_value(field: str, literal: str, choices: tuple) -> str:
    if not (literal.startswith("'") and literal.endswith("'") and len(literal) >= 2):
        raise _invalid("$filter", f"compares {field} with {literal[:40]!r}; quote the value, as in "
                                  f"{field} eq '{choices[0]}'")
    value = literal[1:-1].replace("''", "'")
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise _invalid("$filter", f"compares {field} with {value[:40]!r}, which is none of {', '.join(choices)}")


def _time_value(literal: str) -> dt.datetime:
    text = literal[1:-1] if literal.startswith("'") and literal.endswith("'") else literal
    try:
        return utc_datetime(text)
    except ValueError:
        raise _invalid("$filter", f"compares dateCreated with {text[:40]!r}; give an RFC 3339 date-time with a "
                                  f"zone, such as 2026-01-31T00:00:00Z") from None


def parse_filter(text: str | None, query: JobQuery) -> JobQuery:
    """``query`` narrowed by an `$filter` value."""
    if text is None or not text.strip():
        return query
    state = export_type = None
    bounds = []
    for clause in _clauses(text):
        match = _CLAUSE.fullmatch(clause)
        if not match:
            raise _invalid("$filter", f"clause {clause.strip()[:60]!r} is not '<field> <operator> <value>'")
        field, operator, literal = match.group(1), match.group(2).lower(), match.group(3)
        known = next((name for name in FILTER_FIELDS if name.lower() == field.lower()), None)
        if known is None:
            raise _invalid("$filter", f"cannot filter on {field!r}; the fields are {', '.join(FILTER_FIELDS)}")
        allowed = _COMPARISONS if known == "dateCreated" else ("eq",)
        if operator not in allowed:
            raise _invalid("$filter", f"compares {known} with {operator!r}; {known} takes {', '.join(allowed)}")
        if known == "state":
            state = _text_value(known, literal, STATES)
        elif known == "exportType":
            export_type = _text_value(known, literal, EXPORT_TYPES)
        else:
            bounds.append((operator, _time_value(literal)))
    return JobQuery(order=query.order, descending=query.descending, state=state, export_type=export_type,
                    created=tuple(bounds))
