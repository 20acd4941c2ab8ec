"""What a claim decides from the job's row alone, the same in every store."""

from __future__ import annotations

from datetime import datetime

from .records import FINISHED_STATES, Claim, ClaimOutcome, JobRecord, JobState


def unclaimable(job: JobRecord, now: datetime) -> Claim | None:
    """Why a claim of ``job`` fails whatever the flow rules say (finished, held by a
    live lease, before its backoff, waiting), or None if only they could stop it."""
    if job.state in FINISHED_STATES:
        return Claim(ClaimOutcome.FINISHED, job)
    leased = (
        job.lease_owner is not None
        and job.lease_expires_at is not None
        and (job.lease_expires_at >= now)
    )
    if not leased and job.not_before is not None and job.not_before > now:
        return Claim(ClaimOutcome.EARLY, job)
    if (
        leased
        or job.cancel_requested_at is not None
        or (job.state is JobState.SUSPENDED and job.awaiting > 0)
    ):
        return Claim(ClaimOutcome.BUSY, job)
    return None
