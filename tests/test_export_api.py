"""The exportTasks API, called directly through the function's entry point with func.HttpRequest."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from urllib.parse import parse_qsl, urlsplit

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy
from helpers import API_VERSION, app_path, container_sas_url, http_request

import ExportTasks
from shared.export.registry import ROUTES
from shared.platform import apps
from shared.tasks import jobs, orchestration

TODAY = dt.datetime.now(dt.UTC).date()
YESTERDAY = (TODAY - dt.timedelta(days=1)).isoformat()


class Api:
    """One registered app and a destination container, with helpers to call the API as that app."""

    def __init__(self, azurite, names):
        self.azurite = azurite
        self.collection, self.app = f"col-{names.token}", "app1"
        self.keys = apps.register_app(self.collection, self.app)
        self.container = names.container("dest")
        self.container_url = container_sas_url(azurite, self.container)
        self.path = app_path(self.collection, self.app)

    def call(self, method, rest="", *, body=None, key=None, params=None, raw=None, headers=None,
             collection=None, app=None):
        route_params = {"subscriptionId": "sub-1", "resourceGroupName": "rg-1",
                        "appCollection": collection or self.collection, "appName": app or self.app, "rest": rest}
        path = app_path(route_params["appCollection"], route_params["appName"]) + "/exportTasks" + (
            f"/{rest}" if rest else "")
        request = http_request(method, path, key=self.keys.export_key if key is None else key, body=body,
                               params=params, route_params=route_params, raw=raw, headers=headers)
        response = ExportTasks.main(request)
        payload = json.loads(response.get_body()) if response.get_body() else None
        return response, payload

    def body(self, route, **overrides):
        base = {"containerUrl": self.container_url, "description": f"{route} export"}
        kind = ROUTES[route].kind
        if kind == "historical":
            base.update(startDate=YESTERDAY, endDate=YESTERDAY, exportFormat="CsvBlob")
        elif kind == "byDate":
            base.update(campaignType="Announcement", campaignWindowStart="2026-01-01T00:00:00Z",
                        campaignWindowEnd="2026-01-31T00:00:00Z")
        elif kind == "byCampaign":
            base.update(campaignType="Poll", campaignIds=[3, 1, 2])
        elif route == "tokens":
            base.update(exportOptions={"exportUserId": True})
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not ...}


@pytest.fixture
def api(app_env, names):
    orchestration_queue = QueueClient.from_connection_string(
        app_env.connection_string, orchestration.POLL_QUEUE, message_decode_policy=TextBase64DecodePolicy())
    try:
        orchestration_queue.clear_messages()
    except Exception:
        pass
    return Api(app_env, names)


def poll_messages(api):
    queue = QueueClient.from_connection_string(api.azurite.connection_string, orchestration.POLL_QUEUE,
                                               message_decode_policy=TextBase64DecodePolicy())
    return [json.loads(m.content) for m in queue.peek_messages(max_messages=32)]


@pytest.mark.parametrize("route", list(ROUTES))
def test_post_creates_a_queued_task_and_starts_it(api, route):
    response, task = api.call("POST", route, body=api.body(route))
    assert response.status_code == 202, task
    assert task["state"] == "Queued"
    assert task["exportType"] == ROUTES[route].export_type
    assert task["description"] == f"{route} export"
    assert "dateCompleted" not in task and "errorDetails" not in task  # strings in the contract: absent, not null
    assert task["dateCreated"].endswith("Z")
    assert task["containerUrl"] == api.container_url.split("?")[0]
    assert response.headers["Location"] == (
        f"http://127.0.0.1:7071{api.path}/exportTasks/{task['id']}?api-version={API_VERSION}")
    assert response.headers["Retry-After"] == "2"
    assert (f"{api.collection}~{api.app}", task["id"], 0) in [(m["app"], m["job"], m["attempt"])
                                                               for m in poll_messages(api)]
    got, fetched = api.call("GET", task["id"])
    assert got.status_code == 200 and fetched == task


def test_task_fields_round_trip_per_route(api):
    _, task = api.call("POST", "events", body=api.body("events", startDate="2026-01-01T00:00:00Z",
                                                       endDate="2026-01-02"))
    assert (task["startDate"], task["endDate"], task["exportFormat"]) == ("2026-01-01", "2026-01-02", "CsvBlob")
    _, task = api.call("POST", "feedbackByCampaign", body=api.body("feedbackByCampaign", campaignType="datapush"))
    assert task["campaignType"] == "DataPush" and task["campaignIds"] == [1, 2, 3]
    assert task["exportFormat"] == "JsonBlob"
    _, task = api.call("POST", "tokens", body=api.body("tokens"))
    assert task["exportOptions"] == {"exportUserId": True}
    _, task = api.call("POST", "feedbackByDate", body=api.body("feedbackByDate"))
    assert task["campaignWindowStart"] == "2026-01-01T00:00:00.000Z"


def test_the_sas_signature_is_never_returned_nor_stored_in_clear(api):
    response, task = api.call("POST", "tags", body=api.body("tags"))
    signature = dict(p.split("=", 1) for p in api.container_url.split("?")[1].split("&"))["sig"]
    assert "sig=" not in response.get_body().decode() and signature not in response.get_body().decode()
    tables = TableServiceClient.from_connection_string(api.azurite.connection_string)
    row = tables.get_table_client(jobs.JOBS_TABLE).get_entity(f"{api.collection}~{api.app}", task["id"])
    stored = json.dumps({k: str(v) for k, v in row.items()})
    assert signature not in stored and "sig=" not in stored
    job = jobs.get_job(f"{api.collection}~{api.app}", task["id"])
    from shared.export import destination
    assert destination.unseal(job.sealed_sas) == api.container_url.split("?")[1]


def test_the_live_probe_leaves_no_blob_behind(api):
    response, _ = api.call("POST", "devices", body=api.body("devices"))
    assert response.status_code == 202
    container = BlobServiceClient.from_connection_string(api.azurite.connection_string).get_container_client(
        api.container)
    assert list(container.list_blobs()) == []


def test_unknown_task_is_404(api):
    response, payload = api.call("GET", str(uuid.uuid4()))
    assert response.status_code == 404
    assert payload["error"]["code"] == "ExportTaskNotFound"


def follow(api, params):
    """Every page of a listing from its first page's parameters, following nextLink; (ids, pages)."""
    seen, pages = [], 0
    while True:
        response, page = api.call("GET", params=params)
        assert response.status_code == 200, page
        pages += 1
        seen += [task["id"] for task in page["value"]]
        if "nextLink" not in page:
            return seen, pages
        assert page["nextLink"].startswith(f"http://127.0.0.1:7071{api.path}/exportTasks?")
        params = dict(parse_qsl(urlsplit(page["nextLink"]).query))


