"""The admin API: apps (the 2014-12-01 swagger's Apps_List included), their keys, settings and grants, under an
app collection, for Entra ID principals with the Apps.Admin app role (api-version 2014-12-01).

Every method and every path under the app collection reaches this function, less the exportTasks and collect
routes, which are more specific; what it does not serve answers as NotServed does. See shared.api.apps_api.
"""

import azure.functions as func

from shared.api import apps_api


def main(req: func.HttpRequest) -> func.HttpResponse:
    return apps_api.handle(req)
