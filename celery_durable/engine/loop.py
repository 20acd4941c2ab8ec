"""The event loop an ``async def`` durable body runs on, and the awaitables it gets back.

One loop per worker thread (prefork and solo: the process's main thread; ``-P threads``:
each pool thread), created on first use after fork and closed when the process ends.
A body runs as the loop's main task; when it ends, every task it left behind is
cancelled and waited for, so no call of this job runs on after its execution ended.

Plain (sync) tasks an async body calls run on a bounded thread pool per process
(``durable_async_threads``), so they never block the loop; ``async def`` tasks run on it.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigurationError, UnawaitedCallError
from ..retry import NoRetry

if TYPE_CHECKING:
    from .context import Execution

T = TypeVar("T")
_local = threading.local()
_executor: tuple[int, ThreadPoolExecutor] | None = None
_executor_lock = threading.Lock()


def _loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed() or getattr(_local, "pid", None) != os.getpid():
        loop = asyncio.new_event_loop()  # a forked child never reuses its parent's
        _local.loop, _local.pid = loop, os.getpid()
    return loop


def call_threads(size: int) -> ThreadPoolExecutor:
    """The process's pool for the sync tasks async bodies call (``size`` threads)."""
    global _executor
    with _executor_lock:
        if _executor is None or _executor[0] != os.getpid():
            pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="durable-call")
            _executor = (os.getpid(), pool)
        return _executor[1]


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
    main = loop.create_task(_owned(execution, body))
    try:
        result = loop.run_until_complete(main)
    except BaseException:
        forget_handed_out(execution)
        raise
    finally:
        _drain(loop, main)
    check_awaited(execution)
    return result


async def _owned(execution: Execution, body: Coroutine[Any, Any, T]) -> T:
    execution.task = asyncio.current_task()  # calls made in other tasks are branches
    return await body


def _drain(loop: asyncio.AbstractEventLoop, main: asyncio.Task[Any]) -> None:
    """Cancel and wait for what the body started and left running (a sibling of a call
    that failed, a task it never awaited)."""
    left = [t for t in asyncio.all_tasks(loop) if t is not main and not t.done()]
    for task in left:
        task.cancel()
    if left:
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))


def track(execution: Execution, awaitable: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """Remember an awaitable handed to the body, to tell it when it forgot an await."""
    execution.handed_out.append(awaitable)
    return awaitable


def check_awaited(execution: Execution) -> None:
    """After a body returned: every call it created was awaited, or it is a bug in it."""
    forgotten = [c for c in execution.handed_out if inspect.getcoroutinestate(c) == "CORO_CREATED"]
    for coroutine in forgotten:
        coroutine.close()
    execution.handed_out.clear()
    if forgotten:
        names = ", ".join(getattr(c, "__qualname__", "?") for c in forgotten[:3])
        raise UnawaitedCallError(
            f"the async body of job {execution.root_id} created {len(forgotten)} call(s) it "
            f"never awaited ({names}): in an async def body write `await call(...)`, "
            "`await sleep(...)`, `await receive(...)` (or pass them to asyncio.gather)"
        )


def forget_handed_out(execution: Execution) -> None:
    """The body ended with an error: what it had not awaited yet simply never ran."""
    for coroutine in execution.handed_out:
        if inspect.getcoroutinestate(coroutine) == "CORO_CREATED":
            coroutine.close()
    execution.handed_out.clear()


async def resolved(value: T) -> T:
    """What replay, a sleep or a receive already knows, as an awaitable."""
    return value


async def failing(error: BaseException) -> Any:
    """An outcome that is an error, raised where the body awaits it."""
    raise error


async def in_thread(size: int, fn: Callable[[], T]) -> T:
    """``fn()`` on the process's call threads, in a copy of this task's context. If the
    awaiting task is cancelled, the thread still runs to its end first: its checkpoint is
    written whole (fenced on the lease) or not at all, never after the execution ended."""
    import contextvars

    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(call_threads(size), contextvars.copy_context().run, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


def current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        return None


@atexit.register
def _close() -> None:
    loop = getattr(_local, "loop", None)
    if loop is not None and not loop.is_running() and not loop.is_closed():
        loop.close()