def test_listing_pages_in_task_id_order_by_default_and_newest_first_on_request(api):
    created = []
    for index in range(5):
        _, task = api.call("POST", "tags", body=api.body("tags", description=f"task {index}"))
        created.append(task["id"])
    # The contract's default is `taskId asc`; task ids sort by creation time.
    seen, pages = follow(api, {"api-version": API_VERSION, "$top": "2"})
    assert (seen, pages) == (created, 3)
    _, page = api.call("GET", params={"api-version": API_VERSION})
    assert [task["id"] for task in page["value"]] == created and "nextLink" not in page
    _, page = api.call("GET", params={"api-version": API_VERSION, "$orderby": "dateCreated desc", "$skip": "3"})
    assert [task["id"] for task in page["value"]] == list(reversed(created))[3:]


def test_a_key_of_one_app_reads_and_creates_nothing_of_another(api, names):
    other = apps.register_app(f"other-{names.token}", "app2")
    _, task = api.call("POST", "tags", body=api.body("tags"))
    response, payload = api.call("POST", "tags", body=api.body("tags"), collection=f"other-{names.token}",
                                 app="app2")
    assert response.status_code == 401 and payload["error"]["code"] == "AuthenticationFailed"
    # app2's own key, on app2's path, does not see app1's task
    response, payload = api.call("GET", task["id"], key=other.export_key, collection=f"other-{names.token}",
                                 app="app2")
    assert response.status_code == 404
    response, page = api.call("GET", key=other.export_key, collection=f"other-{names.token}", app="app2")
    assert page == {"value": []}


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Basic abc", "Bearer wrong-key"])
def test_missing_or_wrong_key_is_401(api, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    request = http_request("GET", api.path + "/exportTasks", headers=headers,
                           route_params={"appCollection": api.collection, "appName": api.app, "rest": ""})
    response = ExportTasks.main(request)
    assert response.status_code == 401
    assert json.loads(response.get_body())["error"]["code"] == "AuthenticationFailed"
    assert "WWW-Authenticate" in response.headers


def test_the_collect_key_cannot_call_the_export_api(api):
    response, payload = api.call("GET", key=api.keys.collect_key)
    assert response.status_code == 401
    assert "not a valid export key" in payload["error"]["message"]


def expired_sas(api):
    return container_sas_url(api.azurite, api.container + "x", create=False,
                             expiry=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))


