"""call(): run a task in-process as a checkpointed step of the current durable job."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import time
from typing import TYPE_CHECKING, Any, TypeAlias

from celery import Celery, Task
from celery.canvas import Signature
from celery.local import Proxy

from .. import serialization
from ..determinism import Determinism
from ..errors import (
    CallError,
    Cancelled,
    NonDeterministicError,
    OutsideDurableTaskError,
    UnknownTaskError,
)
from ..observability.hooks import CallInfo
from ..retry import (
    Backoff,
    NoRetry,
    RetryPolicy,
    Seconds,
    check_backoff,
    check_retries,
    final_reason,
)
from ..store.records import CallRecord, CallState, call_id, position
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
from .dispatch import call_dispatched, is_dispatched, resume_dispatched
from .matching import EndOfHistory, recorded_for
from .recorded_errors import CallRetryPending, call_retryable, encode_error, traceback_text
from .steps import check_may_run, record_step, replay_recorded

if TYPE_CHECKING:
    from datetime import datetime


CallTarget: TypeAlias = "Task[Any, Any] | Signature[Any] | str"


def call(
    target: CallTarget,
    /,
    *args: Any,
    retries: int | None = None,
    backoff: Backoff | Seconds | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``target`` (a task, a signature or a registered task name) as a durable step.

    The first time, the task's body runs in this process and its JSON result is stored
    under (job id, position); on replay the stored result is returned without running.
    A failure is retried ``retries`` times (default: the task's ``call_retries``, else
    ``durable_call_retries``), each after ``backoff``, by rescheduling the whole job:
    no worker slot is held while waiting and earlier calls replay. After the last
    attempt the body gets CallError (the original exception chained) and may
    compensate; the failure is recorded too, so a replay takes the same path.

    A signature with a queue (``charge.s(p).set(queue="payments")``) is dispatched
    instead: it runs as a child job on that queue and this job suspends until it
    finishes, holding no worker (see ``celery_durable.engine.dispatch``).

    ``retries`` and ``backoff`` are taken by call() itself; a task whose own keyword
    arguments have those names gets them through a signature: ``call(t.s(retries=1))``.
    """
    execution = current_execution()
    if execution is None:
        raise OutsideDurableTaskError(
            "call() can only be used inside the body of a durable task executed by a worker "
            "(.delay(), .apply_async() or .apply()); calling the task function directly "
            "runs no durable job."
        )
    policy = execution.call_policy
    if retries is not None or backoff is not None:
        policy = RetryPolicy(
            check_retries(retries, "call(retries=...)") if retries is not None else policy.retries,
            check_backoff(backoff, "call(backoff=...)") if backoff is not None else policy.backoff,
        )
    if is_dispatched(target):
        return call_dispatched(
            execution,
            target,
            args,
            kwargs,
            retries,
            backoff if isinstance(backoff, (int, float)) else None,
        )
    task, args, kwargs = _resolve(execution.runtime.app, target, args, kwargs)
    seq = execution.next_seq()
    digest = serialization.digest(args, kwargs)
    recorded = recorded_for(
        execution, seq, task.name, None if execution.determinism is Determinism.EXPLICIT else digest
    )
    if recorded is not None and recorded.state is CallState.DISPATCHED:
        return resume_dispatched(execution, seq, recorded)
    if recorded is not None and recorded.state is not CallState.RETRYING:
        return replay_recorded(execution, seq, recorded)
    if execution.replay_only:
        raise EndOfHistory(seq, task.name)
    check_may_run(execution, seq, recorded)
    return _run(execution, _Step(seq, task.name, digest), task, args, kwargs, policy, recorded)


@dataclasses.dataclass(frozen=True)
class _Step:
    """The call being run: its position, task name and argument digest."""

    seq: int
    name: str
    digest: str


def _resolve(
    app: Celery, target: CallTarget, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Task, tuple[Any, ...], dict[str, Any]]:
    if isinstance(target, Proxy):
        # `@app.task` returns a lazy proxy before the app is finalized; call() needs the
        # task object itself (it marks that object as running in-process). Unwrapped
        # first: every isinstance() on a proxy resolves it again.
        target = target._get_current_object()
    if isinstance(target, Task):
        return target, args, kwargs
    if isinstance(target, Signature):
        task = _lookup(app, target.task)
        return task, (*target.args, *args), {**target.kwargs, **kwargs}
    if isinstance(target, str):
        return _lookup(app, target), args, kwargs
    raise TypeError(
        f"call() takes a Celery task, a signature or a registered task name, "
        f"not {type(target).__name__}"
    )


def _lookup(app: Celery, name: str) -> Task:
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


