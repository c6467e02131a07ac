"""What `GET /health` reports: the settings load and the app's storage answers."""

from __future__ import annotations

from shared.platform import storage
from shared.platform.config import get_settings


def check() -> dict:
    """Raises ConfigError or a storage error when the app cannot work; otherwise says what it reached, and how
    many storage requests this instance has made since it started (this check's own included)."""
    settings = get_settings()
    storage.blob_service().get_service_properties()
    return {"status": "healthy", "storage": "identity" if settings.storage.uses_identity else "connection string",
            "storageRequests": storage.requests_made()}
