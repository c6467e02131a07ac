"""For the command-line tools: the development settings and a running Azurite, as `make serve` has them."""

from __future__ import annotations

import atexit
import os

from devhost.azurite import REPO_ROOT, ensure_running
from devhost.host import apply_local_settings
from shared.platform.config import STORAGE_CONNECTION, expand_connection_string, reset_settings


def prepare() -> None:
    """Applies local.settings.json (existing variables win) and starts Azurite there if it is not running;
    an Azurite started here stops when the tool exits."""
    apply_local_settings(REPO_ROOT)
    reset_settings()
    started = ensure_running(expand_connection_string(os.environ.get(STORAGE_CONNECTION, "")),
                             os.path.join(REPO_ROOT, ".azurite"))
    if started is not None:
        atexit.register(started.stop)
