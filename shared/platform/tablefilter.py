"""OData filters for Table queries, built from typed values in one place.

Every filter this service sends is built here, with its values written as OData literals, and none goes
through the SDK's ``parameters=`` substitution: that substitution splits the filter text on single spaces and
reads each word's first character, so two spaces in a row raise an IndexError, and a parameter glued to a
parenthesis (``@k)``) is looked up under the wrong name. A filter built from ``compare``, ``all_of`` and
``any_of`` holds any key a user can send (quotes, spaces, ``@``, parentheses, non-ASCII) as a quoted literal.
"""

from __future__ import annotations

import datetime as dt

Value = str | bool | int | float | dt.datetime
OPERATORS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_INT32 = range(-2 ** 31, 2 ** 31)


def literal(value: Value) -> str:
    """``value`` as an OData literal: text quoted (a quote doubled), Int64 with its ``L``, times as datetime."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value in _INT32 else f"{value}L"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("a time in a table filter must carry its time zone")
        return f"datetime'{value.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"a table filter cannot compare with a {type(value).__name__}")


def compare(prop: str, operator: str, value: Value) -> str:
    """``prop operator value``; ``prop`` is one of our column names, never user input."""
    if operator not in OPERATORS:
        raise ValueError(f"unknown OData comparison {operator!r}")
    if not prop.isidentifier():
        raise ValueError(f"{prop!r} is not a table property name")
    return f"{prop} {operator} {literal(value)}"


def eq(prop: str, value: Value) -> str:
    return compare(prop, "eq", value)


def all_of(*clauses: str) -> str:
    """The clauses joined with ``and``, each in parentheses (empty clauses left out)."""
    return _join("and", clauses)


def any_of(*clauses: str) -> str:
    """The clauses joined with ``or``, each in parentheses (empty clauses left out)."""
    return _join("or", clauses)


def _join(word: str, clauses) -> str:
    kept = [clause for clause in clauses if clause]
    if len(kept) == 1:
        return kept[0]
    return f" {word} ".join(f"({clause})" for clause in kept)
