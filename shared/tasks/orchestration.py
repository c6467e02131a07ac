"""The durable-style life of an export job, as the triggers see it: StartExport restarts stranded jobs,
PollExport monitors a job, ExportWorker runs one work item, the API cancels. Each part is a module of its own:

- shared.tasks.messages: the poll and work messages and their queues;
- shared.tasks.monitoring: start, monitor, commit (the decision: shared.tasks.monitor), the safety net;
- shared.tasks.workitems: one work item, fair slots, the next item of the window;
- shared.tasks.ending: finishing once, cancelling, failing.

Every handler is idempotent, because the host delivers a message at least once.
"""

from __future__ import annotations

from shared.tasks.ending import cancel, fail
from shared.tasks.messages import MAX_DEQUEUE_COUNT, POLL_QUEUE, WORK_QUEUE, PollMessage, WorkMessage, send_poll
from shared.tasks.monitoring import POLL_DELAYS, poll, poll_delivery, request_start, restart_stranded_jobs
from shared.tasks.workitems import run_item, work

__all__ = ["MAX_DEQUEUE_COUNT", "POLL_DELAYS", "POLL_QUEUE", "WORK_QUEUE", "PollMessage", "WorkMessage", "cancel",
           "fail", "poll", "poll_delivery", "request_start", "restart_stranded_jobs", "run_item", "send_poll", "work"]
