"""Device-facing ingestion: a batch of records, authorised by the app's write-only collect key."""

import azure.functions as func

from shared import collect


def main(req: func.HttpRequest) -> func.HttpResponse:
    return collect.handle(req)
