"""Route templates and timer schedules, as the Functions host reads them."""

from __future__ import annotations

import datetime as dt

import pytest

from devhost.listeners import blob_pattern
from devhost.ncrontab import Schedule
from devhost.routes import RouteTemplate

# Runs without Azurite or a host: `make test-pure`.
pytestmark = pytest.mark.pure

UTC = dt.UTC


def test_route_parameters_optional_and_constraints():
    route = RouteTemplate("apps/{app}/items/{id:int?}")
    assert route.match("apps/a1/items/42") == {"app": "a1", "id": "42"}
    assert route.match("APPS/a1/Items") == {"app": "a1"}
    assert route.match("apps/a1/items/x") is None
    assert route.match("apps/a1") is None


def test_catch_all_matches_nothing_too():
    route = RouteTemplate("x/{a}/tasks/{*rest}")
    assert route.match("x/1/tasks") == {"a": "1"}
    assert route.match("x/1/tasks/p/q") == {"a": "1", "rest": "p/q"}


def test_literal_routes_sort_before_parameter_routes():
    routes = sorted([RouteTemplate("a/{b}"), RouteTemplate("a/{*rest}"), RouteTemplate("a/fixed")],
                    key=lambda r: r.sort_key)
    assert [r.template for r in routes] == ["a/fixed", "a/{b}", "a/{*rest}"]


def test_bad_route_templates_are_refused():
    with pytest.raises(ValueError, match="catch-all parameter must be the last"):
        RouteTemplate("{*rest}/x")
    with pytest.raises(ValueError, match="not supported"):
        RouteTemplate("a/{b:regex}")


@pytest.mark.parametrize("expression, after, expected", [
    ("0 */5 * * * *", "2026-01-01T10:03:20", "2026-01-01T10:05:00"),
    ("0 30 9 * * 1-5", "2026-11-20T09:30:00", "2026-11-23T09:30:00"),  # Friday -> Monday
    ("15 0 0 1 jan *", "2026-06-01T00:00:00", "2027-01-01T00:00:15"),
    ("*/10 * * * * *", "2026-01-01T00:00:05", "2026-01-01T00:00:10"),
    ("0 0 12 29 2 *", "2026-03-01T00:00:00", "2028-02-29T12:00:00"),
    ("00:00:30", "2026-01-01T00:00:05", "2026-01-01T00:00:35"),
])
def test_next_occurrence(expression, after, expected):
    start = dt.datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert Schedule(expression).next_after(start) == dt.datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize("expression, message", [
    ("0 61 * * * *", "minute field: 61 is outside 0-59"),
    ("* * *", "neither a 6-field NCRONTAB"),
    ("0 0 0 31 2 *", "never fires"),
    ("0 10-5 * * * *", "runs backwards"),
])
def test_bad_schedules_are_refused(expression, message):
    with pytest.raises(ValueError, match=message):
        Schedule(expression).next_after(dt.datetime(2026, 1, 1, tzinfo=UTC))


def test_blob_trigger_paths_bind_names_and_keep_a_listing_prefix():
    container, pattern, prefix = blob_pattern("exports/{type}/{job}/manifest.json")
    assert container == "exports"
    assert prefix == ""
    assert pattern.match("Event/abc/manifest.json").groupdict() == {"type": "Event", "job": "abc"}
    assert pattern.match("Event/abc/part-00000.csv.gz") is None
    assert blob_pattern("c/in/{name}.txt")[2] == "in/"