def _run(
    execution: Execution,
    step: _Step,
    task: Task,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    policy: RetryPolicy,
    previous: CallRecord | None,
) -> Any:
    runtime, seq = execution.runtime, step.seq
    attempt = previous.attempts + 1 if previous is not None else 1
    earlier = (serialization.loads(previous.error) or {}).get("attempts", []) if previous else []
    started = runtime.now()
    watched = _Watched(execution, seq, task.name, attempt, started)
    try:
        result = _invoke(execution, seq, task, args, kwargs)
    except (NonDeterministicError, Cancelled):
        raise
    except Exception as exc:
        reason = final_reason(exc)
        tried = [
            *earlier,
            {
                "type": type(reason).__name__,
                "message": str(reason),
                "started_at": started.isoformat(),
                "failed_at": runtime.now().isoformat(),
                "traceback": traceback_text(reason),
            },
        ]
        if call_retryable(exc) and attempt <= policy.retries:
            record = _record_of(
                execution,
                step,
                started,
                CallState.RETRYING,
                attempt,
                None,
                encode_error(reason, attempts=tried),
            )
            watched.failed(reason, retrying=True)
            raise CallRetryPending(record, policy.delay(attempt, exc), reason) from exc
        watched.failed(reason, retrying=False)
        # NoRetry raised deeper (inside a called durable task) still means no retries.
        no_retry = isinstance(exc, NoRetry) or (isinstance(exc, CallError) and exc.no_retry)
        record_step(
            execution,
            _record_of(
                execution,
                step,
                started,
                CallState.FAILED,
                attempt,
                None,
                encode_error(reason, attempts=tried, no_retry=no_retry),
            ),
        )
        raise CallError(
            job_id=execution.job_id,
            seq=seq,
            name=task.name,
            error_type=type(reason).__name__,
            error_message=str(reason),
            attempts=attempt,
            no_retry=no_retry,
        ) from reason
    encoded = serialization.dumps(
        result, what=f"the result of call #{seq} {task.name!r} in job {execution.job_id}"
    )
    record_step(
        execution,
        _record_of(
            execution,
            step,
            started,
            CallState.SUCCEEDED,
            attempt,
            encoded,
            serialization.dumps({"attempts": earlier}, what="call errors") if earlier else None,
        ),
    )
    watched.succeeded()
    # The body sees exactly what a replay would return (tuples become lists, ...);
    # a scalar comes back from JSON as itself.
    return result if type(result) in _SCALARS else serialization.loads(encoded)


_SCALARS = frozenset({str, int, float, bool, type(None)})


class _Watched:
    """Tells hooks and middleware about one live call (nothing when nobody listens)."""

    def __init__(
        self, execution: Execution, seq: int, name: str, attempt: int, started: datetime
    ) -> None:
        self.execution, self.info = execution, execution.info
        if self.info is None:
            return
        self.call = CallInfo(
            scope=execution.job_id,
            seq=seq,
            position=".".join(map(str, position(execution.root_id, execution.job_id, seq))),
            name=name,
            attempt=attempt,
            started_at=started,
        )
        self.clock = time.monotonic()
        execution.runtime.observers.call_started(self.info, self.call)

    def _ended(self, **changes: Any) -> CallInfo:
        return dataclasses.replace(self.call, duration=time.monotonic() - self.clock, **changes)

    def succeeded(self) -> None:
        if self.info is not None:
            self.execution.runtime.observers.call_ended(self.info, self._ended())

    def failed(self, error: BaseException, *, retrying: bool) -> None:
        if self.info is not None:
            self.execution.runtime.observers.call_failed(
                self.info, self._ended(retrying=retrying), error
            )


def _invoke(
    execution: Execution,
    seq: int,
    task: Task,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    call_token = enter_call(call_id(execution.job_id, seq))
    # The called task runs in a child scope: call()s it makes itself get checkpoints of
    # their own ("<job>.<seq>"), so they never shift the caller's positions on replay.
    scope = activate(execution.child(seq, task))
    inline = mark_inline(task)
    try:
        if _plain_function(task):
            return task.run(*args, **kwargs)
        return task(*args, **kwargs)
    finally:
        unmark_inline(inline)
        deactivate(scope)
        exit_call(call_token)


def _plain_function(task: Task) -> bool:
    """A plain ``@app.task`` (not bound, no ``__call__`` of its own, not durable) needs
    none of what ``Task.__call__`` does (push a request for ``self.request``): its
    function runs directly, at a thirtieth of the cost."""
    cached = _PLAIN.get(type(task))
    if cached is None:
        kind = type(task)
        cached = _PLAIN[kind] = kind.__call__ is Task.__call__ and isinstance(
            inspect.getattr_static(kind, "run", None), staticmethod
        )
    return cached


_PLAIN: dict[type, bool] = {}


def _record_of(
    execution: Execution,
    step: _Step,
    started: datetime,
    state: CallState,
    attempts: int,
    result: str | None,
    error: str | None,
) -> CallRecord:
    return CallRecord(
        job_id=execution.job_id,
        seq=step.seq,
        root_id=execution.root_id,
        name=step.name,
        args_digest=step.digest,
        state=state,
        attempts=attempts,
        result=result,
        error=error,
        started_at=started,
        finished_at=execution.runtime.now(),
    )
