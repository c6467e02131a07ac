"""Device-facing ingestion: a batch of records, authorised by the app's write-only collect key."""

import azure.functions as func

from shared.api import collect_api


def main(req: func.HttpRequest) -> func.HttpResponse:
    return collect_api.handle(req)
