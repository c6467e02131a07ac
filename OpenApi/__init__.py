"""GET /openapi.json: the OpenAPI 3 description of the API this app serves."""

import azure.functions as func

from shared.api import openapi
from shared.api.http import json_response


def main(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(openapi.document(), headers={"Cache-Control": "public, max-age=300"})
