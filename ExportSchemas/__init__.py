"""GET /schemas and /schemas/{exportType}: the published schema of every export type's files."""

import azure.functions as func

from shared.api import schemas_api


def main(req: func.HttpRequest) -> func.HttpResponse:
    return schemas_api.handle(req)
