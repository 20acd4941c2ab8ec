"""Dispatched calls and ``gather()``: calls that run as jobs of their own, elsewhere.

``call(charge_card.s(order).set(queue="payments"))``: a signature with a queue (or a
routing key or exchange) set is *dispatched*. The call becomes a child job on that
queue (a small durable job, ``celery_durable.dispatched``, that runs the task with
``call()``, so call retries apply and a durable task gets a history of its own) and the
parent suspends: its Celery task ends and its worker slot is free. When the child
finishes, the parent is published again and replays to the call, which returns the
child's result or raises ``CallError``.

The child's id is ``"<parent scope>.<seq>"``, recorded with the checkpoint in the same
transaction that creates the child, so a replayed parent never dispatches it twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery.canvas import Signature

from .. import serialization
from ..determinism import Determinism
from ..errors import (
    CallError,
    ConfigurationError,
    interrupt_on_storage_error,
)
from ..store.records import CallRecord, CallState, JobRecord, JobState, NewJob
from .context import Execution, derived_id
from .enqueue import DISPATCH_TASK, new_job
from .finish import PARENT_HEADER
from .matching import EndOfHistory, recorded_for
from .positions import dispatched_child
from .steps import check_may_run, replay_recorded
from .suspend import Suspend

if TYPE_CHECKING:
    from .runtime import Runtime

ROUTING_OPTIONS = ("queue", "routing_key", "exchange")
_FAILED = (JobState.FAILED, JobState.DEAD, JobState.CANCELLED)
# Message options a dispatched signature may carry to its child job.
_CHILD_OPTIONS = (*ROUTING_OPTIONS, "priority", "expires", "time_limit", "soft_time_limit")
_IGNORED_OPTIONS = ("headers", "task_id", "subtask_type", "immutable")


def is_dispatched(target: object) -> bool:
    """A signature with a queue, routing key or exchange set runs as a child job."""
    return isinstance(target, Signature) and any(
        target.options.get(name) for name in ROUTING_OPTIONS
    )


def call_dispatched(
    execution: Execution,
    target: Signature[Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    retries: int | None,
    backoff: float | None,
) -> Any:
    spec = Signature(
        target.task,
        args=(*target.args, *args),
        kwargs={**target.kwargs, **kwargs},
        options=dict(target.options),
        app=execution.runtime.app,
    )
    return gather_calls(
        execution,
        [spec],
        _never_in_process,
        return_exceptions=False,
        retries=retries,
        backoff=backoff,
    )[0]


def _never_in_process(spec: Signature[Any]) -> Any:
    raise AssertionError(f"{spec.task} is dispatched, never run in-process")  # pragma: no cover


@dataclass
class _Slot:
    """One call of a gather: done (value or error), waiting on a child, or new."""

    seq: int = 0
    value: Any = None
    error: CallError | None = None
    record: CallRecord | None = None
    """The checkpoint: as recorded (waiting), or to write (new)."""
    child: NewJob | None = None
    """New: the child job to create (None once an earlier child is reused)."""
    child_id: str | None = None
    new: bool = False
    done: bool = False


def gather_calls(
    execution: Execution,
    specs: list[Signature[Any]],
    in_process: Callable[[Signature[Any]], Any],
    *,
    return_exceptions: bool,
    retries: int | None = None,
    backoff: float | None = None,
) -> list[Any]:
    """Dispatch the signatures that go elsewhere, run the others with ``in_process``
    (``call``), and return the outcomes in order once every one is known."""
    slots: list[_Slot] = []
    for spec in specs:
        if is_dispatched(spec):
            slots.append(_dispatch(execution, spec, retries, backoff))
            continue
        try:
            slots.append(_Slot(value=in_process(spec), done=True))
        except CallError as exc:
            slots.append(_Slot(error=exc, done=True))
    return _outcomes(execution, slots, return_exceptions)


def resume_dispatched(execution: Execution, seq: int, recorded: CallRecord) -> Any:
    """A position recorded as dispatched, reached by code that now calls in-process (it
    changed while the job was in flight): the child that was sent stands for the call."""
    slot = _Slot(seq=seq, record=recorded, child_id=dispatched_child(recorded))
    return _outcomes(execution, [slot], return_exceptions=False)[0]


def _outcomes(execution: Execution, slots: list[_Slot], return_exceptions: bool) -> list[Any]:
    """Take in the children that finished; suspend while any has not."""
    _settle(execution, [s for s in slots if not s.new and not s.done])
    new = [s for s in slots if s.new]
    unfinished = [s for s in slots if not s.done]
    if unfinished:
        _assign_children(execution, new)
        raise Suspend(
            calls=[s.record for s in new if s.record is not None],
            children=[s.child for s in new if s.child is not None],
            waiting_for=[s.child_id or "" for s in unfinished],
        )
    errors = [s.error for s in slots if s.error is not None]
    if errors and not return_exceptions:
        raise errors[0]
    return [s.error if s.error is not None else s.value for s in slots]


def _dispatch(
    execution: Execution, spec: Signature[Any], retries: int | None, backoff: float | None
) -> _Slot:
    unsupported = sorted(set(spec.options) - {*_CHILD_OPTIONS, *_IGNORED_OPTIONS})
    if unsupported:  # no retry can fix this: the same code sends the same options
        raise ConfigurationError(
            f"a dispatched call of {spec.task!r} cannot take the option(s) "
            f"{', '.join(unsupported)}: it runs when the job reaches it and its outcome "
            f"returns to the job (use sleep() before it for a delay). Supported: "
            f"{', '.join(_CHILD_OPTIONS)}"
        )
    name = spec.task
    args, kwargs = tuple(spec.args), dict(spec.kwargs)
    seq = execution.next_seq()
    digest = (
        None
        if execution.determinism is Determinism.EXPLICIT
        else serialization.digest(args, kwargs)
    )
    recorded = recorded_for(execution, seq, name, digest)
    if recorded is not None and recorded.state is CallState.DISPATCHED:
        return _Slot(seq=seq, record=recorded, child_id=dispatched_child(recorded))
    if recorded is not None and recorded.state is not CallState.RETRYING:
        try:
            return _Slot(seq=seq, value=replay_recorded(execution, seq, recorded), done=True)
        except CallError as exc:
            return _Slot(seq=seq, error=exc, done=True)
    check_may_run(execution, seq, recorded)
    runtime = execution.runtime
    now = runtime.now()
    child_id = derived_id(execution.job_id, seq)
    # A position an in-process attempt left in state retrying (the code changed to
    # dispatch it meanwhile) is taken over by the dispatch: its row is updated.
    attempts = recorded.attempts + 1 if recorded is not None else 1
    record = CallRecord(
        job_id=execution.job_id,
        seq=seq,
        root_id=execution.root_id,
        name=name,
        args_digest=serialization.digest(args, kwargs),
        state=CallState.DISPATCHED,
        attempts=attempts,
        result=None,
        error=None,
        started_at=now,
        finished_at=now,
    )
    return _Slot(
        seq=seq,
        record=record,
        child_id=child_id,
        new=True,
        child=_child_job(execution, child_id, spec, retries, backoff),
    )


def _child_job(
    execution: Execution,
    child_id: str,
    spec: Signature[Any],
    retries: int | None,
    backoff: float | None,
) -> NewJob:
    options = {k: spec.options[k] for k in _CHILD_OPTIONS if spec.options.get(k) is not None}
    headers = {**(spec.options.get("headers") or {}), PARENT_HEADER: execution.root_id}
    if execution.runtime.observers.middleware:  # e.g. the trace context: the child's
        headers.update(execution.runtime.observers.message_headers())  # spans nest here
    job = new_job(
        execution.runtime,
        DISPATCH_TASK,
        child_id,
        [
            spec.task,
            list(spec.args),
            dict(spec.kwargs),
            execution.call_policy.retries if retries is None else retries,
            backoff,
        ],
        {},
        queue=options.get("queue"),
        priority=options.get("priority"),
        eta=None,
        options={**options, "headers": headers, "shadow": spec.task},
    )
    return dataclasses.replace(job, parent_id=execution.root_id)


def _assign_children(execution: Execution, new: list[_Slot]) -> None:
    """Child ids for new dispatches. A position whose checkpoint was dropped (a job
    retry, a requeue) and is dispatched again with the same task and arguments reuses
    the child it sent before, unless that child failed: the same side effect is never
    started twice. A different or failed child gets a fresh id ``<base>-<n>``."""
    storage = execution.runtime.storage
    with interrupt_on_storage_error(execution.root_id):  # one query unless ids are taken
        taken = {j.id: j for j in storage.get_jobs([s.child_id or "" for s in new])}
    for slot in new:
        assert slot.child is not None and slot.record is not None and slot.child_id
        base, n, last = slot.child_id, 1, None
        while slot.child_id in taken:
            last = taken[slot.child_id]
            n += 1
            slot.child_id = f"{base}-{n}"
            with interrupt_on_storage_error(execution.root_id):
                taken.update((j.id, j) for j in storage.get_jobs([slot.child_id]))
        if (
            last is not None
            and last.args == slot.child.args
            and last.parent_id == execution.root_id
            and last.state not in _FAILED
        ):
            slot.child_id, slot.child = last.id, None
        else:
            slot.child = dataclasses.replace(slot.child, id=slot.child_id)
        slot.record = dataclasses.replace(
            slot.record,
            result=serialization.dumps({"child": slot.child_id}, what="a dispatched call"),
        )


def _settle(execution: Execution, waiting: list[_Slot]) -> None:
    """Read the children waited on; record the outcome of those that finished."""
    if not waiting:
        return
    if execution.replay_only:
        raise EndOfHistory(waiting[0].seq, "the outcome of a dispatched call")
    runtime = execution.runtime
    with interrupt_on_storage_error(execution.root_id):
        jobs = {j.id: j for j in runtime.storage.get_jobs([s.child_id or "" for s in waiting])}
    settled = []
    for slot in waiting:
        job = jobs.get(slot.child_id or "")
        if job is not None and not job.state.finished:
            continue
        assert slot.record is not None
        slot.done = True
        if job is not None and job.state is JobState.SUCCEEDED:
            slot.value = serialization.loads(job.result)
            record = dataclasses.replace(slot.record, state=CallState.SUCCEEDED, result=job.result)
        else:
            failure = _child_failure(runtime, slot.child_id or "", job)
            slot.error = CallError(
                job_id=execution.job_id,
                seq=slot.seq,
                name=slot.record.name,
                error_type=failure.get("type", "Exception"),
                error_message=failure.get("message", ""),
                attempts=int(failure.get("attempts_made", 1)),
                no_retry=bool(failure.get("no_retry")),
            )
            record = dataclasses.replace(
                slot.record,
                state=CallState.FAILED,
                attempts=slot.error.attempts,
                error=serialization.dumps(
                    {**failure, "child": slot.child_id}, what="a dispatched call's error"
                ),
            )
        # Stamped now, not when the child finished: the event stream reads by this time.
        settled.append(dataclasses.replace(record, finished_at=runtime.now()))
    if settled:
        with interrupt_on_storage_error(execution.root_id):
            runtime.storage.settle_calls(execution.lease, settled)


def _child_failure(runtime: Runtime, child_id: str, job: JobRecord | None) -> dict[str, Any]:
    """What the parent's CallError says: the task's own error, not the wrapper's."""
    if job is None:
        return {"type": "JobNotFound", "message": f"child job {child_id} no longer exists"}
    error = serialization.loads(job.error) if job.error else {}
    error = error if isinstance(error, dict) else {}
    if job.state is JobState.CANCELLED:
        return {"type": "Cancelled", "message": f"child job {child_id} was cancelled"}
    if error.get("type") == "CallError":  # the dispatched task's call failed: look inside
        with interrupt_on_storage_error(child_id):
            history = runtime.storage.load_history(child_id)
        for recorded in history:
            if recorded.job_id == child_id and recorded.seq == 1 and recorded.error:
                inner = serialization.loads(recorded.error)
                return {
                    "type": inner.get("type", "Exception"),
                    "message": inner.get("message", ""),
                    "attempts_made": recorded.attempts,
                    "no_retry": bool(inner.get("no_retry")),
                }
    return {
        "type": error.get("type", "Exception"),
        "message": error.get("message", ""),
        "no_retry": bool(error.get("no_retry")),
    }
