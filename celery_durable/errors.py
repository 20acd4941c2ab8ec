"""Every error celery-durable raises.

    DurableError                      root of everything below
    ├── ConfigurationError            a setting or task option is wrong
    ├── ValidationError               an id, name, key or time is not valid (a ValueError)
    ├── StorageUnavailable            the durable database cannot be reached
    ├── SerializationError            a value cannot be stored as JSON
    ├── JobNotFound                   no job with that id (also a LookupError)
    ├── ScheduleNotFound              no schedule with that name (also a LookupError)
    ├── JobStateError                 the job is not in a state that allows this
    ├── JobFailedError                the job whose result was awaited failed, died or was cancelled
    ├── UnawaitedCallError            an async body created a call it never awaited (a TypeError)
    ├── UnknownTaskError              call("name") for a task that is not registered
    ├── OutsideDurableTaskError       call() used outside a durable task body
    ├── CallError                     a call() failed; the original error is chained
    ├── Cancelled                     the job was cancelled (raised at a call boundary)
    └── NonDeterministicError         replay took a different path than the history

    LeaseLost (BaseException)         this execution no longer owns its job
    StorageInterrupted (BaseException) a checkpoint could not be written mid-job

NoRetry and RetryAfter, which user code raises to steer retries, live in ``retry``.

Control signals derive from BaseException so a body's ``except Exception`` cannot
swallow them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class DurableError(Exception):
    """Base class of every celery-durable error.

    Errors that carry fields keep them in ``args`` (and format their message in
    ``__str__``), so Celery's result backends rebuild them with ``cls(*args)``: a
    ``.get()`` in the calling process raises the same type with the same fields.
    """


class ConfigurationError(DurableError):
    """A setting or a task option is invalid."""


class ValidationError(DurableError, ValueError):
    """An argument is not valid: an id, name or key that is too long or holds a NUL
    byte, an unparsable time. Raised before anything is read or written."""


class StorageUnavailable(DurableError):
    """The durable database cannot be reached or used."""


class SerializationError(DurableError, TypeError):
    """A value cannot be stored as JSON."""


class JobNotFound(DurableError, LookupError):
    """No durable job has this id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"durable job {self.job_id!r} not found"


class ScheduleNotFound(DurableError, LookupError):
    """No schedule has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"no schedule named {self.name!r}"


class JobStateError(DurableError):
    """The operation does not apply to the job in its current state."""

    def __init__(self, job_id: str, state: str, why: str) -> None:
        super().__init__(job_id, state, why)
        self.job_id = job_id
        self.state = state
        self.why = why

    def __str__(self) -> str:
        return f"durable job {self.job_id!r} is {self.state}: {self.why}"


class JobFailedError(DurableError):
    """The job ``result()``/``aresult()`` waited for ended without a result: failed, dead
    or cancelled. ``error_type``/``error_message`` tell what it raised."""

    def __init__(self, job_id: str, state: str, error_type: str, error_message: str) -> None:
        super().__init__(job_id, state, error_type, error_message)
        self.job_id = job_id
        self.state = state
        self.error_type = error_type
        self.error_message = error_message

    def __str__(self) -> str:
        return f"durable job {self.job_id} {self.state}: {self.error_type}: {self.error_message}"


class UnawaitedCallError(DurableError, TypeError):
    """An async body created a call (or a sleep, a receive, ...) it never awaited."""


class UnknownTaskError(DurableError, LookupError):
    """call() named a task that is not registered with the app."""


class OutsideDurableTaskError(DurableError, RuntimeError):
    """call() was used outside the body of a durable task."""


class CallError(DurableError):
    """A durable call failed. ``__cause__`` is the original exception on the run that
    failed; on replay the original is gone and ``error_type``/``error_message`` tell
    what it was."""

    def __init__(
        self,
        job_id: str,
        seq: int,
        name: str,
        error_type: str,
        error_message: str,
        attempts: int = 1,
        no_retry: bool = False,
    ) -> None:
        super().__init__(job_id, seq, name, error_type, error_message, attempts, no_retry)
        self.job_id = job_id
        self.seq = seq
        self.name = name
        self.error_type = error_type
        self.error_message = error_message
        self.attempts = attempts
        self.no_retry = no_retry
        """The call raised NoRetry: the job is not retried either."""

    def __str__(self) -> str:
        tried = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return (
            f"call #{self.seq} {self.name!r} of job {self.job_id} failed{tried}: "
            f"{self.error_type}: {self.error_message}"
        )


class Cancelled(DurableError):
    """The job was cancelled while it ran. Raised once, at the next call() after the
    cancel request was seen; the body may catch it and compensate with more calls. The
    job ends cancelled whatever the body does next, and is never retried or resumed."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"durable job {self.job_id} was cancelled"


class NonDeterministicError(DurableError):
    """Replay asked for a different call than the one recorded at the same position."""

    def __init__(
        self,
        job_id: str,
        task: str,
        seq: int,
        expected: str,
        recorded: str,
        expected_digest: str | None = None,
        recorded_digest: str | None = None,
        mode: str = "explicit",
    ) -> None:
        super().__init__(
            job_id, task, seq, expected, recorded, expected_digest, recorded_digest, mode
        )
        self.job_id = job_id
        self.task = task
        self.seq = seq
        self.expected = expected
        self.recorded = recorded
        self.expected_digest = expected_digest
        self.recorded_digest = recorded_digest
        self.mode = mode

    def __str__(self) -> str:
        asked, held = repr(self.expected), repr(self.recorded)
        if self.expected_digest is not None and self.expected == self.recorded:
            asked += f" with arguments {self.expected_digest[:12]}"
            held += f" with arguments {(self.recorded_digest or '')[:12]}"
        return (
            f"job {self.job_id} ({self.task}) is not deterministic ({self.mode} mode): at "
            f"call #{self.seq} the code now asks for {asked} but the history holds {held}. "
            f"The task's code changed while this job was in flight, or the body branches on "
            f"something that is not a call() result. To resolve: keep the old path for "
            f'in-flight jobs with `if patched("<change id>"):`, or run the task with '
            f'determinism="best_effort", or retry the job from scratch '
            f"(`celery durable jobs retry {self.job_id} --from-scratch`)."
        )


class LeaseLost(BaseException):
    """Another execution took over this job; this one must stop without writing."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"lease on durable job {self.job_id} was lost to another execution"


class StorageInterrupted(BaseException):
    """The store failed while a job was running (e.g. the database restarted).

    Treated like a crash, not a failure: the job keeps its row and replays what was
    checkpointed, as soon as the database answers again.
    """

    def __init__(self, job_id: str, cause: BaseException | str) -> None:
        super().__init__(job_id, str(cause))  # plain args: it crosses process boundaries
        self.job_id = job_id
        self.cause = str(cause)

    def __str__(self) -> str:
        return f"durable job {self.job_id} interrupted by a storage error: {self.cause}"


@contextmanager
def interrupt_on_storage_error(job_id: str) -> Iterator[None]:
    """Turn StorageUnavailable inside a running job into StorageInterrupted."""
    try:
        yield
    except StorageUnavailable as exc:
        raise StorageInterrupted(job_id, exc) from exc
