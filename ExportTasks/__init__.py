"""The exportTasks API: list, get and create export tasks (api-version 2014-12-01).

Every method reaches this function so that unknown routes and wrong methods under exportTasks answer in the
ARM error shape; authentication is the app's bearer key, checked in shared.api.export_api.
"""

import azure.functions as func

from shared.api import export_api


def main(req: func.HttpRequest) -> func.HttpResponse:
    return export_api.handle(req)
