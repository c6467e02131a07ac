"""Fixtures: one real Azurite for the session (free loopback ports, temporary data folder), and for each
test fresh names plus the environment the app reads, pointed at that Azurite."""

from __future__ import annotations

import os
import sys
import uuid

import pytest
from hypothesis import settings as hypothesis_settings

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import oidc_issuer  # noqa: E402

from devhost.azurite import Azurite  # noqa: E402
from shared.platform import config  # noqa: E402

# The suite is deterministic: each property test draws the same examples on every run and machine, and no
# example database carries failures from one run into the next. HYPOTHESIS_PROFILE=explore draws new ones.
hypothesis_settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("explore", database=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

TEST_SAS_KEY = "dGVzdHMtb25seS1rZXktMzItYnl0ZXMtbG9uZy0hISE="


@pytest.fixture(scope="session")
def azurite(request, tmp_path_factory):
    if request.config.getoption("markexpr") == "pure":
        pytest.fail("a test of `make test-pure` (marked pure) asked for Azurite: mark it pure only if it needs none")
    emulator = Azurite.on_free_ports(str(tmp_path_factory.mktemp("azurite")))
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def names():
    """A fresh suffix per test, for container, queue and table names that no other test uses."""
    suffix = uuid.uuid4().hex[:10]

    class Names:
        def container(self, base="c"):
            return f"{base}-{suffix}"

        def queue(self, base="q"):
            return f"{base}-{suffix}"

        def table(self, base="t"):
            return f"{base}{suffix}"

        token = suffix

    return Names()


@pytest.fixture(scope="session")
def app_env(azurite):
    """The app's settings, for the whole session: storage is the session's Azurite."""
    saved = dict(os.environ)
    os.environ.update({config.STORAGE_CONNECTION: azurite.connection_string, config.SAS_ENCRYPTION_KEY: TEST_SAS_KEY,
                       config.ALLOW_LOOPBACK_DESTINATIONS: "true",
                       config.DESTINATION_STORAGE: azurite.connection_string,
                       config.SCHEDULE_CONTAINER: "scheduled-exports"})
    config.reset_settings()
    yield azurite
    os.environ.clear()
    os.environ.update(saved)
    config.reset_settings()


@pytest.fixture
def settings_override(app_env, monkeypatch):
    """Sets app settings for one test; the settings are re-read before and after."""
    def override(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))
        config.reset_settings()

    yield override
    monkeypatch.undo()
    config.reset_settings()


# The token tests' fixtures (tests/test_entra_tokens.py, tests/test_admin_api.py): a local OpenID issuer for the
# module, and its tokens accepted by the app for one test.
@pytest.fixture(scope="module")
def issuer():
    running = oidc_issuer.LocalIssuer()
    yield running
    running.stop()


@pytest.fixture
def tokens(settings_override, issuer):
    with oidc_issuer.accepting_tokens(issuer, settings_override) as accepted:
        yield accepted

