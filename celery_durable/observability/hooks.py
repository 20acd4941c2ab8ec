"""Hooks and middleware: code that watches jobs and calls without being able to break them.

``durable.use(middleware)`` appends to an ordered list. Each middleware may define any
of these methods (all optional, all return None):

    on_enqueue(task, queue)         a durable job's row was written (the enqueuing process)
    before_job(job)                 a delivery claimed the job; its body starts (or replays)
    after_job(job, outcome)         the execution ended: outcome.state says how
    before_call(job, call)          a call() runs for real (replayed calls are not shown)
    after_call(job, call)           ... and its checkpoint is written
    on_call_error(job, call, error) ... and it raised (it may be retried: call.retrying)

``before_*`` run in the order the middleware were added, ``after_*`` and
``on_call_error`` in reverse order, like nested context managers. A middleware that
raises is logged and skipped; the job never sees it. The hooks (``durable.on_job_start``
and friends) are one more middleware, always the first (so the outermost).

Where they run: in the process that executes the job (a prefork pool child), except
for ``after_job`` of a job that keeps killing its workers and is ended by the recovery
sweeper: that one runs in a worker's main process. A job whose execution dies (SIGKILL,
a hard time limit) gets no ``after_job`` from that execution; it is resumed, and the
execution that finishes it reports the outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobInfo:
    id: str
    task: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    queue: str | None
    execution: int | None
    """How many executions have claimed the job, this one included (None if unknown)."""
    started_at: datetime
    trace_parent: str | None = None
    """The enqueuer's W3C traceparent, carried with the job (see ``tracing``)."""
    due_at: datetime | None = None
    """When this delivery's job became due (enqueued, or its delay, retry backoff or
    sleep ended); None if the message does not say (sent by another client)."""


@dataclass(frozen=True)
class CallInfo:
    scope: str
    seq: int
    position: str
    name: str
    attempt: int
    started_at: datetime
    duration: float | None = None
    retrying: bool = False
    """on_call_error: the call will be attempted again."""


@dataclass(frozen=True)
class Outcome:
    state: str
    """succeeded, failed, dead, cancelled, retrying, pending (released or requeued) or
    interrupted (the execution stopped without an outcome: lease lost, storage error)."""
    duration: float
    error: BaseException | None = None
    retry_of: str | None = None
    """While retrying: "call", "job" or "celery" (``self.retry()``)."""
    attempt: int | None = None
    """While retrying: the number of the attempt that comes next."""
    delay: float | None = None
    by_sweeper: bool = False
    """Reported by the recovery sweeper (in a worker's main process) for a job it ended
    because it kept killing its workers; no execution's before_job preceded it."""


class Middleware:
    """The hooks a middleware may define; each does nothing here. Subclass it and
    override the ones you need (an object that only has some of these methods is
    accepted too: ``durable.use`` wraps it in a ``Middleware``)."""

    def message_headers(self) -> dict[str, str]:
        """Headers to put on a job's message when it is enqueued (stored with its row,
        so every resend carries them): the trace context, say."""
        return {}

    def on_enqueue(self, task: str, queue: str | None) -> None:
        """A durable job's row was written (in the enqueuing process)."""

    def before_job(self, job: JobInfo) -> None:
        """A delivery claimed the job; its body starts (or replays)."""

    def after_job(self, job: JobInfo, outcome: Outcome) -> None:
        """The execution ended; ``outcome.state`` says how."""

    def before_call(self, job: JobInfo, call: CallInfo) -> None:
        """A call() runs for real (replayed calls are not shown)."""

    def after_call(self, job: JobInfo, call: CallInfo) -> None:
        """... and its checkpoint is written."""

    def on_call_error(self, job: JobInfo, call: CallInfo, error: BaseException) -> None:
        """... and it raised (``call.retrying``: it will be attempted again)."""


HOOKS = tuple(name for name in vars(Middleware) if not name.startswith("_"))


class _Partial(Middleware):
    """An object with only some of the hooks, as a Middleware: each hook is looked up on
    it when it runs (so a hook added later counts), the missing ones do nothing."""

    def __init__(self, wrapped: object) -> None:
        self.wrapped = wrapped

    def __repr__(self) -> str:
        return repr(self.wrapped)

    def _hook(self, name: str) -> Any:
        function = getattr(self.wrapped, name, None)
        return function if callable(function) else None

    def message_headers(self) -> dict[str, str]:
        function = self._hook("message_headers")
        return dict(function() or {}) if function else {}

    def on_enqueue(self, task: str, queue: str | None) -> None:
        if function := self._hook("on_enqueue"):
            function(task, queue)

    def before_job(self, job: JobInfo) -> None:
        if function := self._hook("before_job"):
            function(job)

    def after_job(self, job: JobInfo, outcome: Outcome) -> None:
        if function := self._hook("after_job"):
            function(job, outcome)

    def before_call(self, job: JobInfo, call: CallInfo) -> None:
        if function := self._hook("before_call"):
            function(job, call)

    def after_call(self, job: JobInfo, call: CallInfo) -> None:
        if function := self._hook("after_call"):
            function(job, call)

    def on_call_error(self, job: JobInfo, call: CallInfo, error: BaseException) -> None:
        if function := self._hook("on_call_error"):
            function(job, call, error)


