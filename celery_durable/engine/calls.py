"""call(): run a task in-process as a checkpointed step of the current durable job."""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import inspect
import time
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from celery import Celery, Task
from celery.canvas import Signature
from celery.local import Proxy

from .. import serialization
from ..determinism import Determinism
from ..errors import (
    CallError,
    Cancelled,
    ConfigurationError,
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
from .loop import (
    CONTROL,
    check_awaited,
    eager,
    forget_handed_out,
    in_thread,
    on_call_thread,
    ours,
    resolved,
    run_body,
    stop,
    stopping,
)
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
    if not execution.is_async:
        begun = _begin(execution, target, args, kwargs, retries, backoff, policy)
        return _run(execution, begun) if isinstance(begun, _Live) else begun
    # An async body: the position is taken now, in program order; the outcome (a
    # replayed result or error, or the live run) comes where the body awaits it.
    # Cancelled, a divergence, the end of a replayed history: raised here and now.
    return eager(
        execution,
        lambda: _begin(execution, target, args, kwargs, retries, backoff, policy),
        f"call #{execution.seq + 1} {getattr(target, 'name', target)!r}",
        lambda begun: _run_async(execution, begun) if isinstance(begun, _Live) else resolved(begun),
    )


def _begin(
    execution: Execution,
    target: CallTarget,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    retries: int | None,
    backoff: Backoff | Seconds | None,
    policy: RetryPolicy,
) -> Any:
    """Everything up to running the call: its position, then its recorded outcome, or a
    ``_Live`` call to run."""
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
    created = execution.runtime.now()
    return _Live(_Step(seq, task.name, digest), task, args, kwargs, policy, recorded, created)


@dataclasses.dataclass(frozen=True)
class _Step:
    """The call being run: its position, task name and argument digest."""

    seq: int
    name: str
    digest: str


@dataclasses.dataclass(frozen=True)
class _Live:
    """A call with no recorded outcome: it runs now."""

    step: _Step
    task: Task
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    policy: RetryPolicy
    previous: CallRecord | None
    created: datetime
    """When the body asked for it: its checkpoint's ``started_at`` (in an async body it
    may wait for a thread), so a call that ran beside a failure is known as such."""


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


def _run(execution: Execution, live: _Live) -> Any:
    attempt = _Attempt(execution, live)
    try:
        result = _invoke(execution, live)
    except (NonDeterministicError, Cancelled):
        raise
    except Exception as exc:
        attempt.failed(exc)
    return attempt.succeeded(result)


@ours
async def _run_async(execution: Execution, live: _Live) -> Any:
    """A live call from an async body: an ``async def`` task runs on the loop, a plain
    one on the process's call threads (so it never blocks the loop)."""
    try:
        if _is_async_task(live.task):
            return await _run_on_loop(execution, live)
        if on_call_thread():  # nested under a call thread already: run it right here
            return _run(execution, live)
        size = execution.runtime.settings.async_threads
        return await in_thread(size, lambda: _run(execution, live))
    except CONTROL as signal:
        stop(execution, signal)
        raise
    except asyncio.CancelledError:
        if not stopping(execution):
            stop(execution, _abandoned(execution, live))
        raise


async def _run_on_loop(execution: Execution, live: _Live) -> Any:
    attempt = _Attempt(execution, live)
    try:
        result = await _invoke_async(execution, live)
    except (NonDeterministicError, Cancelled):
        raise
    except Exception as exc:
        attempt.failed(exc)
    return attempt.succeeded(result)


def _abandoned(execution: Execution, live: _Live) -> NoRetry:
    """The body cancelled a call it had started (a timeout around it): its outcome may be
    recorded already, so a replay would not take the path this run took."""
    return NoRetry(
        ConfigurationError(
            f"call #{live.step.seq} {live.step.name!r} of job {execution.root_id} was "
            "cancelled by the body (asyncio.wait_for, asyncio.timeout, task.cancel()): a "
            "call's outcome is recorded whatever the body does next, so it cannot be "
            "abandoned. Put the timeout inside the called task, or use its time limits"
        )
    )


class _Attempt:
    """One attempt of a live call: records its outcome and tells the observers."""

    def __init__(self, execution: Execution, live: _Live) -> None:
        self.execution, self.live = execution, live
        previous = live.previous
        self.number = previous.attempts + 1 if previous is not None else 1
        self.earlier = (
            (serialization.loads(previous.error) or {}).get("attempts", []) if previous else []
        )
        self.started = live.created
        self.watched = _Watched(execution, live.step.seq, live.task.name, self.number, self.started)

    def _record(self, state: CallState, result: str | None, error: str | None) -> CallRecord:
        return _record_of(
            self.execution, self.live.step, self.started, state, self.number, result, error
        )

    def failed(self, exc: Exception) -> NoReturn:
        execution, live, runtime = self.execution, self.live, self.execution.runtime
        reason = final_reason(exc)
        tried = [
            *self.earlier,
            {
                "type": type(reason).__name__,
                "message": str(reason),
                "started_at": self.started.isoformat(),
                "failed_at": runtime.now().isoformat(),
                "traceback": traceback_text(reason),
            },
        ]
        if call_retryable(exc) and self.number <= live.policy.retries:
            record = self._record(CallState.RETRYING, None, encode_error(reason, attempts=tried))
            self.watched.failed(reason, retrying=True)
            raise CallRetryPending(record, live.policy.delay(self.number, exc), reason) from exc
        self.watched.failed(reason, retrying=False)
        # NoRetry raised deeper (inside a called durable task) still means no retries.
        no_retry = isinstance(exc, NoRetry) or (isinstance(exc, CallError) and exc.no_retry)
        error = encode_error(reason, attempts=tried, no_retry=no_retry)
        record_step(execution, self._record(CallState.FAILED, None, error))
        raise CallError(
            job_id=execution.job_id,
            seq=live.step.seq,
            name=live.task.name,
            error_type=type(reason).__name__,
            error_message=str(reason),
            attempts=self.number,
            no_retry=no_retry,
        ) from reason

    def succeeded(self, result: Any) -> Any:
        execution, step = self.execution, self.live.step
        encoded = serialization.dumps(
            result, what=f"the result of call #{step.seq} {step.name!r} in job {execution.job_id}"
        )
        earlier = self.earlier
        errors = serialization.dumps({"attempts": earlier}, what="call errors") if earlier else None
        record_step(execution, self._record(CallState.SUCCEEDED, encoded, errors))
        self.watched.succeeded()
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


def _invoke(execution: Execution, live: _Live) -> Any:
    seq, task = live.step.seq, live.task
    call_token = enter_call(call_id(execution.job_id, seq))
    # The called task runs in a child scope: call()s it makes itself get checkpoints of
    # their own ("<job>.<seq>"), so they never shift the caller's positions on replay.
    child = execution.child(seq, task)
    scope = activate(child)
    inline = mark_inline(task)
    try:
        result = _start(task, live)
        if inspect.iscoroutine(result):  # an async def task called from sync code
            child.is_async = True
            return run_body(child, result)
        return result
    finally:
        unmark_inline(inline)
        deactivate(scope)
        exit_call(call_token)


async def _invoke_async(execution: Execution, live: _Live) -> Any:
    seq, task = live.step.seq, live.task
    call_token = enter_call(call_id(execution.job_id, seq))
    child = execution.child(seq, task)
    child.is_async = True
    scope = activate(child)
    try:
        inline = mark_inline(task)
        try:
            started = _start(task, live)
        finally:
            unmark_inline(inline)
        if not inspect.iscoroutine(started):
            return started
        try:
            result = await started
        except BaseException:
            forget_handed_out(child)
            raise
        check_awaited(child)
        return result
    finally:
        deactivate(scope)
        exit_call(call_token)


def _start(task: Task, live: _Live) -> Any:
    if _plain_function(task):
        return task.run(*live.args, **live.kwargs)
    return task(*live.args, **live.kwargs)


def _is_async_task(task: Task) -> bool:
    return inspect.iscoroutinefunction(inspect.unwrap(task.run))


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
