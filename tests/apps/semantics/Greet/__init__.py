import json

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    who = req.route_params["who"]
    times = int(req.route_params.get("times", "1"))
    return func.HttpResponse(json.dumps({"greeting": " ".join([f"hello {who}"] * times),
                                         "method": req.method, "query": dict(req.params),
                                         "body": req.get_body().decode()}),
                             status_code=201, mimetype="application/json", headers={"X-Who": who})
