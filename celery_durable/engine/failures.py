"""What happens when a call or a job fails: schedule it again, or end it.

A retry ends the current Celery task with Celery's own ``Retry`` (so ``task_retry``,
``on_retry``, result backends and Flower see it) after the job row was released in
state retrying with ``not_before`` set. Short delays travel as a countdown message;
longer ones (``durable_max_countdown``) are not published at all: the row's deadline
is the due time, and the recovery sweeper publishes the job then, so no worker holds
an unacked ETA message for minutes or hours.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from celery import Task
from celery.exceptions import Retry

from ..errors import interrupt_on_storage_error
from ..retry import final_reason, job_policy
from ..store.records import JobState
from .finish import finish
from .positions import discard_from_first_failure
from .publish import publish_again
from .recorded_errors import CallRetryPending, encode_error, job_retryable

if TYPE_CHECKING:
    from datetime import datetime

    from .context import Execution
    from .runtime import Runtime

logger = logging.getLogger(__name__)


def retry_call(
    runtime: Runtime,
    task: Task,
    request: Any,
    execution: Execution,
    pending: CallRetryPending,
) -> NoReturn:
    now = runtime.now()
    not_before = now + timedelta(seconds=pending.delay)
    record = pending.record
    with interrupt_on_storage_error(execution.root_id):
        runtime.storage.retry_call(
            record,
            execution.lease,
            not_before,
            deliver_by_for_wait(runtime, not_before, pending.delay),
            now,
        )
    execution.released = True
    execution.ended(
        "retrying", pending.error, retry_of="call", attempt=record.attempts + 1, delay=pending.delay
    )
    logger.warning(
        "job %s: call %s failed (%s: %s); attempt %d of the call in %.3gs",
        execution.root_id,
        record.name,
        type(pending.error).__name__,
        pending.error,
        record.attempts + 1,
        pending.delay,
    )
    # A call retry is not one of Celery's retries: request.retries (what max_retries
    # limits for self.retry() / autoretry_for) stays as it is.
    raise _celery_retry(
        runtime, task, request, pending.error, pending.delay, not_before, bump=False
    )


def fail_or_retry(
    runtime: Runtime,
    task: Task,
    request: Any,
    execution: Execution,
    exc: Exception,
) -> NoReturn:
    """The body raised: retry the job while its budget lasts, else fail or dead-letter it."""
    policy = job_policy(task, runtime.settings)
    reason = final_reason(exc)
    storage, lease = runtime.storage, execution.lease
    with interrupt_on_storage_error(lease.job_id):
        job = storage.get_job(lease.job_id) if job_retryable(exc) else None
        if job is not None and job.failures < policy.retry.retries:
            attempt = job.failures + 1
            delay = policy.retry.delay(attempt, exc)
            now = runtime.now()
            not_before = now + timedelta(seconds=delay)
            discard = discard_from_first_failure(lease.job_id, storage.load_history(lease.job_id))
            storage.retry_job(
                lease,
                encode_error(reason),
                discard,
                not_before,
                deliver_by_for_wait(runtime, not_before, delay),
                now,
            )
            execution.released = True
            execution.ended("retrying", reason, retry_of="job", attempt=attempt + 1, delay=delay)
            logger.warning(
                "job %s (%s) failed (%s: %s); job retry %d of %d in %.3gs",
                lease.job_id,
                task.name,
                type(reason).__name__,
                reason,
                attempt,
                policy.retry.retries,
                delay,
            )
            raise _celery_retry(runtime, task, request, reason, delay, not_before) from exc
        dead = policy.on_exhausted == "dead_letter"
        finish(
            runtime,
            request,
            lease,
            JobState.DEAD if dead else JobState.FAILED,
            None,
            encode_error(reason, no_retry=not job_retryable(exc)),
        )
        execution.ended("dead" if dead else "failed", reason)
    if dead:
        logger.error(
            "job %s (%s) moved to the dead-letter queue: %s: %s",
            lease.job_id,
            task.name,
            type(reason).__name__,
            reason,
        )
    raise exc


def deliver_by_for_wait(runtime: Runtime, not_before: datetime, delay: float) -> datetime:
    if delay > runtime.settings.max_countdown:
        return not_before  # no message: the sweeper publishes the job when it is due
    # The ETA message lives in one worker's RAM: if that worker dies, the sweeper sends
    # the job again about as soon as it would resume a crashed one (a duplicate message
    # is harmless: the claim lets one delivery run).
    settings = runtime.settings
    return not_before + timedelta(seconds=settings.lease_seconds + settings.sweep_interval)


def _celery_retry(
    runtime: Runtime,
    task: Task,
    request: Any,
    exc: BaseException,
    delay: float,
    not_before: datetime,
    *,
    bump: bool = True,
) -> Retry:
    retries = request.retries + (1 if bump else 0)
    if getattr(request, "is_eager", False):
        # .apply() / task_always_eager: Celery runs Retry.sig again in this process at
        # once, so wait here; nothing is published.
        time.sleep(max(0.0, (not_before - runtime.now()).total_seconds()))
        return Retry(exc=exc, when=delay, sig=task.signature_from_request(request, retries=retries))
    if delay > runtime.settings.max_countdown:
        return Retry(exc=exc, when=delay)
    # An ETA rather than a countdown: the message becomes due at exactly the row's
    # not_before, whatever clock Celery would have computed a countdown with.
    signature = publish_again(task, request, eta=not_before, retries=retries)
    return Retry(exc=exc, when=delay, sig=signature)