def as_middleware(candidate: object) -> Middleware:
    """``candidate`` if it is a Middleware, else a Middleware around its hooks."""
    if isinstance(candidate, Middleware):
        return candidate
    if not any(callable(getattr(candidate, name, None)) for name in HOOKS):
        raise TypeError(
            f"{candidate!r} is not a middleware: it has none of the hooks "
            f"{', '.join(HOOKS)} (subclass celery_durable.Middleware)"
        )
    return _Partial(candidate)


@dataclass
class Hooks(Middleware):
    """The ``durable.on_*`` hooks, as the first middleware."""

    job_start: list[Callable[[JobInfo], Any]] = field(default_factory=list)
    job_complete: list[Callable[[JobInfo, float], Any]] = field(default_factory=list)
    job_fail: list[Callable[[JobInfo, BaseException | None], Any]] = field(default_factory=list)
    retry: list[Callable[[JobInfo, int, BaseException | None], Any]] = field(default_factory=list)
    checkpoint: list[Callable[[JobInfo, CallInfo], Any]] = field(default_factory=list)

    def before_job(self, job: JobInfo) -> None:
        _each(self.job_start, job)

    def after_job(self, job: JobInfo, outcome: Outcome) -> None:
        if outcome.state == "succeeded":
            _each(self.job_complete, job, outcome.duration)
        elif outcome.state in ("failed", "dead"):
            _each(self.job_fail, job, outcome.error)
        elif outcome.state == "retrying":
            _each(self.retry, job, outcome.attempt or 0, outcome.error)

    def after_call(self, job: JobInfo, call: CallInfo) -> None:
        _each(self.checkpoint, job, call)

    @property
    def empty(self) -> bool:
        return not (
            self.job_start or self.job_complete or self.job_fail or self.retry or self.checkpoint
        )


def _each(functions: list[Callable[..., Any]], *args: Any) -> None:
    for function in functions:
        _safely(function, *args)


def _safely(function: Callable[..., Any], *args: Any) -> None:
    try:
        function(*args)
    except Exception:
        logger.exception(
            "celery-durable: %s raised; ignored (it cannot fail the job)",
            getattr(function, "__qualname__", function),
        )


class Observers:
    """The ordered middleware of one Durable, hooks first."""

    def __init__(self) -> None:
        self.hooks = Hooks()
        self.middleware: list[Middleware] = []

    @property
    def active(self) -> bool:
        return bool(self.middleware) or not self.hooks.empty

    def use(self, middleware: object) -> None:
        self.middleware.append(as_middleware(middleware))

    def remove(self, middleware: object) -> None:
        """Stop using a middleware given to ``use`` (the object itself, or its wrapper)."""
        self.middleware = [
            m
            for m in self.middleware
            if m is not middleware and getattr(m, "wrapped", None) is not middleware
        ]

    def _forward(self) -> list[Middleware]:
        return [self.hooks, *self.middleware]

    def _backward(self) -> list[Middleware]:
        return [*reversed(self.middleware), self.hooks]

    def message_headers(self) -> dict[str, Any]:
        """Headers middleware want on a job's message (and stored with its row)."""
        headers: dict[str, Any] = {}
        for item in self.middleware:
            try:
                headers.update(item.message_headers() or {})
            except Exception:
                logger.exception("celery-durable: %r.message_headers raised; ignored", item)
        return headers

    def job_enqueued(self, task: str, queue: str | None) -> None:
        for item in self._forward():
            _safely(item.on_enqueue, task, queue)

    def job_started(self, job: JobInfo) -> None:
        for item in self._forward():
            _safely(item.before_job, job)

    def job_ended(self, job: JobInfo, outcome: Outcome) -> None:
        for item in self._backward():
            _safely(item.after_job, job, outcome)

    def call_started(self, job: JobInfo, call: CallInfo) -> None:
        for item in self._forward():
            _safely(item.before_call, job, call)

    def call_ended(self, job: JobInfo, call: CallInfo) -> None:
        for item in self._backward():
            _safely(item.after_call, job, call)

    def call_failed(self, job: JobInfo, call: CallInfo, error: BaseException) -> None:
        for item in self._backward():
            _safely(item.on_call_error, job, call, error)
