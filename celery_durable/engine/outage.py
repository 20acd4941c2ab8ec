"""Riding out a durable database that cannot be reached while a message is delivered.

A delivery that cannot reach the store must neither run the body (nothing it did could
be checkpointed) nor be acked as a failure (the job would be stranded until its
delivery deadline). It waits instead, in the process that holds the message, retrying
with a capped exponential backoff: the job runs within a couple of seconds of the
database coming back, and a long outage costs each worker slot one attempt every few
seconds, not a redelivery storm. After ``durable_storage_wait`` seconds (20 by default,
less than the warm shutdown's grace), or a second before the task's time limit, the
message goes back to the broker (``Reject(requeue=True)``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from celery.exceptions import Reject, SoftTimeLimitExceeded

from ..errors import StorageUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_PAUSE = 0.05
LONGEST_PAUSE = 2.0


def patiently(
    attempt: Callable[[], T],
    *,
    patience: float,
    job_id: str,
    doing: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``attempt()``, tried again while it raises StorageUnavailable; after ``patience``
    seconds (or if the task's soft time limit comes first), Reject(requeue=True): the
    message goes back to the broker, never acked as a failure."""
    try:
        return _retrying(attempt, patience, job_id, doing, sleep)
    except SoftTimeLimitExceeded:
        logger.error(
            "job %s: the soft time limit came while waiting for the database; the "
            "message goes back to the broker",
            job_id,
        )
        raise Reject("soft time limit while waiting for the database", requeue=True) from None


def _retrying(
    attempt: Callable[[], T],
    patience: float,
    job_id: str,
    doing: str,
    sleep: Callable[[float], None],
) -> T:
    deadline = time.monotonic() + patience
    pause, tries = FIRST_PAUSE, 0
    while True:
        try:
            result = attempt()
        except StorageUnavailable as exc:
            tries += 1
            left = deadline - time.monotonic()
            if left <= 0:
                logger.error(
                    "job %s: the durable database is still unreachable after %.3gs "
                    "(%s); the message goes back to the broker",
                    job_id,
                    patience,
                    exc,
                )
                raise Reject(str(exc), requeue=True) from exc
            if tries == 1:
                logger.warning(
                    "job %s: cannot %s: %s; waiting for the database (up to %.3gs)",
                    job_id,
                    doing,
                    exc,
                    patience,
                )
            # equal jitter: workers waiting on one database do not retry in lockstep
            sleep(min(left, random.uniform(pause / 2, pause)))
            pause = min(LONGEST_PAUSE, pause * 2)
            continue
        if tries:
            logger.warning(
                "job %s: the durable database answers again (after %d tries)", job_id, tries
            )
        return result
