"""What `GET /health` reports: the settings load and the app's storage answers."""

from __future__ import annotations

from shared.platform import storage
from shared.platform.config import get_settings


def check() -> dict:
    """Raises ConfigError or a storage error when the app cannot work; otherwise says what it reached."""
    settings = get_settings()
    storage.blob_service().get_service_properties()
    return {"status": "healthy", "storage": "identity" if settings.storage.uses_identity else "connection string"}
