"""Timer: every pipeline's next step (shared.pipelines.driver): the run in flight recorded when it ends (and a
failed one tried again), the next period's first run, and late runs for records that arrived after their period
was delivered; then each pipeline's alerts. Every 15 seconds, so that late records wait little more than the
pipeline's lateDeliveryMinutes. Harmless when two instances fire at once: each change is conditional on the
pipeline's ETag."""

import datetime as dt
import logging

import azure.functions as func

from shared.pipelines import driver


def main(timer: func.TimerRequest) -> None:
    steps = driver.tick(dt.datetime.now(dt.UTC))
    if steps:
        logging.info("RunPipelines: %s%s", ", ".join(f"{step} x{count}" for step, count in sorted(steps.items())),
                     " (timer was past due)" if timer.past_due else "")
