"""Queue trigger: one slice of an erasure task's work (shared.erasure.service); the task goes on in a message of
its own until it ends."""

import logging

import azure.functions as func

from shared.erasure import service
from shared.tasks.messages import MAX_DEQUEUE_COUNT


def main(msg: func.QueueMessage) -> None:
    try:
        message = service.EraseMessage.from_json(msg.get_body())
    except ValueError as error:
        logging.error("EraseData: malformed message %s: %s", msg.id, error)
        raise
    service.work_or_retry(message, last_try=(msg.dequeue_count or 1) >= MAX_DEQUEUE_COUNT)
