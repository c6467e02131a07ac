"""Queue trigger, durable-style monitor of one export job: starts it (plan + fan-out), re-enqueues itself
with a growing delay while parts run, and finishes it (commit + manifest + Succeeded) or fails it."""

import logging

import azure.functions as func

from shared.tasks import orchestration


def main(msg: func.QueueMessage) -> None:
    try:
        message = orchestration.PollMessage.from_json(msg.get_body())
    except ValueError as error:
        # Not ours to retry: it would fail the same way every time. Raised so it lands in export-poll-poison.
        logging.error("PollExport: malformed message %s: %s", msg.id, error)
        raise
    orchestration.poll_delivery(message, dequeue_count=msg.dequeue_count or 1)
