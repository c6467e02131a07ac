"""The erasureTasks API (an extension): erase an app's data of devices or users everywhere the service keeps it,
and read how each erasure went. Every method reaches this function so that unknown routes and wrong methods
answer in the ARM error shape; the caller is authorized in shared.api.erasure_api."""

import azure.functions as func

from shared.api import erasure_api


def main(req: func.HttpRequest) -> func.HttpResponse:
    return erasure_api.handle(req)
