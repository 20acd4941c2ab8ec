"""Read-only views of a job and its call timeline, for people and tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import serialization
from ..engine.positions import waited_children
from ..engine.runtime import Runtime
from ..errors import JobNotFound
from ..store.records import CallRecord, JobError, JobRecord, JobState, WorkerRecord, position


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
    error: dict[str, Any] | None
    """The last attempt's error (type, message, traceback) while failed or retrying;
    ``error["attempts"]`` lists every failed attempt with its timestamps."""

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def failed_attempts(self) -> list[dict[str, Any]]:
        """Each failed attempt: type, message, started_at, failed_at (ISO strings)."""
        return list((self.error or {}).get("attempts", []))


@dataclass(frozen=True)
class ExecutionError:
    """One execution of the job that ended in an error (``execution``: its claim number)."""

    execution: int
    error: dict[str, Any]
    failed_at: datetime


@dataclass(frozen=True)
class JobSummary:
    id: str
    task: str
    queue: str | None
    state: str
    attempts: int
    """Executions that claimed the job, crashed ones included."""
    failures: int
    """Executions that ended in an error since the job was (re)queued."""
    recoveries: int
    requeues: int
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    not_before: datetime | None
    """While retrying: the earliest time the next execution may start."""
    lease_owner: str | None
    parent_id: str | None
    """For a dispatched call's child job: the job that dispatched it."""
    waiting_topic: str | None
    """While suspended in ``receive()``: the topic it waits for a message on."""

    @property
    def wake_at(self) -> datetime | None:
        """While suspended by ``sleep()`` (or ``receive()`` with a timeout): when the job
        resumes."""
        return self.not_before if self.state == "suspended" else None


@dataclass(frozen=True)
class JobView(JobSummary):
    calls: tuple[CallView, ...] = ()
    errors: tuple[ExecutionError, ...] = ()
    """Every failed execution, oldest first (kept across requeues)."""
    waiting_for: list[str] = field(default_factory=list)
    """Ids of the dispatched child jobs whose outcome the job has not taken in yet."""

    def timeline(self) -> str:
        """The call timeline as a small text table."""
        width = max([len(c.name) for c in self.calls] + [4]) + 2
        lines = [
            f"job {self.id} ({self.task}): {self.state}, "
            f"{self.attempts} execution(s), {self.failures} failed, "
            f"{self.recoveries} recovery(ies)"
            + (f", requeued {self.requeues}x" if self.requeues else ""),
            f"  {'#':<6}{'call':<{width}}{'state':<11}{'attempts':>8}{'ms':>9}",
        ]
        for c in self.calls:
            lines.append(
                f"  {c.position:<6}{c.name:<{width}}{c.state:<11}{c.attempts:>8}"
                f"{c.duration * 1000:>9.1f}"
            )
        for e in self.errors:
            lines.append(
                f"  execution {e.execution} failed {e.failed_at:%Y-%m-%d %H:%M:%S}: "
                f"{e.error.get('type')}: {e.error.get('message')}"
            )
        if self.not_before is not None and self.state in ("retrying", "pending"):
            lines.append(f"  next attempt not before {self.not_before.isoformat()}")
        if self.wake_at is not None and not self.waiting_topic:
            lines.append(f"  sleeping until {self.wake_at.isoformat()}")
        if self.waiting_for:
            lines.append(f"  waiting for child job(s): {', '.join(self.waiting_for)}")
        if self.waiting_topic:
            until = f" until {self.wake_at.isoformat()}" if self.wake_at else ""
            lines.append(f"  waiting for a message on {self.waiting_topic!r}{until}")
        if self.error and not self.errors:
            lines.append(f"  error: {self.error.get('type')}: {self.error.get('message')}")
        elif self.state == "succeeded":
            lines.append(f"  result: {self.result!r}")
        return "\n".join(lines)


@dataclass(frozen=True)
class WorkerView:
    """A `celery worker` as its heartbeat row shows it."""

    name: str
    hostname: str
    pid: int
    queues: list[str]
    started_at: datetime
    last_seen_at: datetime
    sweeps: int
    """Recovery sweeps since it started: one per ``durable_sweep_interval``."""
    alive: bool
    """Seen within three sweep intervals."""


def worker_view(worker: WorkerRecord, now: datetime, sweep_interval: float) -> WorkerView:
    return WorkerView(
        name=worker.name,
        hostname=worker.hostname,
        pid=worker.pid,
        queues=list(serialization.loads(worker.queues) or []),
        started_at=worker.started_at,
        last_seen_at=worker.last_seen_at,
        sweeps=worker.sweeps,
        alive=(now - worker.last_seen_at).total_seconds() <= 3 * sweep_interval,
    )


def job_summary(job: JobRecord) -> JobSummary:
    return JobSummary(**_summary_fields(job))


def _summary_fields(job: JobRecord) -> dict[str, Any]:
    return dict(
        id=job.id,
        task=job.task,
        queue=job.queue,
        state=job.state.value,
        attempts=job.attempts,
        failures=job.failures,
        recoveries=job.recoveries,
        requeues=job.requeues,
        args=serialization.loads(job.args),
        kwargs=serialization.loads(job.kwargs),
        result=serialization.loads(job.result),
        error=serialization.loads(job.error),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        not_before=job.not_before,
        lease_owner=job.lease_owner,
        parent_id=job.parent_id,
        waiting_topic=job.waiting_topic if job.state is JobState.SUSPENDED else None,
    )


def job_view(
    job: JobRecord, calls: list[CallRecord], errors: list[JobError] | None = None
) -> JobView:
    ordered = sorted(calls, key=lambda c: position(job.id, c.job_id, c.seq))
    views = tuple(
        CallView(
            scope=c.job_id,
            seq=c.seq,
            position=".".join(map(str, position(job.id, c.job_id, c.seq))),
            name=c.name,
            state=c.state.value,
            attempts=c.attempts,
            started_at=c.started_at,
            finished_at=c.finished_at,
            result=serialization.loads(c.result),
            error=serialization.loads(c.error),
        )
        for c in ordered
    )
    return JobView(
        **_summary_fields(job),
        calls=views,
        errors=tuple(
            ExecutionError(e.execution, serialization.loads(e.error), e.failed_at)
            for e in errors or ()
        ),
        waiting_for=waited_children(calls),
    )


def export_history(runtime: Runtime, job_id: str) -> dict[str, Any]:
    """The job and every recorded call, as plain JSON-able data (format version 1)."""
    job = runtime.storage.get_job(job_id)
    if job is None:
        raise JobNotFound(job_id)
    calls = runtime.storage.load_history(job_id)
    return {
        "format": "celery-durable-history/1",
        "job": {
            "id": job.id,
            "task": job.task,
            "args": serialization.loads(job.args),
            "kwargs": serialization.loads(job.kwargs),
            "state": job.state.value,
        },
        "calls": [
            {
                "scope": c.job_id,
                "seq": c.seq,
                "name": c.name,
                "args_digest": c.args_digest,
                "state": c.state.value,
                "attempts": c.attempts,
                "result": c.result,
                "error": c.error,
                "started_at": c.started_at.isoformat(),
                "finished_at": c.finished_at.isoformat(),
            }
            for c in calls
        ],
    }