INVALID = [
    # (route, body overrides or raw, params, status, code, words in the message)
    ("events", {"startDate": "2026-13-01"}, None, 400, "InvalidParameter", ["startDate", "not a real day"]),
    ("events", {"startDate": "01/02/2026"}, None, 400, "InvalidParameter", ["startDate", "YYYY-MM-DD"]),
    ("events", {"startDate": 20260101}, None, 400, "InvalidParameter", ["startDate", "must be a string"]),
    ("events", {"endDate": ...}, None, 400, "MissingParameter", ["endDate", "required"]),
    ("events", {"startDate": YESTERDAY, "endDate": "2020-01-01"}, None, 400, "InvalidParameter",
     ["startDate", "is after endDate"]),
    ("events", {"startDate": "2020-01-01", "endDate": YESTERDAY}, None, 400, "InvalidParameter",
     ["endDate", "at most 366 days"]),
    ("events", {"endDate": (TODAY + dt.timedelta(days=2)).isoformat()}, None, 400, "InvalidParameter",
     ["endDate", "in the future"]),
    ("events", {"exportFormat": "XmlBlob"}, None, 400, "InvalidParameter", ["exportFormat", "JsonBlob, CsvBlob"]),
    ("events", {"exportFormat": 3}, None, 400, "InvalidParameter", ["exportFormat", "must be a string"]),
    ("events", {"exportformat": "CsvBlob"}, None, 400, "InvalidParameter", ["exportformat", "not a parameter"]),
    ("events", {"description": "x" * 1025}, None, 400, "InvalidParameter", ["description", "at most 1024"]),
    ("feedbackByDate", {"campaignType": "Email"}, None, 400, "InvalidParameter", ["campaignType", "Announcement"]),
    ("feedbackByDate", {"campaignWindowStart": "2026-01-01"}, None, 400, "InvalidParameter",
     ["campaignWindowStart", "time zone"]),
    ("feedbackByDate", {"campaignWindowStart": "2026-02-01T00:00:00Z"}, None, 400, "InvalidParameter",
     ["campaignWindowStart", "is after campaignWindowEnd"]),
    ("feedbackByCampaign", {"campaignIds": []}, None, 400, "InvalidParameter", ["campaignIds", "must not be empty"]),
    ("feedbackByCampaign", {"campaignIds": [1, "2"]}, None, 400, "InvalidParameter",
     ["campaignIds[1]", "positive integer"]),
    ("feedbackByCampaign", {"campaignType": ...}, None, 400, "MissingParameter", ["campaignType", "required"]),
    ("tokens", {"exportOptions": {"exportUserId": "yes"}}, None, 400, "InvalidParameter",
     ["exportOptions.exportUserId", "true or false"]),
    ("tags", {"containerUrl": ...}, None, 400, "MissingParameter", ["containerUrl", "required"]),
    ("tags", {"containerUrl": "ftp://acct.blob.core.windows.net/c?sp=cw&se=2999-01-01&sig=x"}, None, 400,
     "InvalidContainerUrl", ["containerUrl", "https"]),
    ("tags", {"containerUrl": "http://acct.blob.core.windows.net/c?sp=cw&se=2999-01-01&sig=x"}, None, 400,
     "InvalidContainerUrl", ["containerUrl", "must use https"]),
    ("tags", {"containerUrl": "https://example.com/c?sp=cw&se=2999-01-01&sig=x"}, None, 400,
     "InvalidContainerUrl", ["containerUrl", "not an Azure blob endpoint"]),
    ("tags", {"containerUrl": "https://10.0.0.4/acct/c?sp=cw&se=2999-01-01&sig=x"}, None, 400,
     "InvalidContainerUrl", ["containerUrl", "IP address"]),
    ("tags", {"containerUrl": "http://169.254.169.254/acct/c?sp=cw&se=2999-01-01&sig=x"}, None, 400,
     "InvalidContainerUrl", ["containerUrl", "IP address"]),
    ("tags", {"containerUrl": "https://acct.blob.core.windows.net/c/sub?sp=cw&se=2999-01-01&sig=x"}, None, 400,
     "InvalidContainerUrl", ["containerUrl", "exactly one container"]),
    ("tags", {"containerUrl": "https://acct.blob.core.windows.net/c"}, None, 400,
     "InvalidContainerUrl", ["containerUrl", "no SAS token"]),
    ("tags", {"containerUrl": "https://acct.blob.core.windows.net/c?sp=rl&se=2999-01-01&sig=x"}, None, 400,
     "InvalidContainerUrl", ["containerUrl", "without write and create permission"]),
    ("tags", {"containerUrl": "https://acct.blob.core.windows.net/c?sp=w&se=2999-01-01&sig=x"}, None, 400,
     "InvalidContainerUrl", ["containerUrl", "without create permission"]),
    ("tags", "expired", None, 400, "InvalidContainerUrl", ["containerUrl", "expired at 2020-01-01T00:00:00Z"]),
    ("tags", "missing-container", None, 400, "InvalidContainerUrl", ["containerUrl", "does not exist"]),
    ("tags", "bad-signature", None, 400, "InvalidContainerUrl", ["containerUrl", "refused"]),
    ("tags", b"{not json", None, 400, "InvalidRequestContent", ["not valid JSON"]),
    ("tags", b"[1, 2]", None, 400, "InvalidRequestContent", ["JSON object"]),
    ("tags", b"", None, 400, "InvalidRequestContent", ["empty"]),
    ("tags", b"\xff\xfe", None, 400, "InvalidRequestContent", ["UTF-8"]),
    ("tags", b"{\"description\": \"" + b"x" * 70000 + b"\"}", None, 413, "RequestEntityTooLarge", ["bytes"]),
    ("tags", {}, {}, 400, "MissingApiVersionParameter", ["api-version"]),
    ("tags", {}, {"api-version": "2016-01-01"}, 400, "InvalidApiVersionParameter", ["2014-12-01"]),
    ("reports", {}, None, 404, "NotFound", ["not an export route"]),
]


