"""What every kind of step shares: replaying a recorded outcome, the checks before a
step runs for real (lease still ours, a cancel to raise), writing its checkpoint."""

from __future__ import annotations

from typing import Any

from .. import serialization
from ..errors import CallError, Cancelled, LeaseLost, interrupt_on_storage_error
from ..store.records import CallRecord, CallState
from .context import Execution
from .positions import CANCELLED_MARKER
from .recorded_values import pseudo_call


def check_may_run(execution: Execution, seq: int, previous: CallRecord | None) -> None:
    """Before the call at ``seq`` runs for real: stop if the lease was lost; raise
    Cancelled (once) if the job was cancelled, so the body may compensate. Where it was
    raised is recorded, so a replay raises it at the same place."""
    watch = execution.watch
    if watch.lost.is_set():
        raise LeaseLost(execution.lease.job_id)
    if watch.cancelled.is_set() and not watch.cancel_raised:
        record_step(
            execution,
            pseudo_call(
                execution,
                seq,
                CANCELLED_MARKER,
                "",
                "null",
                attempts=previous.attempts + 1 if previous is not None else 1,
            ),
        )
        watch.cancel_raised = True
        raise Cancelled(execution.root_id)


def replay_recorded(execution: Execution, seq: int, recorded: CallRecord) -> Any:
    """A recorded call's outcome again: its result, or its CallError."""
    if recorded.state is CallState.FAILED:
        error = serialization.loads(recorded.error) or {}
        raise CallError(
            job_id=execution.job_id,
            seq=seq,
            name=recorded.name,
            error_type=error.get("type", "Exception"),
            error_message=error.get("message", ""),
            attempts=recorded.attempts,
            no_retry=bool(error.get("no_retry")),
        )
    return serialization.loads(recorded.result)


def record_step(execution: Execution, record: CallRecord) -> None:
    # StorageInterrupted is a BaseException, so the body cannot swallow it.
    with interrupt_on_storage_error(execution.root_id):
        execution.runtime.storage.record_call(record, execution.lease)
