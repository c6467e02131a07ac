"""GET /health: 200 when the app's settings and storage work, 503 with the reason when they do not."""

import logging

import azure.functions as func

from shared.api import health
from shared.api.http import json_response
from shared.platform.config import ConfigError


def main(req: func.HttpRequest) -> func.HttpResponse:
    try:
        return json_response(health.check())
    except ConfigError as error:
        return json_response({"status": "unhealthy", "reason": str(error)}, status=503)
    except Exception as error:  # storage unreachable: report it, the probe must not crash
        logging.warning("Health check failed: %r", error)
        return json_response({"status": "unhealthy", "reason": f"storage did not answer: {type(error).__name__}"},
                             status=503)
