"""The published schemas, over HTTP: `GET /schemas` lists every export type's, `GET /schemas/{exportType}` gives
one (JSON Schema of a JSON Lines or CSV row, and the Arrow schema of a Parquet file). They are public: they
describe the service, not an app's data."""

from __future__ import annotations

import azure.functions as func

from shared.api.errors import MethodNotAllowed, NotFound
from shared.api.http import arm_endpoint, json_response
from shared.export import registry

CACHE = {"Cache-Control": "public, max-age=300"}


@arm_endpoint("the service is unavailable; try again after Retry-After seconds")
def handle(req: func.HttpRequest) -> func.HttpResponse:
    # Every method reaches this function, so that a wrong one is a 405 here rather than a catch-all 404.
    if req.method.upper() != "GET":
        raise MethodNotAllowed(f"{req.method.upper()} is not allowed on schemas; use GET to read them",
                               headers={"Allow": "GET"})
    name = req.route_params.get("exportType")
    if not name:
        return json_response({"value": [registry.type_schemas(export_type)
                                        for export_type in registry.EXPORT_TYPES.values()]}, headers=CACHE)
    export_type = next((t for t in registry.EXPORT_TYPES.values() if t.name.lower() == name.lower()), None)
    if export_type is None:
        raise NotFound(f"{name!r} is not an export type; export types are {', '.join(registry.EXPORT_TYPES)}",
                       code="NotFound")
    return json_response(registry.type_schemas(export_type), headers=CACHE)
