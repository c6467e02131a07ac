"""Timer (hourly): removes what each app no longer keeps (shared.pipelines.retention): raw partitions of days older
than its retention, snapshot log blobs a folded state holds, devices not seen for that long, late-arrival notes
and pipeline periods of those days. Harmless when two instances fire at once: each removal is of what is past,
and the snapshot state is changed only by publishing a complete new generation."""

import datetime as dt
import logging

import azure.functions as func

from shared.pipelines import retention


def main(timer: func.TimerRequest) -> None:
    done = retention.sweep(dt.datetime.now(dt.UTC))
    logging.info("ApplyRetention: %s%s", ", ".join(f"{kind} {count}" for kind, count in sorted(done.items())) or
                 "no app", " (timer was past due)" if timer.past_due else "")
