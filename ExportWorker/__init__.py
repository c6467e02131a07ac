"""Queue trigger: exports one work item (one result file) of a job, staging its blocks idempotently."""

import logging

import azure.functions as func

from shared.tasks import orchestration


def main(msg: func.QueueMessage) -> None:
    try:
        message = orchestration.WorkMessage.from_json(msg.get_body())
    except ValueError as error:
        logging.error("ExportWorker: malformed message %s: %s", msg.id, error)
        raise
    orchestration.work(message, last_try=(msg.dequeue_count or 1) >= orchestration.MAX_DEQUEUE_COUNT)