@pytest.mark.parametrize("route, change, params, status, code, words", INVALID,
                         ids=[f"{i}-{case[0]}-{case[4]}" for i, case in enumerate(INVALID)])
def test_invalid_requests_get_the_right_status_code_and_message(api, route, change, params, status, code, words):
    raw = None
    body = api.body(route if route in ROUTES else "tags")
    if isinstance(change, dict):
        body = api.body(route if route in ROUTES else "tags", **change)
    elif isinstance(change, bytes):
        raw = change
    elif change == "expired":
        body["containerUrl"] = expired_sas(api)
    elif change == "missing-container":
        body["containerUrl"] = container_sas_url(api.azurite, api.container + "-gone", create=False)
    elif change == "bad-signature":
        url = api.container_url
        body["containerUrl"] = url.replace("sig=", "sig=AAAA")
    response, payload = api.call("POST", route, body=body, raw=raw, params=params)
    assert response.status_code == status, payload
    assert payload["error"]["code"] == code
    for word in words:
        assert word in payload["error"]["message"], payload["error"]["message"]
    assert "sig=" not in payload["error"]["message"]


def test_wrong_methods_are_405_with_allow(api):
    response, payload = api.call("DELETE", "events")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert payload["error"]["code"] == "MethodNotAllowed"
    response, _ = api.call("POST", "")
    assert response.status_code == 405 and response.headers["Allow"] == "GET"
    response, _ = api.call("PUT", str(uuid.uuid4()))
    assert response.status_code == 405


def test_deeper_paths_and_bad_paging_parameters(api):
    response, _ = api.call("GET", "a/b")
    assert response.status_code == 404
    for params, word in (({"$top": "-1"}, "$top"), ({"$top": "5000"}, "at most 1000"),
                         ({"$orderby": "name"}, "$orderby"), ({"$skiptoken": "!!"}, "$skiptoken")):
        response, payload = api.call("GET", params={"api-version": API_VERSION, **params})
        assert response.status_code == 400 and word in payload["error"]["message"]
