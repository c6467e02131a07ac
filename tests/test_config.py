"""Settings are read in one place, fail with their name, and no client exists before it is used."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from shared.platform import config

# Runs without Azurite or a host: `make test-pure`.
pytestmark = pytest.mark.pure

KEY = "dGVzdHMtb25seS1rZXktMzItYnl0ZXMtbG9uZy0hISE="


def test_missing_storage_setting_fails_with_its_name():
    with pytest.raises(config.ConfigError, match="AzureWebJobsStorage is not set"):
        config.load_settings({config.SAS_ENCRYPTION_KEY: KEY})


def test_missing_encryption_key_fails_with_its_name():
    with pytest.raises(config.ConfigError, match="EXPORT_SAS_ENCRYPTION_KEY is not set"):
        config.load_settings({config.STORAGE_CONNECTION: "UseDevelopmentStorage=true"})


def test_development_storage_expands_to_azurite_endpoints():
    settings = config.load_settings({config.STORAGE_CONNECTION: "UseDevelopmentStorage=true",
                                     config.SAS_ENCRYPTION_KEY: KEY})
    assert "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1" in settings.storage.connection_string
    assert not settings.storage.uses_identity


def test_account_name_alone_means_managed_identity():
    settings = config.load_settings({config.STORAGE_ACCOUNT_NAME: "contoso", config.SAS_ENCRYPTION_KEY: KEY})
    assert settings.storage.uses_identity
    assert settings.storage.blob_url == "https://contoso.blob.core.windows.net"
    assert settings.storage.table_url == "https://contoso.table.core.windows.net"


@pytest.mark.parametrize("name, value, message", [
    (config.MAX_RANGE_DAYS, "a week", "EXPORT_MAX_RANGE_DAYS must be a whole number"),
    (config.MAX_RANGE_DAYS, "0", "EXPORT_MAX_RANGE_DAYS must be 1 or more, not 0"),
    (config.CONVERT_PROCESSES, "-1", "EXPORT_CONVERT_PROCESSES must be 0 or more, not -1"),
    (config.CONVERT_PROCESSES, "all", "EXPORT_CONVERT_PROCESSES must be a whole number"),
    (config.ALLOW_LOOPBACK_DESTINATIONS, "maybe", "EXPORT_ALLOW_LOOPBACK_DESTINATIONS must be true or false"),
    (config.SAS_ENCRYPTION_KEY, "c2hvcnQ=", "EXPORT_SAS_ENCRYPTION_KEY is not a Fernet key"),
    (config.FORWARD_ROUTES, "[1]", "EXPORT_FORWARD_ROUTES must map export types"),
    (config.FORWARD_WEBHOOK_URL, "https://hooks.example/x", "EXPORT_FORWARD_WEBHOOK_SECRET is not set"),
])
def test_malformed_settings_name_themselves(name, value, message):
    env = {config.STORAGE_CONNECTION: "UseDevelopmentStorage=true", config.SAS_ENCRYPTION_KEY: KEY, name: value}
    with pytest.raises(config.ConfigError, match=message):
        config.load_settings(env)


def test_importing_every_function_creates_no_client_and_reads_no_setting():
    code = (
        "import importlib, os, sys\n"
        "from devhost.appmodel import load_functions\n"
        "sys.path.insert(0, os.getcwd())\n"
        "for spec in load_functions(os.getcwd()):\n"
        "    importlib.import_module(spec.name)\n"
        "from shared.platform import config, storage\n"
        "assert storage._clients == {}, storage._clients\n"
        "assert config.get_settings.cache_info().currsize == 0\n"
        "print('clean')\n"
    )
    env = {"PATH": "/usr/bin:/bin"}  # no storage setting at all: an import must still succeed
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_every_setting_is_declared_once_and_documented_as_declared():
    fields = [setting.field for setting in config.SETTINGS if setting.field is not None]
    assert sorted(fields) == sorted(config.Settings.__dataclass_fields__)  # each field filled by one declaration
    names = [setting.name for setting in config.SETTINGS]
    assert len(names) == len(set(names))
    read = {value for name, value in vars(config).items() if name.isupper() and isinstance(value, str)
            and name not in ("DEVELOPMENT_CONNECTION_STRING",)}
    # Every setting name the code reads is declared, except the service URIs documented with the account name.
    assert read - set(names) == {config.STORAGE_BLOB_URI, config.STORAGE_QUEUE_URI, config.STORAGE_TABLE_URI}
    with open(os.path.join(REPO_ROOT, "docs", "operations.md"), encoding="utf-8") as handle:
        assert config.markdown_table() in handle.read()


def test_the_defaults_are_the_declared_ones():
    settings = config.load_settings({config.STORAGE_CONNECTION: "UseDevelopmentStorage=true",
                                     config.SAS_ENCRYPTION_KEY: KEY})
    assert (settings.max_range_days, settings.part_max_bytes, settings.schedule_container, settings.forward_routes,
            settings.probe_destination, settings.collect_rate_limit) == (366, 64 * 1024 * 1024, "scheduled-exports",
                                                                         {}, True, 0)
    assert settings.convert_processes == config._default_convert_processes()
