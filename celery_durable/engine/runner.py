"""Running one delivery of a durable job: claim the lease, load history, run, finish.

Outcomes of a delivery:
- claimed: the body runs (replaying completed calls), then the job is finished,
  fenced on the lease;
- another execution holds a live lease: ``Ignore`` (the message is acked, nothing is
  stored; if that execution dies, recovery republishes the job);
- the job already finished: a succeeded job returns its stored result, any other is
  ignored, and the body does not run.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from celery.exceptions import Ignore, Reject, Retry

from .. import serialization
from ..errors import (
    Cancelled,
    ConfigurationError,
    LeaseLost,
    StorageInterrupted,
    StorageUnavailable,
    ValidationError,
    interrupt_on_storage_error,
)
from ..identifiers import ID_COLUMN, check_text
from ..observability.hooks import JobInfo, Outcome
from ..retry import call_policy
from ..store.records import Claim, ClaimOutcome, Gate, Held, JobState, Lease
from .context import Execution, activate, deactivate, task_determinism
from .debounce import DEBOUNCED_HEADER, latest_arguments
from .enqueue import due_from_request, header, new_job, options_from_request, shown_name
from .failures import fail_or_retry, retry_call
from .finish import finish
from .flow import free_slots, gate_for, limits_of
from .loop import run_body
from .outage import patiently
from .outbox import OUTBOX_HEADER
from .positions import CANCELLED_MARKER
from .publish import publish_again, publish_or_leave
from .recorded_errors import CallRetryPending, encode_error
from .suspend import Suspend, suspend

if TYPE_CHECKING:
    from celery import Task

    from .runtime import Runtime

logger = logging.getLogger(__name__)
HOSTNAME = socket.gethostname()


def new_owner() -> str:
    """A fresh lease token per execution; host and pid make it readable in the table."""
    return f"{HOSTNAME}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def run_job(
    runtime: Runtime,
    task: Task,
    request: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    job_id: str = _checked_id(request)
    begun = time.monotonic()
    # Decided now: Celery before 5.7 pops the chain off the request before on_success.
    request.durable_canvas = has_canvas(request)
    owner = new_owner()  # one per delivery, also across claim attempts during an outage
    claimed = patiently(
        lambda: _claim(runtime, task, request, args, kwargs, owner),
        patience=_patience(runtime, task, request, begun),
        job_id=job_id,
        doing="claim the job",
    )
    if isinstance(claimed, _Stored):
        return claimed.result
    lease, attempts, slot_key = claimed
    watch = runtime.lease_keeper.hold(lease)
    execution: Execution | None = None
    started = time.monotonic()
    try:
        # A first execution has no history; stores that return the attempt count with
        # the claim save the query.
        with interrupt_on_storage_error(job_id):
            if header(request, DEBOUNCED_HEADER):
                args, kwargs = latest_arguments(runtime, job_id, args, kwargs)
            history = (
                {}
                if attempts == 1
                else {(c.job_id, c.seq): c for c in runtime.storage.load_history(job_id)}
            )
        if any(c.name == CANCELLED_MARKER for c in history.values()):
            watch.cancel_raised = True  # resumed while compensating a cancel: it still ends so
        execution = Execution(
            runtime=runtime,
            task_name=task.name,
            job_id=job_id,
            root_id=job_id,
            lease=lease,
            history=history,
            watch=watch,
            call_policy=call_policy(task, runtime.call_policy),
            determinism=task_determinism(task, runtime.determinism),
        )
        if runtime.observers.active:
            execution.info = _job_info(runtime, task, request, args, kwargs, attempts)
            runtime.observers.job_started(execution.info)
        token = activate(execution)
        try:
            return _run_body(runtime, task, request, execution, args, kwargs)
        finally:
            deactivate(token)
    except LeaseLost:
        logger.warning("job %s: lease lost to another execution; stopping here", job_id)
        raise Ignore() from None
    except StorageInterrupted as exc:
        _ride_out(runtime, lease, exc, _patience(runtime, task, request, begun))
    finally:
        runtime.lease_keeper.drop(lease)
        if slot_key is not None:  # whatever the outcome, the slot is free: pass it on
            free_slots(runtime, task, slot_key)
        if execution is not None and execution.info is not None:
            outcome = execution.outcome or Outcome("interrupted", 0.0)
            runtime.observers.job_ended(
                execution.info, dataclasses.replace(outcome, duration=time.monotonic() - started)
            )


def _checked_id(request: Any) -> str:
    """The delivered message's task id, if a store can hold it (a message sent by another
    client may carry anything): else the message is rejected, with the reason."""
    try:
        return check_text(request.id, "the delivered message's task id", ID_COLUMN)
    except ValidationError as exc:
        logger.error("%s; rejecting the message", exc)
        raise Reject(str(exc), requeue=False) from None


def _job_info(
    runtime: Runtime,
    task: Task,
    request: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    attempts: int | None,
) -> JobInfo:
    return JobInfo(
        id=request.id,
        task=shown_name(task.name, args),
        args=tuple(args),
        kwargs=dict(kwargs),
        queue=(request.delivery_info or {}).get("routing_key"),
        execution=attempts,
        started_at=runtime.now(),
        trace_parent=_trace_parent(request),
        due_at=due_from_request(request),
    )


def _patience(runtime: Runtime, task: Task, request: Any, begun: float) -> float:
    """How long this delivery may wait for the database: ``durable_storage_wait``, but
    always ending a second before the task's time limit (soft or hard) would."""
    hard, soft = (getattr(request, "timelimit", None) or (None, None))[:2]
    limits = [v for v in (hard, soft, task.time_limit, task.soft_time_limit) if v]
    patience = runtime.settings.storage_wait
    if limits:
        patience = min(patience, min(limits) - (time.monotonic() - begun) - 1.0)
    return max(0.0, patience)


