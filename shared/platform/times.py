"""Time as the service writes it: UTC, and ISO 8601 with `Z` and milliseconds in every answer and file."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime | None) -> str | None:
    """UTC ISO 8601 with `Z` and milliseconds, the form every time in the API has (None stays None)."""
    return None if moment is None else iso_text(moment)


def parse_iso(text: str | None) -> dt.datetime | None:
    """A time the service wrote (``iso``, or Python's own ``isoformat``) read back; None stays None."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def iso_text(moment: dt.datetime) -> str:
    """``iso`` of a time that is always there."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
