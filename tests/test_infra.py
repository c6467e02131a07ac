"""The infrastructure files pass `make infra-check`, and the check finds what would break a deployment."""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import REPO_ROOT

from tools import infracheck


def test_the_infrastructure_files_have_no_problem():
    assert infracheck.check() == []


@pytest.fixture
def infra_copy(tmp_path):
    shutil.copytree(os.path.join(REPO_ROOT, "infra"), tmp_path / "infra")
    shutil.copy(os.path.join(REPO_ROOT, "azure.yaml"), tmp_path / "azure.yaml")

    def change(name, old, new):
        path = tmp_path / ("azure.yaml" if name == "azure.yaml" else os.path.join("infra", name))
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, 1))
        return infracheck.check(str(tmp_path))

    return change


@pytest.mark.parametrize("name, old, new, found", [
    ("app.bicep", "kind: 'StorageV2'", "kind: 'StorageV2", "syntax error"),
    ("app.bicep", "name: 'stexport${suffix}'", "name: 'stexport${sufix}'", "'sufix' is not declared"),
    ("app.bicep", "take(suffix, 12)", "takeFirst(suffix, 12)", "unknown function 'takeFirst'"),
    ("app.bicep", "'Microsoft.Web/serverfarms@2024-04-01'", "'Microsoft.Web/serverfarms'", "not Namespace/type@api"),
    ("main.bicep", "    schedules: schedules\n", "", "app.bicep requires parameter 'schedules'"),
    ("main.bicep", "    schedules: schedules\n", "    schedules: schedules\n    extra: 1\n", "no parameter 'extra'"),
    ("main.bicep", "param location string\n", "param region string\n", "main.bicep has no parameter 'location'"),
    ("app.bicep", "name: 'FC1'", "name: 'Y1'", "no Flex Consumption plan"),
    ("app.bicep", "version: '3.11'", "version: '3.10'", "runtime must be python 3.11"),
    ("app.bicep", "type: 'SystemAssigned'\n  }\n  properties: {\n    serverFarmId",
     "type: 'None'\n  }\n  properties: {\n    serverFarmId", "system-assigned identity"),
    ("app.bicep", "  roles.storageQueueDataContributor\n", "", "not granted Storage Queue Data Contributor"),
    ("app.bicep", "storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'",
     "storageBlobDataOwner: '8e3af657-a8ff-443c-a75c-2fe8c4bcb635'", "which the app does not need"),
    ("app.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true", "allowSharedKeyAccess: false"),
    ("app.bicep", "    EXPORT_SCHEDULES: schedules\n", "    EXPORT_SCHEDULE: schedules\n",
     "'EXPORT_SCHEDULE' is not one the app or the host reads"),
    ("app.bicep", "    APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString\n", "",
     "'APPLICATIONINSIGHTS_CONNECTION_STRING' is missing"),
    ("app.bicep", "'@Microsoft.KeyVault(SecretUri=${sasKeySecret.properties.secretUri})'", "sasEncryptionKey",
     "'EXPORT_SAS_ENCRYPTION_KEY' must be a Key Vault reference"),
    ("eventgrid.bicep", "subjectEndsWith: '/manifest.json'", "subjectEndsWith: '.json'", "subjectEndsWith must be"),
    ("eventgrid.bicep", "var functionName = 'OnBlobCreated'", "var functionName = 'OnBlob'",
     "Host.Functions.OnBlobCreated"),
    ("eventgrid.bicep", "'Microsoft.Storage.BlobCreated'", "'Microsoft.Storage.BlobDeleted'", "BlobCreated only"),
    ("app.bicep", "${tenant().tenantId}/v2.0'", "${tenant().tenantId}/'", "AUTH_ISSUER must be the tenant's v2.0"),
    ("app.bicep", "    AUTH_AUDIENCE: authAudience\n", "", "'AUTH_AUDIENCE' is missing"),
    ("app.bicep", "var authAudience = '${apiAppId},api://${apiAppId}'", "var authAudience = 'api://export'",
     "AUTH_AUDIENCE must name the API's application id"),
    ("app.bicep", "AUTH_ALLOW_LOOPBACK_ISSUER: 'false'", "AUTH_ALLOW_LOOPBACK_ISSUER: 'true'",
     "AUTH_ALLOW_LOOPBACK_ISSUER must be 'false'"),
    ("main.parameters.json", "${AUTH_API_APP_ID}", "${API_APP}", "apiAppId must be ${AUTH_API_APP_ID}"),
    ("api-app-roles.json", '"value": "Data.Erase"', '"value": "Data.Delete"', "app roles must be exactly"),
    ("api-app-roles.json", '"fd742b02-7e72-4432-ba93-4f80a7a2416d"', '"3c3c109d-57d8-4419-81e5-86fbcb46e624"',
     "its own fixed id"),
    ("api-app-roles.json", '"allowedMemberTypes": ["User", "Application"],\n    "isEnabled": true\n  }\n]',
     '"allowedMemberTypes": ["User"],\n    "isEnabled": true\n  }\n]', "Apps.Admin must be assignable to applications"),
    ("azure.yaml", "  preprovision:", "  prepackage:", "the preprovision hook that makes the API's app registration"),
    ("hooks/preprovision.sh", '"requestedAccessTokenVersion": 2', '"requestedAccessTokenVersion": 1',
     "ask for version 2 tokens"),
])
def test_a_broken_file_is_reported_with_what_is_wrong(infra_copy, name, old, new, found):
    problems = infra_copy(name, old, new)
    assert any(found in problem for problem in problems), problems


def test_the_blob_trigger_the_subscription_feeds_is_event_grid_sourced():
    trigger = infracheck._trigger_of("OnBlobCreated")
    assert (trigger["type"], trigger["source"]) == ("blobTrigger", "EventGrid")