def _ride_out(runtime: Runtime, lease: Lease, exc: StorageInterrupted, patience: float) -> NoReturn:
    """The store failed mid-job. If it is really away, wait for it, give the job back
    and requeue the message, so the job replays within seconds of the database's return
    instead of after its lease expires. If it answers at once, the error was the
    statement's own (a packet too large, a timeout): leave the job to recovery, which
    counts the round (``durable_max_recoveries``) instead of requeueing it forever."""
    try:
        runtime.storage.get_job(lease.job_id)
    except StorageUnavailable:
        logger.error("%s; waiting for the database to hand the job back", exc)
    else:
        logger.error(
            "%s; the database answers, so the job is left to recovery (its lease expires)", exc
        )
        raise Ignore() from None

    def give_back() -> None:
        runtime.storage.release_job(
            lease, JobState.PENDING, runtime.deliver_by(None), runtime.now()
        )

    try:
        patiently(give_back, patience=patience, job_id=lease.job_id, doing="give the job back")
    except Reject:
        logger.error("job %s: recovery resumes it when its lease expires", lease.job_id)
        raise Ignore() from None
    except LeaseLost:
        pass  # finished after all (the reply was lost) or resumed elsewhere: the
        # redelivery finds out which, and reports a finished job to Celery once
    raise Reject(str(exc), requeue=True) from None


def _trace_parent(request: Any) -> str | None:
    return header(request, "durable_trace")


class _Stored:
    def __init__(self, result: Any) -> None:
        self.result = result


