"""call(): run a task in-process as a checkpointed step of the current durable job."""

from __future__ import annotations

import difflib
import traceback
from typing import TYPE_CHECKING, Any, TypeAlias

from celery import Celery, Task
from celery.canvas import Signature

from . import serialization
from .context import (
    Execution,
    activate,
    current_execution,
    deactivate,
    enter_call,
    exit_call,
    mark_inline,
    unmark_inline,
)
from .errors import (
    CallError,
    LeaseLost,
    NonDeterministicError,
    OutsideDurableTaskError,
    UnknownTaskError,
    interrupt_on_storage_error,
)
from .store.base import CallRecord, CallState

if TYPE_CHECKING:
    from datetime import datetime

CallTarget: TypeAlias = "Task[Any, Any] | Signature[Any] | str"


def call(target: CallTarget, /, *args: Any, **kwargs: Any) -> Any:
    """Run ``target`` (a task, a signature or a registered task name) as a durable step.

    The first time, the task's body runs in this process and its JSON result is stored
    under (job id, position); on replay the stored result is returned without running.
    A failure raises CallError (the original exception chained) so the body can
    compensate; the failure is recorded too, so a replay takes the same path.
    """
    execution = current_execution()
    if execution is None:
        raise OutsideDurableTaskError(
            "call() can only be used inside the body of a durable task executed by a worker "
            "(.delay(), .apply_async() or .apply()); calling the task function directly "
            "runs no durable job."
        )
    task, args, kwargs = _resolve(execution.durable.app, target, args, kwargs)
    seq = execution.next_seq()
    recorded = execution.history.get((execution.job_id, seq))
    if recorded is not None:
        return _replay(execution, seq, task.name, recorded)
    if execution.lost.is_set():
        raise LeaseLost(execution.lease.job_id)
    return _run(execution, seq, task, args, kwargs)


def _resolve(app: Celery, target: CallTarget, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> tuple[Task, tuple[Any, ...], dict[str, Any]]:  # type: ignore[type-arg]
    if isinstance(target, Signature):
        task = _lookup(app, target.task)
        return task, (*target.args, *args), {**target.kwargs, **kwargs}
    if isinstance(target, str):
        return _lookup(app, target), args, kwargs
    if isinstance(target, Task):
        return target, args, kwargs
    raise TypeError(
        f"call() takes a Celery task, a signature or a registered task name, "
        f"not {type(target).__name__}"
    )


def _lookup(app: Celery, name: str) -> Task:  # type: ignore[type-arg]
    try:
        return app.tasks[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(app.tasks), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownTaskError(
            f"call() got task name {name!r}, which is not registered with app "
            f"{app.main!r}.{hint} Check the name, and that the module defining it is "
            f"imported by the worker (include=/imports=)."
        ) from None


def _replay(execution: Execution, seq: int, name: str, recorded: CallRecord) -> Any:
    if recorded.name != name:
        raise NonDeterministicError(job_id=execution.job_id, task=execution.task_name,
                                    seq=seq, expected=name, recorded=recorded.name)
    if recorded.state is CallState.FAILED:
        error = serialization.loads(recorded.error) or {}
        raise CallError(job_id=execution.job_id, seq=seq, name=name,
                        error_type=error.get("type", "Exception"),
                        error_message=error.get("message", ""))
    return serialization.loads(recorded.result)


def _run(execution: Execution, seq: int, task: Task, args: tuple[Any, ...],  # type: ignore[type-arg]
         kwargs: dict[str, Any]) -> Any:
    durable = execution.durable
    started = durable.now()
    try:
        result = _invoke(execution, seq, task, args, kwargs)
    except NonDeterministicError:
        raise
    except Exception as exc:
        error = encode_error(exc)
        _record(execution, seq, task.name, args, kwargs, started, CallState.FAILED,
                None, error)
        raise CallError(job_id=execution.job_id, seq=seq, name=task.name,
                        error_type=type(exc).__name__, error_message=str(exc)) from exc
    encoded = serialization.dumps(
        result, what=f"the result of call #{seq} {task.name!r} in job {execution.job_id}")
    _record(execution, seq, task.name, args, kwargs, started, CallState.SUCCEEDED,
            encoded, None)
    # The body sees exactly what a replay would return (tuples become lists, ...).
    return serialization.loads(encoded)


def _invoke(execution: Execution, seq: int, task: Task, args: tuple[Any, ...],  # type: ignore[type-arg]
            kwargs: dict[str, Any]) -> Any:
    call_token = enter_call(f"{execution.job_id}:{seq}")
    # The called task runs in a child scope: call()s it makes itself get checkpoints of
    # their own ("<job>.<seq>"), so they never shift the caller's positions on replay.
    scope = activate(execution.child(seq, task.name))
    inline = mark_inline(task)
    try:
        return task(*args, **kwargs)
    finally:
        unmark_inline(inline)
        deactivate(scope)
        exit_call(call_token)


def _record(execution: Execution, seq: int, name: str, args: tuple[Any, ...],
            kwargs: dict[str, Any], started: datetime, state: CallState,
            result: str | None, error: str | None) -> None:
    record = CallRecord(
        job_id=execution.job_id, seq=seq, root_id=execution.root_id, name=name,
        args_digest=serialization.digest(args, kwargs), state=state, attempts=1,
        result=result, error=error, started_at=started, finished_at=execution.durable.now())
    # StorageInterrupted is a BaseException, so the body cannot swallow it.
    with interrupt_on_storage_error(execution.root_id):
        execution.durable.storage.record_call(record, execution.lease)


def encode_error(exc: BaseException) -> str:
    return serialization.dumps({
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }, what="an error description")
