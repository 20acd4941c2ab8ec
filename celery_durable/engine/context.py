"""The per-execution context: which job is running here, its history and its lease.

A contextvar, so ``call()`` finds it without being passed anything, and each thread
(threads pool) or greenlet sees only its own.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..determinism import Determinism, check_determinism
from ..errors import ConfigurationError, OutsideDurableTaskError
from ..identifiers import ID_COLUMN, fits_id
from ..observability.hooks import JobInfo, Outcome
from ..retry import RetryPolicy, call_policy
from ..store.records import CallRecord, Lease
from .leases import Watch

if TYPE_CHECKING:
    from .runtime import Runtime


@dataclass
class Execution:
    runtime: Runtime
    task_name: str
    job_id: str
    """This scope's id: the job's, or ``"<parent>.<seq>"`` for a durable task called
    in-process."""
    root_id: str
    lease: Lease
    history: dict[tuple[str, int], CallRecord]
    """Every call of the whole tree, loaded with one query when the job started."""
    watch: Watch
    """Set by the lease keeper: the lease was lost, or cancel was requested."""
    call_policy: RetryPolicy
    """Retries and backoff for the calls this scope makes (call() may override)."""
    determinism: Determinism = Determinism.EXPLICIT
    replay_only: bool = False
    """Replay testing: replay recorded calls, never run or write anything."""
    info: JobInfo | None = None
    """What hooks and middleware are told about the job (None when nobody listens)."""
    outcome: Outcome | None = None
    """How this execution ended, for after_job (duration filled in by the runner)."""
    seq: int = 0
    released: bool = field(default=False)
    """The lease was handed back early (the body asked Celery to retry it)."""
    is_async: bool = False
    """The scope's body is a coroutine: call(), sleep(), receive() return awaitables."""
    halt: Halt = field(default_factory=lambda: Halt())
    """Shared by the scopes on one event loop: the first control signal raised in any of
    its tasks, so no ``return_exceptions`` or ``except`` can swallow it."""
    handed_out: list[tuple[Any, str]] = field(default_factory=list)
    """The awaitables handed to an async body (and what each is), to catch one it never
    awaited."""
    parent: Execution | None = None
    """For a branch: the scope whose task started it."""
    open_branch: Callable[[], None] | None = None
    """For a branch not used yet: records its marker at its first durable operation."""

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def child(self, seq: int, task: object) -> Execution:
        return Execution(
            runtime=self.runtime,
            task_name=str(getattr(task, "name", task)),
            job_id=derived_id(self.job_id, seq),
            root_id=self.root_id,
            lease=self.lease,
            history=self.history,
            watch=self.watch,
            call_policy=call_policy(task, self.call_policy),
            determinism=task_determinism(task, self.determinism),
            replay_only=self.replay_only,
            info=self.info,
            halt=self.halt,
        )

    def branch(self, seq: int) -> Execution:
        """The scope of an asyncio task this scope's code created (``gather`` of its own
        coroutines, a TaskGroup): it takes a position here, now, in the order the tasks
        are created, and its own calls are ``<seq>.1``, ``<seq>.2`` ... under it, so each
        branch finds its own history again on replay whatever finished first."""
        branch = self.child(seq, self.task_name)
        branch.call_policy, branch.determinism = self.call_policy, self.determinism
        branch.is_async, branch.parent = True, self
        return branch

    @property
    def body_scope(self) -> Execution:
        """The scope a branch belongs to (itself when it is not a branch)."""
        scope = self
        while scope.parent is not None:
            scope = scope.parent
        return scope

    def ended(self, state: str, error: BaseException | None = None, **details: Any) -> None:
        self.outcome = Outcome(state=state, duration=0.0, error=error, **details)


def derived_id(scope: str, seq: int) -> str:
    """``"<scope>.<seq>"``: the id of an in-process child scope or a dispatched child."""
    derived = f"{scope}.{seq}"
    if not fits_id(derived):
        raise ConfigurationError(
            f"calls nested too deeply under {scope[:40]!r}...: the id {derived[:40]!r}... "
            f"of call #{seq} would be longer than {ID_COLUMN} characters. Use shorter job "
            f"ids, or fewer levels of durable tasks calling durable tasks."
        )
    return derived


_current: ContextVar[Execution | None] = ContextVar("celery_durable_execution", default=None)
_call_id: ContextVar[str | None] = ContextVar("celery_durable_call_id", default=None)


@dataclass
class Halt:
    error: BaseException | None = None
    main: Any = None
    """The loop's main task (the body), cancelled when a control signal is raised."""
    draining: bool = False
    """The body has ended: what is cancelled now is cancelled by us."""


def current_execution() -> Execution | None:
    """The scope running here, for an operation that takes a position (a branch used
    for the first time records its marker first)."""
    execution = _current.get()
    if execution is not None and execution.open_branch is not None:
        opening, execution.open_branch = execution.open_branch, None
        opening()
    return execution


def peek_execution() -> Execution | None:
    """The scope running here, for a look that takes no position."""
    return _current.get()


def require_execution(what: str) -> Execution:
    """The running execution, for an API that only works inside a durable task's body."""
    execution = current_execution()
    if execution is None:
        raise OutsideDurableTaskError(
            f"{what} can only be used inside the body of a durable task executed by a worker"
        )
    return execution


def current_job_id() -> str | None:
    """The id of the durable job running in this context (for code inside a call(), the
    job that made the call), or None outside one."""
    execution = _current.get()
    return None if execution is None else execution.root_id


def current_call_id() -> str | None:
    """``"<job id>:<seq>"`` of the durable call running in this context, else None.

    It is the same every time that call runs (a call in flight when its worker died runs
    again), so pass it as an idempotency key to payment APIs and the like.
    """
    return _call_id.get()


def enter_call(call_id: str) -> Token[str | None]:
    return _call_id.set(call_id)


def exit_call(token: Token[str | None]) -> None:
    _call_id.reset(token)


_inline: ContextVar[object | None] = ContextVar("celery_durable_inline_task", default=None)


def mark_inline(task: object) -> Token[object | None]:
    """call() is about to run ``task`` in-process, not as a job of its own."""
    return _inline.set(task)


def take_inline(task: object) -> bool:
    """True (once) if call() is running ``task`` in-process right now."""
    if _inline.get() is task:
        _inline.set(None)
        return True
    return False


def unmark_inline(token: Token[object | None]) -> None:
    _inline.reset(token)


def activate(execution: Execution) -> Token[Execution | None]:
    return _current.set(execution)


def deactivate(token: Token[Execution | None]) -> None:
    _current.reset(token)


def task_determinism(task: object, default: Determinism) -> Determinism:
    """The task's ``determinism`` option, else ``default``."""
    mode = getattr(task, "determinism", None)
    return default if mode is None else check_determinism(mode, "determinism")
