"""Putting a finished job back to work under the same id (``retry``, dead-letter
requeue): the row goes back to pending, then its message is published."""

from __future__ import annotations

from collections.abc import Sequence

from ..engine.positions import discard_from_first_failure
from ..engine.publish import publish_or_leave
from ..engine.runtime import Runtime
from ..store.records import JobState


def requeue(
    runtime: Runtime, job_id: str, from_states: Sequence[JobState], *, from_scratch: bool
) -> bool:
    """Put a finished job back to pending (same id) and publish it; False, and nothing
    changed, if it was not in one of ``from_states``. Calls that succeeded before the
    first failure replay unless ``from_scratch``."""
    storage = runtime.storage
    discard = (
        None if from_scratch else discard_from_first_failure(job_id, storage.load_history(job_id))
    )
    if not storage.requeue_job(
        job_id, from_states, discard, runtime.deliver_by(None), runtime.now()
    ):
        return False
    job = storage.get_job(job_id)
    if job is not None:
        publish_or_leave(runtime, job, "requeued")
    return True
