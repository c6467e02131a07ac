"""The exportPipelines API (an extension): create, replace, read, pause, resume and delete an app's continuous
exports, and list their runs. Every method reaches this function so that unknown routes and wrong methods answer in
the ARM error shape; authentication is the app's bearer key, checked in shared.api.pipeline_api."""

import azure.functions as func

from shared.api import pipeline_api


def main(req: func.HttpRequest) -> func.HttpResponse:
    return pipeline_api.handle(req)
