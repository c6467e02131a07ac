"""The messages of a job's life on the app's own queues: small JSON documents, each carrying the job's trace and
when it was due (telemetry only); a message that cannot be read raises ValueError, so it goes to the poison
queue instead of being retried."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

from shared.platform import storage

POLL_QUEUE = "export-poll"
WORK_QUEUE = "export-work"
# Must equal host.json extensions.queues.maxDequeueCount: a message's last try is the one that records failure.
MAX_DEQUEUE_COUNT = 5


def _hop_fields(doc: dict) -> dict:
    """The optional fields every message of a job carries: the job's trace (W3C traceparent) and when the
    message was due on its queue (epoch seconds). Ill-formed ones are dropped: they are telemetry only."""
    trace, due = doc.get("trace"), doc.get("due")
    return {"trace": trace if isinstance(trace, str) else None,
            "due": float(due) if isinstance(due, (int, float)) and not isinstance(due, bool) else None}


def _with_hop_fields(doc: dict, trace: str | None, due: float | None) -> str:
    if trace is not None:
        doc["trace"] = trace
    if due is not None:
        doc["due"] = round(due, 3)
    return json.dumps(doc)


@dataclass(frozen=True)
class PollMessage:
    app_id: str
    job_id: str
    attempt: int = 0
    trace: str | None = None
    due: float | None = None

    def to_json(self) -> str:
        return _with_hop_fields({"app": self.app_id, "job": self.job_id, "attempt": self.attempt}, self.trace,
                                self.due)

    @classmethod
    def from_json(cls, body: bytes) -> PollMessage:
        try:
            doc = json.loads(body)
            return cls(app_id=str(doc["app"]), job_id=str(doc["job"]), attempt=int(doc.get("attempt", 0)),
                       **_hop_fields(doc))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a poll message: {error!r}") from None


def send_poll(message: PollMessage, *, delay_seconds: int = 0) -> None:
    message = replace(message, due=time.time() + delay_seconds)
    storage.send_message(POLL_QUEUE, message.to_json(), delay_seconds=delay_seconds)


@dataclass(frozen=True)
class WorkMessage:
    """One work item of a job. ``window`` is how many of the job's items are on the queue at once: an item
    that ends sends the item ``window`` places after it (None: every item was sent at the start)."""

    app_id: str
    job_id: str
    index: int
    window: int | None = None
    trace: str | None = None
    due: float | None = None

    def to_json(self) -> str:
        doc = {"app": self.app_id, "job": self.job_id, "item": self.index}
        if self.window is not None:
            doc["window"] = self.window
        return _with_hop_fields(doc, self.trace, self.due)

    @classmethod
    def from_json(cls, body: bytes) -> WorkMessage:
        try:
            doc = json.loads(body)
            window = doc.get("window") if isinstance(doc, dict) else None
            if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
                raise ValueError(f"window {window!r} is not a positive integer")
            return cls(app_id=str(doc["app"]), job_id=str(doc["job"]), index=int(doc["item"]), window=window,
                       **_hop_fields(doc))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a work message: {error!r}") from None


def send_work(message: WorkMessage) -> None:
    storage.send_message(WORK_QUEUE, replace(message, due=time.time()).to_json())
