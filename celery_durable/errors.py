"""Every error celery-durable raises.

    DurableError                      root of everything below
    ├── ConfigurationError            a setting or task option is wrong
    ├── StorageUnavailable            the durable database cannot be reached
    ├── SerializationError            a value cannot be stored as JSON
    ├── JobNotFound                   no job with that id (also a LookupError)
    ├── JobStateError                 the job is not in a state that allows this
    ├── UnknownTaskError              call("name") for a task that is not registered
    ├── OutsideDurableTaskError       call() used outside a durable task body
    ├── CallError                     a call() failed; the original error is chained
    ├── Cancelled                     the job was cancelled (raised at a call boundary)
    └── NonDeterministicError         replay took a different path than the history

    LeaseLost (BaseException)         this execution no longer owns its job
    StorageInterrupted (BaseException) a checkpoint could not be written mid-job
    CallRetryPending (BaseException)  a call failed and will be retried (internal)

NoRetry and RetryAfter, which user code raises to steer retries, live in ``retry``.

Control signals derive from BaseException so a body's ``except Exception`` cannot
swallow them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store.base import CallRecord


class DurableError(Exception):
    """Base class of every celery-durable error."""


class ConfigurationError(DurableError):
    """A setting or a task option is invalid."""


class StorageUnavailable(DurableError):
    """The durable database cannot be reached or used."""


class SerializationError(DurableError, TypeError):
    """A value cannot be stored as JSON."""


class JobNotFound(DurableError, LookupError):
    """No durable job has this id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"durable job {job_id!r} not found")


class JobStateError(DurableError):
    """The operation does not apply to the job in its current state."""

    def __init__(self, job_id: str, state: str, why: str) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(f"durable job {job_id!r} is {state}: {why}")


class UnknownTaskError(DurableError, LookupError):
    """call() named a task that is not registered with the app."""


class OutsideDurableTaskError(DurableError, RuntimeError):
    """call() was used outside the body of a durable task."""


class CallError(DurableError):
    """A durable call failed. ``__cause__`` is the original exception on the run that
    failed; on replay the original is gone and ``error_type``/``error_message`` tell
    what it was."""

    def __init__(
        self, *, job_id: str, seq: int, name: str, error_type: str, error_message: str,
        attempts: int = 1, no_retry: bool = False,
    ) -> None:
        self.job_id = job_id
        self.seq = seq
        self.name = name
        self.error_type = error_type
        self.error_message = error_message
        self.attempts = attempts
        self.no_retry = no_retry
        """The call raised NoRetry: the job is not retried either."""
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(
            f"call #{seq} {name!r} of job {job_id} failed{tried}: "
            f"{error_type}: {error_message}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_call_error, (self.job_id, self.seq, self.name, self.error_type,
                                      self.error_message, self.attempts, self.no_retry))


def _rebuild_call_error(
    job_id: str, seq: int, name: str, error_type: str, error_message: str,
    attempts: int = 1, no_retry: bool = False,
) -> CallError:
    return CallError(job_id=job_id, seq=seq, name=name, error_type=error_type,
                     error_message=error_message, attempts=attempts, no_retry=no_retry)


class Cancelled(DurableError):
    """The job was cancelled while it ran. Raised once, at the next call() after the
    cancel request was seen; the body may catch it and compensate with more calls. The
    job ends cancelled whatever the body does next, and is never retried or resumed."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"durable job {job_id} was cancelled")

    def __reduce__(self) -> tuple[object, ...]:
        return (Cancelled, (self.job_id,))


class NonDeterministicError(DurableError):
    """Replay asked for a different call than the one recorded at the same position."""

    def __init__(self, *, job_id: str, task: str, seq: int, expected: str, recorded: str,
                 expected_digest: str | None = None, recorded_digest: str | None = None,
                 mode: str = "explicit") -> None:
        self.job_id = job_id
        self.task = task
        self.seq = seq
        self.expected = expected
        self.recorded = recorded
        self.expected_digest = expected_digest
        self.recorded_digest = recorded_digest
        self.mode = mode
        asked, held = repr(expected), repr(recorded)
        if expected_digest is not None and expected == recorded:
            asked += f" with arguments {expected_digest[:12]}"
            held += f" with arguments {(recorded_digest or '')[:12]}"
        super().__init__(
            f"job {job_id} ({task}) is not deterministic ({mode} mode): at call #{seq} the "
            f"code now asks for {asked} but the history holds {held}. The task's code "
            f"changed while this job was in flight, or the body branches on something "
            f"that is not a call() result. To resolve: keep the old path for in-flight "
            f"jobs with `if patched(\"<change id>\"):`, or run the task with "
            f"determinism=\"best_effort\", or retry the job from scratch "
            f"(`celery durable jobs retry {job_id} --from-scratch`)."
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_nondeterministic, (
            self.job_id, self.task, self.seq, self.expected, self.recorded,
            self.expected_digest, self.recorded_digest, self.mode))


def _rebuild_nondeterministic(
    job_id: str, task: str, seq: int, expected: str, recorded: str,
    expected_digest: str | None = None, recorded_digest: str | None = None,
    mode: str = "explicit",
) -> NonDeterministicError:
    return NonDeterministicError(job_id=job_id, task=task, seq=seq, expected=expected,
                                 recorded=recorded, expected_digest=expected_digest,
                                 recorded_digest=recorded_digest, mode=mode)


class LeaseLost(BaseException):
    """Another execution took over this job; this one must stop without writing."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"lease on durable job {job_id} was lost to another execution")


class StorageInterrupted(BaseException):
    """The store failed while a job was running (e.g. the database restarted).

    Treated like a crash, not a failure: the job keeps its row and is resumed by
    recovery once its lease expires, replaying what was checkpointed.
    """

    def __init__(self, job_id: str, cause: BaseException) -> None:
        self.job_id = job_id
        super().__init__(f"durable job {job_id} interrupted by a storage error: {cause}")


class CallRetryPending(BaseException):
    """A call failed with retries left: the job stops here and runs again later.

    Internal: raised by call() and handled by the runner, which reschedules the job.
    """

    def __init__(self, record: CallRecord, delay: float, error: BaseException) -> None:
        self.record = record
        self.delay = delay
        self.error = error
        super().__init__(f"call retry in {delay:g}s after {type(error).__name__}: {error}")


@contextmanager
def interrupt_on_storage_error(job_id: str) -> Iterator[None]:
    """Turn StorageUnavailable inside a running job into StorageInterrupted."""
    try:
        yield
    except StorageUnavailable as exc:
        raise StorageInterrupted(job_id, exc) from exc
