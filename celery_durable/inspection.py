"""Read-only views of a job and its call timeline, for people and tools."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import serialization
from .store.base import CallRecord, JobRecord


@dataclass(frozen=True)
class CallView:
    scope: str
    """The job id the call belongs to (``"<job>.<seq>"`` inside an in-process child)."""
    seq: int
    position: str
    """``"2"``, or ``"3.1"`` for the first call of a durable child called at #3."""
    name: str
    state: str
    attempts: int
    started_at: datetime
    finished_at: datetime
    result: Any
    error: dict[str, str] | None

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()



@dataclass(frozen=True)
class JobView:
    id: str
    task: str
    state: str
    attempts: int
    recoveries: int
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any
    error: dict[str, str] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str | None
    calls: tuple[CallView, ...]

    def timeline(self) -> str:
        """The call timeline as a small text table."""
        width = max([len(c.name) for c in self.calls] + [4]) + 2
        lines = [f"job {self.id} ({self.task}): {self.state}, "
                 f"{self.attempts} execution(s), {self.recoveries} recovery(ies)",
                 f"  {'#':<6}{'call':<{width}}{'state':<11}{'attempts':>8}{'ms':>9}"]
        for c in self.calls:
            lines.append(f"  {c.position:<6}{c.name:<{width}}{c.state:<11}{c.attempts:>8}"
                         f"{c.duration * 1000:>9.1f}")
        if self.error:
            lines.append(f"  error: {self.error.get('type')}: {self.error.get('message')}")
        elif self.state == "succeeded":
            lines.append(f"  result: {self.result!r}")
        return "\n".join(lines)


def job_view(job: JobRecord, calls: list[CallRecord]) -> JobView:
    views = [CallView(
        scope=c.job_id, seq=c.seq, position=_position(job.id, c), name=c.name,
        state=c.state.value, attempts=c.attempts, started_at=c.started_at,
        finished_at=c.finished_at, result=serialization.loads(c.result),
        error=serialization.loads(c.error),
    ) for c in calls]
    views.sort(key=lambda v: [int(part) for part in v.position.split(".")])
    return JobView(
        id=job.id, task=job.task, state=job.state.value, attempts=job.attempts,
        recoveries=job.recoveries, args=serialization.loads(job.args),
        kwargs=serialization.loads(job.kwargs), result=serialization.loads(job.result),
        error=serialization.loads(job.error), created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at, lease_owner=job.lease_owner,
        calls=tuple(views),
    )


def _position(root_id: str, call: CallRecord) -> str:
    """``"3"`` for the root's call #3, ``"3.1"`` for call #1 of the child called at #3."""
    scope = call.job_id[len(root_id):].lstrip(".")
    return f"{scope}.{call.seq}" if scope else str(call.seq)
