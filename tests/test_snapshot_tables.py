"""An upgraded deployment's snapshot tables (the store before the snapshot log) are moved into the log once: the
exports then hold what the tables held, a report Collect takes later still wins, and moving twice changes
nothing."""

from __future__ import annotations

import json

import pytest
from azure.data.tables import EdmType, EntityProperty, TableServiceClient
from exporting import run_export
from test_collect import Device

from shared.ingest import snapshot_tables

LATER = "2026-06-01T00:00:00.000Z"


@pytest.fixture
def upgraded(app_env, names):
    """An app whose snapshot state is in the tables, as the version before the log wrote them."""
    device = Device(app_env, names)
    service = TableServiceClient.from_connection_string(app_env.connection_string)
    partition = f"{device.app_id}|07"
    rows = {
        "devices": [{"PartitionKey": partition, "RowKey": "old-1", "deviceId": "old-1",
                     "firstSeen": "2025-01-01T00:00:00.000Z", "lastSeen": "2025-03-01T00:00:00.000Z",
                     "lastInfo": json.dumps({"phoneModel": "Pixel 6", "locale": "fr_FR"}),
                     "lastLocation": json.dumps({"countrycode": "FR"}), "nativePushEnabled": True}],
        "tags": [{"PartitionKey": partition, "RowKey": "old-1|level", "deviceId": "old-1", "name": "level",
                  "value": json.dumps(7)},
                 {"PartitionKey": partition, "RowKey": "old-1|vip", "deviceId": "old-1", "name": "vip",
                  "value": json.dumps(True)}],
        "tokens": [{"PartitionKey": partition, "RowKey": "old-1", "deviceId": "old-1", "token": "tok-old",
                    "userId": "u-1", "platform": "apns", "updated": "2025-03-02T00:00:00.000Z"}],
        "pushfeedback": [{"PartitionKey": partition, "RowKey": "Poll|000000000009|old-1|pushed", "deviceId": "old-1",
                          "campaignId": EntityProperty(2 ** 33, EdmType.INT64), "campaignType": "Poll",
                          "action": "pushed", "timestamp": "2025-02-01T00:00:00.000Z"}],
    }
    for table, entities in rows.items():
        client = service.create_table_if_not_exists(table)
        for entity in entities:
            client.upsert_entity(entity)
    yield device
    for table, entities in rows.items():
        for entity in entities:
            service.get_table_client(table).delete_entity(entity["PartitionKey"], entity["RowKey"])


def state(device):
    return (run_export(device.app_id, "devices", "JsonBlob"), run_export(device.app_id, "tags", "JsonBlob"),
            run_export(device.app_id, "tokens", "JsonBlob", export_user_id=True),
            run_export(device.app_id, "feedbackByCampaign", "JsonBlob", campaign_type="Poll", campaign_ids=[2 ** 33]))


def test_the_tables_move_into_the_log_and_export_as_they_were(upgraded):
    assert state(upgraded) == ([], [], [], [])
    moved = snapshot_tables.migrate()
    assert all(moved[table] >= 1 for table in snapshot_tables.TABLES)
    devices, tags, tokens, feedback = state(upgraded)
    assert devices == [{"deviceId": "old-1", "firstSeen": "2025-01-01T00:00:00.000Z",
                        "lastSeen": "2025-03-01T00:00:00.000Z", "nativePushEnabled": True,
                        "info": {"phoneModel": "Pixel 6", "locale": "fr_FR"}, "location": {"countrycode": "FR"},
                        "appInfo": {"level": 7, "vip": True}}]
    assert tags == [{"deviceId": "old-1", "name": "level", "value": 7}, {"deviceId": "old-1", "name": "vip",
                                                                          "value": True}]
    assert tokens == [{"deviceId": "old-1", "userId": "u-1", "token": "tok-old", "platform": "apns",
                       "updated": "2025-03-02T00:00:00.000Z"}]
    assert feedback == [{"deviceId": "old-1", "campaignId": 2 ** 33, "campaignType": "Poll", "action": "pushed",
                         "timestamp": "2025-02-01T00:00:00.000Z"}]
    snapshot_tables.migrate()  # run twice by mistake: the same state
    assert state(upgraded) == (devices, tags, tokens, feedback)


def test_a_report_received_after_the_move_wins(upgraded):
    snapshot_tables.migrate()
    assert upgraded.post([{"type": "device", "deviceId": "old-1", "timestamp": LATER, "info": {"phoneModel": "X"}},
                          {"type": "tag", "deviceId": "old-1", "name": "vip", "value": None}])[0] == 200
    (device,) = run_export(upgraded.app_id, "devices", "JsonBlob")
    assert (device["firstSeen"], device["lastSeen"], device["info"], device["location"], device["appInfo"]) == (
        "2025-01-01T00:00:00.000Z", LATER, {"phoneModel": "X"}, {"countrycode": "FR"}, {"level": 7})
