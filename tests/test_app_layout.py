"""The app's folders load under the real Functions host: host.json, every function.json, settings."""

from __future__ import annotations

import json
import os

import pytest
from conftest import REPO_ROOT

from devhost.appmodel import AppLoadError, load_functions, load_host_config, parse_timespan, validate_function_json

# Runs without Azurite or a host: `make test-pure`.
pytestmark = pytest.mark.pure

FUNCTION_JSONS = sorted(
    os.path.join(REPO_ROOT, entry, "function.json") for entry in os.listdir(REPO_ROOT)
    if os.path.isfile(os.path.join(REPO_ROOT, entry, "function.json")))


def test_the_app_has_the_design_cards_functions():
    names = {os.path.basename(os.path.dirname(path)) for path in FUNCTION_JSONS}
    assert {"StartExport", "PollExport", "OnBlobCreated", "Health"} <= names


@pytest.mark.parametrize("path", FUNCTION_JSONS, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_every_function_json_has_the_shape_the_host_accepts(path):
    with open(path, encoding="utf-8") as handle:
        doc = json.load(handle)
    assert validate_function_json(doc) == []
    script = os.path.join(os.path.dirname(path), doc.get("scriptFile", "__init__.py"))
    assert os.path.isfile(script)
    with open(script, encoding="utf-8") as handle:
        assert f"def {doc.get('entryPoint', 'main')}(" in handle.read()


def test_host_json_sets_an_empty_route_prefix_and_queue_settings():
    config = load_host_config(REPO_ROOT)
    assert config.route_prefix == ""
    assert config.queues.max_dequeue_count == 5
    assert config.queues.message_encoding == "base64"
    with open(os.path.join(REPO_ROOT, "host.json")) as handle:
        doc = json.load(handle)
    assert doc["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"


def test_local_settings_hold_development_values_only():
    with open(os.path.join(REPO_ROOT, "local.settings.json")) as handle:
        values = json.load(handle)["Values"]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert all("core.windows.net" not in str(value) for value in values.values())


def test_load_functions_reads_every_folder():
    specs = {spec.name: spec for spec in load_functions(REPO_ROOT)}
    assert specs["Health"].trigger["type"] == "httpTrigger"
    assert specs["StartExport"].trigger["type"] == "timerTrigger"
    assert specs["PollExport"].trigger["type"] == "queueTrigger"
    assert specs["OnBlobCreated"].trigger["type"] == "blobTrigger"


@pytest.mark.parametrize("doc, problem", [
    ({}, "bindings must be a non-empty array"),
    ({"bindings": [{"type": "httpTrigger", "direction": "out", "name": "req"}]}, "direction must be in"),
    ({"bindings": [{"type": "queueTrigger", "direction": "in", "name": "msg"}]}, "needs queueName"),
    ({"bindings": [{"type": "queueTrigger", "direction": "in", "name": "m", "queueName": "Bad_Name"}]},
     "is not a valid queue name"),
    ({"bindings": [{"type": "timerTrigger", "direction": "in", "name": "t"}]}, "needs schedule"),
    ({"bindings": [{"type": "blobTrigger", "direction": "in", "name": "b", "path": "nocontainer"}]},
     "path must be container/blob-pattern"),
    ({"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "open"}]},
     "authLevel must be one of"),
    ({"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["fetch"]}]},
     "methods must be a list of HTTP methods"),
    ({"bindings": [{"type": "http", "direction": "out", "name": "$return"}]}, "exactly one trigger"),
    ({"bindings": [{"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "* * * * * *"},
                   {"type": "queueTrigger", "direction": "in", "name": "q", "queueName": "abc"}]},
     "exactly one trigger"),
    ({"bindings": [{"type": "eventHubTrigger", "direction": "in", "name": "e"}]}, "is not a binding"),
    ({"bindings": [{"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "* * * * * *",
                    "sched": "typo"}]}, "unknown properties: sched"),
])
def test_a_malformed_function_json_is_refused_with_the_reason(doc, problem):
    problems = validate_function_json(doc)
    assert any(problem in text for text in problems), problems


def test_a_broken_app_folder_fails_to_load_naming_the_file(tmp_path):
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    (tmp_path / "Broken").mkdir()
    (tmp_path / "Broken" / "function.json").write_text('{"bindings": []}')
    with pytest.raises(AppLoadError, match=r"Broken/function.json: bindings must be a non-empty array"):
        load_functions(str(tmp_path))


def test_timespans_parse_as_the_host_reads_them():
    assert parse_timespan("00:00:01") == 1
    assert parse_timespan("01:02:03.5") == 3723.5
    assert parse_timespan("1.00:00:00") == 86400
    with pytest.raises(ValueError, match="is not a TimeSpan"):
        parse_timespan("5 minutes")
