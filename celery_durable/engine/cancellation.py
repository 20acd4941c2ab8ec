"""Cancelling a job in SQL: what every cancel (the API, the CLI, Celery's revoke) does.

Pending, retrying or suspended: the job is cancelled and never starts. Running: a
cancel is requested and the execution raises Cancelled at its next call. Either way the
job is never resumed by recovery, and the child jobs of calls it dispatched and still
waits for are cancelled too.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import serialization
from ..store.records import CancelOutcome
from .positions import waited_children
from .runtime import Runtime


def cancel_job(
    runtime: Runtime, job_id: str, also: Callable[[str], object] = lambda job_id: None
) -> CancelOutcome:
    """Cancel the job and the children it waits for; ``also(job_id)`` runs for each one
    that was not finished (the API broadcasts Celery's revoke there)."""
    error = serialization.dumps(
        {"type": "Cancelled", "message": f"job {job_id} cancelled", "traceback": ""},
        what="an error description",
    )
    outcome = runtime.storage.cancel_job(job_id, error, runtime.now())
    if outcome in (CancelOutcome.MISSING, CancelOutcome.FINISHED):
        return outcome
    also(job_id)
    for child_id in waited_children(runtime.storage.load_history(job_id)):
        cancel_job(runtime, child_id, also)
    return outcome
