"""A property-based run of our OpenAPI document against the running local host (schemathesis): for every
operation, generated requests (valid and invalid) never get a 5xx, and every response conforms to the
document: status codes, content types, headers and bodies. Bounded to about a minute."""

from __future__ import annotations

import copy
import uuid

import pytest
import schemathesis
from helpers import local_host
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks

from shared.api.openapi import document
from shared.platform import apps

COLLECTION, APP = f"fuzz-{uuid.uuid4().hex[:8]}", "app"
EXAMPLES_PER_OPERATION = 60


def _pinned(doc: dict) -> dict:
    """The document with the app's path parameters fixed to the test's app, so requests reach its tasks
    instead of all being refused for a key that does not match the path."""
    pinned = copy.deepcopy(doc)
    for item in pinned["paths"].values():
        for operation in item.values():
            for parameter in operation["parameters"]:
                if parameter["name"] == "appCollection":
                    parameter["schema"] = {"type": "string", "enum": [COLLECTION]}
                elif parameter["name"] == "appName":
                    parameter["schema"] = {"type": "string", "enum": [APP]}
    return pinned


schema = schemathesis.openapi.from_dict(_pinned(document()))


@pytest.fixture(scope="module")
def service(app_env):
    keys = apps.register_app(COLLECTION, APP)
    with local_host("ExportTasks", "ExportPipelines", "Collect", "Apps", "OpenApi", "ExportSchemas",
                    "NotServed") as host:
        yield host, keys


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_every_response_conforms_to_the_document_and_none_is_a_5xx(case, service):
    host, keys = service
    key = keys.collect_key if case.operation.path.endswith("/collect") else keys.export_key
    response = case.call(base_url=host.base_url, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code < 500, (response.status_code, response.text)
    # Raises, naming each failed check, unless the response conforms to the document. A body the schema allows
    # can still be refused for what only the service can know: a container that does not exist, a SAS that
    # cannot write, a task id that was never created, a range in the future.
    case.validate_response(response, excluded_checks=[checks.positive_data_acceptance, checks.ignored_auth,
                                                      checks.missing_required_header])
