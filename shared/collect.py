"""Ingestion: `POST .../devices/collect` with {"records": [...]}, authorised by the app's collect key.

Every record is checked on its own; the valid ones are written (historical records to the raw store,
snapshot records to their tables) before the answer says 200, and each refused record is listed with its
index, the field and the reason. A body that cannot be read at all is refused whole.
"""

from __future__ import annotations

import datetime as dt
import zlib

import azure.functions as func

from shared import json_input, rawstore, snapshots
from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared.http import arm_endpoint, authorized_app, check_api_version, json_response
from shared.records import HISTORICAL_TYPES, RecordError, normalize

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


def ingest(app_id: str, raw_records: list) -> dict:
    """Checks and stores a batch; returns the answer body {"accepted": n, "rejected": [...]}.

    Every record is checked before anything is written, so no record can fail a write half-way through a
    batch. Snapshot state is written first because its writes are upserts: a batch sent again after a
    failure rewrites the same rows. The raw appends, which a retry would repeat, come last."""
    received = dt.datetime.now(dt.timezone.utc)
    accepted, rejected = [], []
    for index, raw in enumerate(raw_records):
        try:
            accepted.append(normalize(raw, now=received))
        except RecordError as error:
            rejected.append({"index": index, "field": error.field, "reason": error.reason})
    historical = [record for record in accepted if record["type"] in HISTORICAL_TYPES]
    snapshot = [record for record in accepted if record["type"] not in HISTORICAL_TYPES]
    if snapshot:
        snapshots.store(app_id, snapshot, now=received)
    if historical:
        rawstore.writer().append_records(app_id, historical)
    return {"accepted": len(accepted), "rejected": rejected}


@arm_endpoint("storage is unavailable; send the whole batch again after Retry-After seconds")
def handle(req: func.HttpRequest) -> func.HttpResponse:
    app = authorized_app(req, purpose="collect")
    check_api_version(req.params)
    return json_response(ingest(app.id, _records(_decoded_body(req))))