def _claim(
    runtime: Runtime,
    task: Task,
    request: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    owner: str,
) -> tuple[Lease, int | None, str | None] | _Stored:
    """The lease, the attempt count (if the store told), and the concurrency key whose
    slot the execution holds (None: no limit)."""
    storage, job_id = runtime.storage, request.id
    now = runtime.now()
    until = now + timedelta(seconds=runtime.settings.lease_seconds)
    queue = (request.delivery_info or {}).get("routing_key")
    limits = limits_of(task)
    gate = _gate(runtime, task, request, args, kwargs, (owner, now, until, queue))

    def take() -> Claim:
        if gate is not None:
            return storage.claim_gated(job_id, owner, now, until, gate)
        return storage.claim_job(job_id, owner, now, until, queue)

    claim = take()
    if claim.outcome is ClaimOutcome.MISSING:
        if header(request, OUTBOX_HEADER):
            # enqueued in a transaction whose row was rolled back after all (a savepoint)
            logger.warning("job %s: its enqueue was rolled back; dropping the message", job_id)
            raise Ignore()
        # Sent without going through DurableTask.apply_async (send_task, another app).
        storage.create_job(
            new_job(
                runtime,
                task.name,
                job_id,
                args,
                kwargs,
                queue=queue,
                priority=None,
                eta=None,
                options=options_from_request(request),
                flow_key=gate.concurrency_key if gate and gate.concurrency else None,
            )
        )
        claim = take()
    if claim.outcome is ClaimOutcome.CLAIMED:
        return Lease(job_id, owner), claim.attempts, claim.flow_key
    job = claim.job
    if job is not None and job.lease_owner == owner and job.state is JobState.RUNNING:
        # An earlier attempt of this delivery claimed it, and the reply was lost.
        slot = job.flow_key if limits.concurrency is not None else None
        return Lease(job_id, owner), job.attempts, slot
    if claim.outcome is ClaimOutcome.HELD:
        _leave_held(runtime, task, request, claim, now)
        raise Ignore()
    if claim.outcome is ClaimOutcome.EARLY and job is not None and job.not_before:
        _resend_early(runtime, task, request, job, now)
        raise Ignore()
    if claim.outcome is ClaimOutcome.FINISHED and job is not None:
        logger.info("job %s already %s; not running it again", job_id, job.state.value)
        if job.state is JobState.SUCCEEDED:
            if job.reported_at is not None and request.durable_canvas:
                # The execution that finished it continued its chain, links or chord
                # and stored its result: doing it again would run the next steps twice.
                raise Ignore()
            # No canvas, or its execution died before Celery continued it: Celery
            # stores the result (again: the same value) and continues the canvas now.
            return _Stored(serialization.loads(job.result))
    else:
        logger.info(
            "job %s is being run by %s; ignoring this delivery",
            job_id,
            job.lease_owner if job else "?",
        )
    raise Ignore()


def _gate(
    runtime: Runtime,
    task: Task,
    request: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    claim: tuple[str, datetime, datetime, str | None],
) -> Gate | None:
    """The limits this delivery's claim must pass (None: the task has none)."""
    limits = limits_of(task)
    if not limits.active:
        return None
    try:
        return gate_for(runtime, task, limits, args, kwargs, claim[3])
    except ConfigurationError as exc:  # a key function that fails on these arguments
        _fail_unkeyed(runtime, request, *claim, exc)


def _fail_unkeyed(
    runtime: Runtime,
    request: Any,
    owner: str,
    now: datetime,
    until: datetime,
    queue: str | None,
    exc: ConfigurationError,
) -> NoReturn:
    """The job's limit key cannot be computed (its function raised at delivery, though
    it did not at enqueue): the job fails with that error, instead of coming back
    forever."""
    claim = runtime.storage.claim_job(request.id, owner, now, until, queue)
    if claim.outcome is ClaimOutcome.CLAIMED:
        logger.error("job %s: %s; failing it", request.id, exc)
        finish(runtime, request, Lease(request.id, owner), JobState.FAILED, None, encode_error(exc))
    raise Reject(str(exc), requeue=False)


def _resend_early(runtime: Runtime, task: Task, request: Any, job: Any, now: Any) -> None:
    """Delivered before it is due (a retry's backoff, a debounce window moved on, a
    duplicate message, a clock ahead of ours): send it again for the rest of the wait,
    unless the wait is long enough that the sweeper publishes the job when it is due."""
    wait = (job.not_before - now).total_seconds()
    logger.info("job %s delivered %.3gs before it is due", job.id, wait)
    if wait > runtime.settings.max_countdown:
        return
    if job.debounce_key is not None:  # from the row: the latest arguments
        publish_or_leave(runtime, job, "debounced", eta=job.not_before)
    else:
        publish_again(task, request, eta=job.not_before)


