"""The event loop an ``async def`` durable body runs on, and the awaitables it gets back.

One loop per worker thread (prefork and solo: the process's main thread; ``-P threads``:
each pool thread), created on first use after fork and closed when the process ends.
A body runs as the loop's main task. When it ends, every task it left behind is
cancelled and waited for, so no call of this job runs on after its execution ended.

- **Positions.** A call takes its position when it is created, in program order. An
  asyncio task the body creates for a coroutine of its own is a *branch*: it takes a
  position when it is created (also program order) and numbers its calls under it.
- **Control signals** (a suspension, a call retry, a lost lease, a storage outage) are
  not results: the first one raised anywhere on the loop is kept (``Halt``), the body is
  cancelled, and the execution ends with it, whatever the body did with it.
- Plain (sync) tasks an async body calls run on a bounded thread pool per process
  (``durable_async_threads``), so they never block the loop; ``async def`` tasks run on it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import inspect
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import (
    CallError,
    ConfigurationError,
    LeaseLost,
    StorageInterrupted,
    UnawaitedCallError,
)
from ..retry import NoRetry
from .context import Execution, Halt, activate, peek_execution
from .matching import recorded_for
from .positions import BRANCH
from .recorded_errors import CallRetryPending
from .recorded_values import pseudo_call, write_pseudo_call
from .suspend import Suspend

T = TypeVar("T")
CONTROL: tuple[type[BaseException], ...] = (
    Suspend,
    CallRetryPending,
    LeaseLost,
    StorageInterrupted,
)
_CALL_THREAD = "durable-call"
_local = threading.local()
_executor: tuple[int, ThreadPoolExecutor] | None = None
_executor_lock = threading.Lock()


def _loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed() or getattr(_local, "pid", None) != os.getpid():
        loop = asyncio.new_event_loop()  # a forked child never reuses its parent's
        loop.set_task_factory(_task_factory)
        _local.loop, _local.pid = loop, os.getpid()
    return loop


def call_threads(size: int) -> ThreadPoolExecutor:
    """The process's pool for the sync tasks async bodies call (``size`` threads)."""
    global _executor
    with _executor_lock:
        if _executor is None or _executor[0] != os.getpid():
            pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=_CALL_THREAD)
            _executor = (os.getpid(), pool)
        return _executor[1]


def on_call_thread() -> bool:
    """True on one of the call threads: a nested call runs right here, not on the pool
    (a pool thread waiting for the pool could wait for ever)."""
    return threading.current_thread().name.startswith(_CALL_THREAD)


def refuse_green_pool() -> None:
    """gevent and eventlet patch threads and sockets under asyncio's feet: refused."""
    for name, patched in (("gevent", _gevent_patched), ("eventlet", _eventlet_patched)):
        if name in sys.modules and patched():
            raise NoRetry(
                ConfigurationError(
                    f"an async def durable task cannot run under the {name} pool "
                    f"(-P {name}): its patched threads and an asyncio event loop do not "
                    "mix. Run async durable tasks on -P prefork, -P threads or -P solo"
                )
            )


def _gevent_patched() -> bool:
    from gevent import monkey

    return bool(monkey.is_module_patched("threading"))


def _eventlet_patched() -> bool:
    from eventlet import patcher

    return bool(patcher.is_monkey_patched("thread"))


def run_body(execution: Execution, body: Coroutine[Any, Any, T]) -> T:
    """Run an async body to its end on this thread's loop (outside any running loop)."""
    try:
        refuse_green_pool()
    except NoRetry:
        body.close()
        raise
    loop = _loop()
    if loop.is_running():  # pragma: no cover - a sync body never runs on a loop thread
        body.close()
        raise RuntimeError("an async durable body cannot start inside a running event loop")
    halt = execution.halt = Halt()
    main: asyncio.Task[T] = asyncio.Task(body, loop=loop)  # the body itself is no branch
    halt.main = main
    failure: BaseException | None = None
    try:
        result: T = loop.run_until_complete(main)
    except BaseException as exc:
        failure = exc
    finally:
        halt.draining = True
        _drain(loop, main)
    if halt.error is not None or failure is not None:
        forget_handed_out(execution)
        raise halt.error or failure  # type: ignore[misc]
    check_awaited(execution)
    return result


def stopping(execution: Execution) -> bool:
    """The execution is ending: a cancel now is ours, not the body's."""
    return execution.halt.error is not None or execution.halt.draining


def stop(execution: Execution, signal: BaseException) -> None:
    """A control signal raised in a task of the loop: the execution ends with it."""
    halt = execution.halt
    if halt.error is None:
        halt.error = signal
    main = halt.main
    current = current_task()
    if main is not None and not main.done() and current is not None and current is not main:
        main.cancel()


