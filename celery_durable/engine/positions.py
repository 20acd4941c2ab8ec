"""Positions in a job's call history, and which checkpoints a retry must drop."""

from __future__ import annotations

from collections.abc import Iterable

from .. import serialization
from ..store.records import CallKey, CallRecord, CallState, Position, position

CANCELLED_MARKER = "celery_durable.cancelled"
BRANCH = "celery_durable.branch"
"""The history entry at the position an async body's branch took (its calls are
numbered under it)."""
"""The history entry where a cancelled job's body got Cancelled (replayed there)."""


def dispatched_child(record: CallRecord) -> str:
    """The child job a dispatched call's checkpoint stands for."""
    return str(serialization.loads(record.result)["child"])


def waited_children(history: Iterable[CallRecord]) -> list[str]:
    """The child jobs of dispatched calls whose outcome the job has not taken in."""
    return [dispatched_child(c) for c in history if c.state is CallState.DISPATCHED]


def discard_from_first_failure(root_id: str, history: Iterable[CallRecord]) -> list[CallKey]:
    """The checkpoints a job retry (or a requeue) drops so the body runs live again.

    Every succeeded call before the first failed one is kept and replays; the failed call
    and everything that started after it go, so the body may take a different path this
    time. A failure inside a call that itself succeeded (the callee caught it) is part of
    that call's checkpoint and does not count. A call dispatched as a child job whose
    outcome the job has not taken in yet is kept, with what follows it: the same child
    is waited for again, never dispatched twice.

    Calls of an async body may run side by side: one at a later position that started
    before the failure ended and succeeded ran beside it, not after it, and is kept.
    """
    calls = {position(root_id, c.job_id, c.seq): c for c in history}
    # a branch's marker is no call: what is under it is not part of its checkpoint
    succeeded = {p for p, c in calls.items() if c.state is CallState.SUCCEEDED and c.name != BRANCH}

    def visible(p: Position) -> bool:
        return not any(p[:n] in succeeded for n in range(1, len(p)))

    # A dispatched call waiting for its child is not a failure: its child is running (or
    # done), so it is kept and the replay takes in the child's outcome.
    # Where Cancelled was raised counts too: a retried cancelled job runs on from there.
    failed = [
        p
        for p, c in calls.items()
        if visible(p)
        and (c.state in (CallState.FAILED, CallState.RETRYING) or c.name == CANCELLED_MARKER)
    ]
    if not failed:
        return []
    first = min(failed)
    ended = calls[first].finished_at
    beside = {
        p
        for p, c in calls.items()
        if p > first and c.state is CallState.SUCCEEDED and c.started_at < ended
    }

    branches = {p for p in beside if calls[p].name == BRANCH}

    def kept(p: Position) -> bool:  # ran beside the failure, or is part of such a call
        above = [p[:n] for n in range(1, len(p)) if p[:n] in calls]
        if any(a not in beside for a in above):
            return False  # under a call that goes (the failure itself, say)
        return p in beside or any(a not in branches for a in above)

    return [(c.job_id, c.seq) for p, c in sorted(calls.items()) if p >= first and not kept(p)]
