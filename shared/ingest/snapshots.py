"""Snapshot state: devices, app-info tags, push tokens and push-campaign feedback, in Table storage.

Each app's rows spread over BUCKETS partitions (`{appId}|{bucket}`, the bucket a stable hash of the device
id), so an export scans the buckets in parallel and writes to one partition batch into transactions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, Iterator, List, Optional

from azure.core import MatchConditions
from azure.data.tables import EdmType, EntityProperty, TableEntity, TableTransactionError, UpdateMode

from shared.ingest.records import format_time
from shared.platform import storage
from shared.platform.errors import TransientError

BUCKETS = 16
DEVICES_TABLE, TAGS_TABLE, TOKENS_TABLE, FEEDBACK_TABLE = "devices", "tags", "tokens", "pushfeedback"
TRANSACTION_SIZE = 100
# Concurrent reports of one device race on its row: each loser re-reads and tries again after a short,
# growing, jittered pause, so a burst of reports for one device settles instead of failing.
MERGE_TRIES = 12
MERGE_PAUSE_SECONDS = 0.005


def bucket_of(device_id: str) -> int:
    return hashlib.blake2b(device_id.encode("utf-8"), digest_size=2).digest()[0] % BUCKETS


def partition(app_id: str, device_id: str) -> str:
    return f"{app_id}|{bucket_of(device_id):02d}"


def partitions(app_id: str) -> List[str]:
    return [f"{app_id}|{bucket:02d}" for bucket in range(BUCKETS)]


def _transact(table_name: str, operations: Iterable[tuple]) -> None:
    """Runs (partition, operation) pairs as table transactions of at most 100 per partition, in order."""
    by_partition: Dict[str, List[tuple]] = defaultdict(list)
    for partition_key, operation in operations:
        by_partition[partition_key].append(operation)
    table = storage.table(table_name)

    def run(ops: List[tuple]) -> None:
        # A transaction may not touch one row twice: keep the last operation per row, which is the outcome.
        last: Dict[str, tuple] = {}
        for op in ops:
            last[op[1]["RowKey"]] = op
        ordered = list(last.values())
        for start in range(0, len(ordered), TRANSACTION_SIZE):
            table.submit_transaction(ordered[start:start + TRANSACTION_SIZE])

    if len(by_partition) == 1:
        run(next(iter(by_partition.values())))
        return
    with ThreadPoolExecutor(min(8, len(by_partition))) as pool:
        list(pool.map(run, by_partition.values()))


def _tag_row(app_id: str, record: dict) -> tuple:
    device = record["deviceId"]
    key = {"PartitionKey": partition(app_id, device), "RowKey": f"{device}|{record['name']}"}
    if record["value"] is None:
        return key["PartitionKey"], ("delete", key)
    return key["PartitionKey"], ("upsert", dict(key, deviceId=device, name=record["name"],
                                                value=json.dumps(record["value"])), {"mode": "replace"})


def _token_row(app_id: str, record: dict, received: str) -> tuple:
    device = record["deviceId"]
    entity = {"PartitionKey": partition(app_id, device), "RowKey": device, "deviceId": device,
              "token": record["token"], "updated": received}
    for optional in ("userId", "platform"):
        if record.get(optional) is not None:
            entity[optional] = record[optional]
    return entity["PartitionKey"], ("upsert", entity, {"mode": "replace"})


def _feedback_row(app_id: str, record: dict) -> tuple:
    device = record["deviceId"]
    entity = {"PartitionKey": partition(app_id, device),
              "RowKey": f"{record['campaignType']}|{record['campaignId']:012d}|{device}|{record['action']}",
              "deviceId": device, "campaignId": EntityProperty(record["campaignId"], EdmType.INT64),
              "campaignType": record["campaignType"],
              "action": record["action"], "timestamp": record["timestamp"]}
    return entity["PartitionKey"], ("upsert", entity, {"mode": "replace"})


def store(app_id: str, records: List[dict], *, now: Optional[dt.datetime] = None, replace: bool = False) -> None:
    """Upserts snapshot records (tags in order: a later set or delete of the same tag wins).

    Device reports merge with what is known (firstSeen kept, the latest report wins); ``replace`` writes
    them as the whole state instead, in bulk, for loading a known-fresh data set.
    """
    received = format_time(now or dt.datetime.now(dt.timezone.utc))
    tags = [_tag_row(app_id, r) for r in records if r["type"] == "tag"]
    tokens = [_token_row(app_id, r, received) for r in records if r["type"] == "token"]
    feedback = [_feedback_row(app_id, r) for r in records if r["type"] == "push"]
    devices = [_device_row(app_id, r, received) for r in records if r["type"] == "device"]
    batches = [(TAGS_TABLE, tags), (TOKENS_TABLE, tokens), (FEEDBACK_TABLE, feedback)]
    if replace:
        batches.append((DEVICES_TABLE, [(row["PartitionKey"], ("upsert", row, {"mode": "replace"}))
                                        for row in devices]))
    for table_name, operations in batches:
        if operations:
            _transact(table_name, operations)
    if not replace and devices:
        merge_devices(devices)


def _device_row(app_id: str, record: dict, received: str) -> dict:
    seen = record.get("timestamp") or received
    row = {"PartitionKey": partition(app_id, record["deviceId"]), "RowKey": record["deviceId"],
           "deviceId": record["deviceId"], "firstSeen": seen, "lastSeen": seen}
    for field, column in (("info", "lastInfo"), ("location", "lastLocation")):
        if record.get(field) is not None:
            row[column] = json.dumps(record[field], separators=(",", ":"))
    if record.get("nativePushEnabled") is not None:
        row["nativePushEnabled"] = record["nativePushEnabled"]
    return row


# Keys of rows read back in one query: a filter holds at most 15 comparisons, one of them the partition's.
READ_KEYS_PER_QUERY = 14


def merge_devices(rows: List[dict]) -> None:
    """Merges device reports into their rows, a table transaction per bucket partition: firstSeen stays the
    earliest, lastSeen and the info/location of the latest report win. A partition whose rows another writer
    changed between our read and our transaction is read and merged again."""
    by_partition: Dict[str, Dict[str, dict]] = defaultdict(dict)
    for row in rows:
        folded = by_partition[row["PartitionKey"]]
        folded[row["RowKey"]] = _merged(folded[row["RowKey"]], row) if row["RowKey"] in folded else row
    if len(by_partition) == 1:
        _merge_partition(*next(iter(by_partition.items())))
        return
    with ThreadPoolExecutor(min(8, len(by_partition))) as pool:
        list(pool.map(lambda item: _merge_partition(*item), by_partition.items()))


def _merged(current: dict, fresh: dict) -> dict:
    seen = fresh["lastSeen"]
    merged = dict(current)
    merged["firstSeen"] = min(current.get("firstSeen", seen), seen)
    if seen >= current.get("lastSeen", ""):
        merged.update({k: v for k, v in fresh.items() if k != "firstSeen"})
    return merged


def _merge_partition(partition_key: str, fresh: Dict[str, dict]) -> None:
    table = storage.table(DEVICES_TABLE)
    keys = sorted(fresh)
    for attempt in range(MERGE_TRIES):
        if attempt:
            time.sleep(random.uniform(0.5, 1.0) * MERGE_PAUSE_SECONDS * 2 ** min(attempt, 7))
        current = _read_rows(table, partition_key, keys)
        operations: List[tuple] = []
        for key in keys:
            row = current.get(key)
            if row is None:
                operations.append(("create", fresh[key]))
            else:
                operations.append(("update", _merged(row, fresh[key]),
                                   {"mode": UpdateMode.REPLACE, "etag": row.metadata["etag"],
                                    "match_condition": MatchConditions.IfNotModified}))
        try:
            # A retry merges rows an earlier transaction already wrote again, which changes nothing.
            for start in range(0, len(operations), TRANSACTION_SIZE):
                table.submit_transaction(operations[start:start + TRANSACTION_SIZE])
            return
        except TableTransactionError as error:
            if error.status_code not in (409, 412):  # a row created or changed since we read it
                raise
    raise TransientError(f"devices of {partition_key} kept changing under concurrent writers; retry the batch")


def _read_rows(table, partition_key: str, keys: List[str]) -> Dict[str, TableEntity]:
    found: Dict[str, TableEntity] = {}
    for start in range(0, len(keys), READ_KEYS_PER_QUERY):
        chunk = keys[start:start + READ_KEYS_PER_QUERY]
        # The SDK's parameter substitution needs white space after each @name, hence the spaced parentheses.
        text = "PartitionKey eq @pk and ( " + " or ".join(f"RowKey eq @k{i} " for i in range(len(chunk))) + ")"
        parameters = {"pk": partition_key, **{f"k{i}": key for i, key in enumerate(chunk)}}
        for row in table.query_entities(text, parameters=parameters):
            found[row["RowKey"]] = row
    return found


def scan(table_name: str, partition_key: str, *, query: str = "", parameters: Optional[dict] = None) -> Iterator[dict]:
    """Rows of one bucket partition, with an optional extra filter."""
    # The SDK's parameter substitution needs white space after each @name, hence the spaced parentheses.
    text = "PartitionKey eq @pk" + (f" and ( {query} )" if query else "")
    return storage.table(table_name).query_entities(text, parameters=dict(parameters or {}, pk=partition_key),
                                                    results_per_page=1000)
