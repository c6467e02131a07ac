"""HTTP catch-all: every path no other function serves answers in the ARM error shape, saying why."""

import azure.functions as func

from shared.api import not_served


def main(req: func.HttpRequest) -> func.HttpResponse:
    return not_served.handle(req)