def _drain(loop: asyncio.AbstractEventLoop, main: asyncio.Task[Any]) -> None:
    """Cancel and wait for what the body started and left running (a sibling of a call
    that failed, a task it never awaited), and for what those start while cancelled."""
    for _ in range(100):
        left = [t for t in asyncio.all_tasks(loop) if t is not main and not t.done()]
        if not left:
            return
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    """Every task created on the loop: one for a coroutine of the body's own is a branch."""
    scope = peek_execution()
    if scope is None or not scope.is_async or getattr(coro, "cr_code", None) in _OURS:
        return asyncio.Task(coro, loop=loop, **kwargs)
    seq = scope.next_seq()  # now, in the order the tasks are created
    branch = scope.branch(seq)
    branch.open_branch = lambda: _open(scope, seq)
    context = kwargs.pop("context", None) or contextvars.copy_context()
    context.run(activate, branch)
    task: asyncio.Task[Any] = context.run(_new_task, loop, coro, kwargs)
    task.add_done_callback(lambda done: _branch_ended(branch, done))
    return task


def _new_task(
    loop: asyncio.AbstractEventLoop, coro: Any, kwargs: dict[str, Any]
) -> asyncio.Task[Any]:
    return asyncio.Task(coro, loop=loop, **kwargs)  # takes the context it runs in


def _open(parent: Execution, seq: int) -> None:
    """A branch's first durable operation: its marker checked on replay, else written."""
    if recorded_for(parent, seq, BRANCH, None) is None and not parent.replay_only:
        write_pseudo_call(parent, pseudo_call(parent, seq, BRANCH, "", "null"))


def _branch_ended(branch: Execution, task: asyncio.Task[Any]) -> None:
    if task.cancelled() or task.exception() is not None:
        forget_handed_out(branch)
        return
    try:
        check_awaited(branch)
    except UnawaitedCallError as exc:
        stop(branch, exc)


def track(execution: Execution, awaitable: Coroutine[Any, Any, T], what: str) -> Any:
    """Remember an awaitable handed to the body, to tell it when it forgot an await."""
    execution.handed_out.append((awaitable, what))
    return awaitable


def check_awaited(execution: Execution) -> None:
    """After a body returned: every call it created was awaited, or it is a bug in it."""
    forgotten = [
        (c, what)
        for c, what in execution.handed_out
        if inspect.getcoroutinestate(c) == inspect.CORO_CREATED
    ]
    for coroutine, _ in forgotten:
        coroutine.close()
    execution.handed_out.clear()
    if forgotten:
        named = ", ".join(what for _, what in forgotten[:3])
        raise UnawaitedCallError(
            f"the async body of job {execution.root_id} created {len(forgotten)} call(s) "
            f"it never awaited ({named}): in an async def body write `await call(...)`, "
            "`await sleep(...)`, `await receive(...)` (or pass them to asyncio.gather)"
        )


def forget_handed_out(execution: Execution) -> None:
    """The body ended with an error: what it had not awaited yet simply never ran."""
    for coroutine, _ in execution.handed_out:
        if inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED:
            coroutine.close()
    execution.handed_out.clear()


async def resolved(value: T) -> T:
    """What replay, a sleep or a receive already knows, as an awaitable."""
    return value


async def failing(error: BaseException) -> Any:
    """An outcome that is an error, raised where the body awaits it."""
    raise error


def eager(
    execution: Execution,
    produce: Callable[[], Any],
    what: str,
    then: Callable[[Any], Coroutine[Any, Any, Any]] = resolved,
) -> Any:
    """A call, sleep, receive or gather in an async body: begun now (its position is
    taken in program order), its outcome (``then(value)``: by default the value itself)
    handed back as an awaitable. A control signal ends the execution here and now; a
    CallError is raised where the body awaits it."""
    try:
        value = produce()
    except CONTROL as signal:
        stop(execution, signal)
        raise
    except CallError as exc:
        return track(execution, failing(exc), what)
    return track(execution, then(value), what)


async def in_thread(size: int, fn: Callable[[], T]) -> T:
    """``fn()`` on the process's call threads, in a copy of this task's context. If the
    awaiting task is cancelled, the thread still runs to its end first: its checkpoint is
    written whole (fenced on the lease) or not at all, never after the execution ended."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(call_threads(size), contextvars.copy_context().run, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue
        raise


def current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        return None


_OURS = {resolved.__code__, failing.__code__}
"""Coroutines of ours that take no branch: their position was taken when created."""


def ours(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an ``async def`` of ours whose coroutines are not branches."""
    _OURS.add(function.__code__)
    return function


@atexit.register
def _close() -> None:
    loop = getattr(_local, "loop", None)
    if loop is not None and not loop.is_running() and not loop.is_closed():
        loop.close()
