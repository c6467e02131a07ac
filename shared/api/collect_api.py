"""The HTTP side of ingestion: `POST .../devices/collect` with {"records": [...]}, authorised by the app's
collect key. The body is read here (size, gzip, JSON); each record is checked and stored by shared.ingest.collect,
once per `Idempotency-Key` when the batch has one (shared.ingest.idempotency), within the app's quota
(shared.ingest.quota). A body that cannot be read at all is refused whole.
"""

from __future__ import annotations

import zlib

import azure.functions as func

from shared.api.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared.api.http import arm_endpoint, authorized_app, check_api_version, json_response
from shared.ingest import collect, idempotency, quota
from shared.platform import json_input, telemetry

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_DECODED_BYTES = 16 * 1024 * 1024
MAX_RECORDS = 5000


def _decoded_body(req: func.HttpRequest) -> bytes:
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is {len(raw)} bytes; at most {MAX_BODY_BYTES} are accepted")
    encoding = req.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; use gzip or none",
                                   code="UnsupportedContentEncoding")
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        # Bounded, so a small gzip bomb cannot take the worker's memory.
        body = decompressor.decompress(raw, MAX_DECODED_BYTES + 1)
    except zlib.error:
        raise BadRequest("the body is not valid gzip (Content-Encoding: gzip)", code="InvalidRequestContent") from None
    if len(body) > MAX_DECODED_BYTES or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"the body is over {MAX_DECODED_BYTES} bytes once decompressed")
    return body


def _records(body: bytes) -> list:
    try:
        document = json_input.parse(body)
    except json_input.JsonInputError as error:
        raise BadRequest(str(error), code="InvalidRequestContent") from None
    if not isinstance(document, dict) or not isinstance(document.get("records"), list):
        raise BadRequest('the body must be a JSON object {"records": [...]}', code="InvalidRequestContent")
    unknown = sorted(set(document) - {"records"})
    if unknown:
        raise BadRequest(f"{unknown[0]} is not a field of a collect batch (only records)", code="InvalidParameter")
    records = document["records"]
    if len(records) > MAX_RECORDS:
        raise BadRequest(f"the batch has {len(records)} records; at most {MAX_RECORDS} per request",
                         code="TooManyRecords")
    return records



@arm_endpoint("storage is unavailable; send the whole batch again after Retry-After seconds")
def handle(req: func.HttpRequest) -> func.HttpResponse:
    app = authorized_app(req, purpose="collect")
    check_api_version(req.params)
    key = req.headers.get(idempotency.HEADER)
    key = None if key is None else idempotency.check_key(key.strip())
    body = _decoded_body(req)
    records = _records(body)

    def admit(batch: collect.CheckedBatch) -> None:
        quota.admit(app.id, batch.accepted)

    if key is None:
        outcome = idempotency.Outcome(collect.ingest(app.id, records, admit=admit), replayed=False)
    else:
        outcome = idempotency.ingest_once(app.id, key, body, records, admit)
    if not outcome.replayed:
        telemetry.records_ingested(app.id, outcome.answer["accepted"])
    return json_response(outcome.answer, headers={idempotency.REPLAYED_HEADER: "true"} if outcome.replayed else None)