def _leave_held(runtime: Runtime, task: Task, request: Any, claim: Claim, now: Any) -> None:
    """The job waits in SQL and this delivery's message is acked: send what brings it
    back (the older jobs a free slot goes to; the job itself when its rate turn is due,
    unless that is far enough off for recovery to publish it then)."""
    logger.info("job %s held: %s", request.id, claim.held.value if claim.held else "?")
    for waiter in claim.waiters:
        publish_or_leave(runtime, waiter, "next in line for a slot")
    due = claim.due_at
    if (
        claim.held is Held.RATE
        and due
        and (due - now).total_seconds() <= runtime.settings.max_countdown
    ):
        publish_again(task, request, eta=due)


def _run_body(
    runtime: Runtime,
    task: Task,
    request: Any,
    execution: Execution,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    lease = execution.lease
    try:
        result = _call_body(task, execution, args, kwargs)
        encoded = serialization.dumps(result, what=f"the result of task {task.name!r}")
        if execution.watch.cancel_raised:  # the body caught Cancelled and compensated
            finish(
                runtime,
                request,
                lease,
                JobState.CANCELLED,
                encoded,
                encode_error(Cancelled(execution.root_id)),
            )
            execution.ended("cancelled")
            return result
    except Retry as exc:
        if not execution.released:  # raised without self.retry() re-sending: hand back
            release(runtime, lease, JobState.RETRYING, runtime.deliver_by(None))
        execution.ended("retrying", exc.exc, retry_of="celery")
        raise
    except Reject as exc:
        if exc.requeue:  # the message goes back to the queue: the job stays runnable
            release(runtime, lease, JobState.PENDING, runtime.deliver_by(None))
            execution.ended("pending", exc)
        else:
            finish(runtime, request, lease, JobState.FAILED, None, encode_error(exc))
            execution.ended("failed", exc)
        raise
    except Ignore as exc:  # also what self.replace() raises once the replacement is sent
        finish(runtime, request, lease, JobState.CANCELLED, None, encode_error(exc))
        execution.ended("cancelled", exc)
        raise
    except Suspend as waiting:
        if not execution.watch.cancel_raised:  # (a compensating body may suspend)
            _stop_if_cancelled(runtime, request, execution, None)
        suspend(runtime, task, request, execution, waiting)
        _end_cancelled(runtime, request, execution, None)  # cancelled just now
    except CallRetryPending as pending:
        _stop_if_cancelled(runtime, request, execution, pending.error)
        retry_call(runtime, task, request, execution, pending)
    except Exception as exc:
        watch = execution.watch
        if watch.cancel_raised or watch.cancelled.is_set() or isinstance(exc, Cancelled):
            finish(runtime, request, lease, JobState.CANCELLED, None, encode_error(exc))
            execution.ended("cancelled", exc)
            raise
        fail_or_retry(runtime, task, request, execution, exc)
    finish(runtime, request, lease, JobState.SUCCEEDED, encoded, None)
    execution.ended("succeeded")
    return result


def _call_body(
    task: Task, execution: Execution, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    result = task.run(*args, **kwargs)
    if inspect.iscoroutine(result):  # an async def body: run on this thread's loop
        execution.is_async = True
        return run_body(execution, result)
    return result


def has_canvas(request: Any) -> bool:
    """The delivery continues a canvas when it succeeds: a chain, link callbacks, or a
    chord it is a header task of."""
    return bool(
        getattr(request, "callbacks", None)
        or getattr(request, "chain", None)
        or getattr(request, "chord", None)
    )


def _stop_if_cancelled(
    runtime: Runtime, request: Any, execution: Execution, error: BaseException | None
) -> None:
    """A cancelled job neither retries nor suspends: it ends here."""
    if execution.watch.cancelled.is_set():
        _end_cancelled(runtime, request, execution, error)


def _end_cancelled(
    runtime: Runtime, request: Any, execution: Execution, error: BaseException | None
) -> NoReturn:
    finish(
        runtime,
        request,
        execution.lease,
        JobState.CANCELLED,
        None,
        encode_error(Cancelled(execution.root_id)),
    )
    execution.ended("cancelled", error)
    raise Cancelled(execution.root_id) from error


def release(runtime: Runtime, lease: Lease, state: JobState, deliver_by: datetime) -> None:
    with interrupt_on_storage_error(lease.job_id):
        runtime.storage.release_job(lease, state, deliver_by, runtime.now())
