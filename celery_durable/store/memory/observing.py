"""What the in-memory store tells observers: event-stream rows, workers' heartbeats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..records import (
    JobState,
    WorkerRecord,
    position_text,
)
from .state import MemoryState


class MemoryObserving(MemoryState):
    def changes_since(self, after: datetime, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            jobs = list(self._jobs.values())
            calls = list(self._calls.values())
            errors = [e for errs in self._errors.values() for e in errs]
        out: list[dict[str, Any]] = [
            {
                "kind": kind,
                "id": j.id,
                "task": j.task,
                "state": j.state.value,
                "started_at": j.started_at,
                "finished_at": j.finished_at,
                "error": j.error,
            }
            for j in jobs
            for kind, at in (("started", j.started_at), ("finished", j.finished_at))
            if at and at > after
        ]
        out += [
            {
                "kind": "call",
                "root_id": c.root_id,
                "name": c.name,
                "state": c.state.value,
                "attempts": c.attempts,
                "finished_at": c.finished_at,
                "position": position_text(c.root_id, c.job_id, c.seq),
            }
            for c in calls
            if c.finished_at > after
        ]
        finals = {
            (j.id, j.finished_at) for j in jobs if j.state in (JobState.FAILED, JobState.DEAD)
        }
        out += [
            {
                "kind": "error",
                "job_id": e.job_id,
                "execution": e.execution,
                "error": e.error,
                "failed_at": e.failed_at,
            }
            for e in errors
            if e.failed_at > after and (e.job_id, e.failed_at) not in finals
        ]
        return out

    def record_heartbeat(self, worker: WorkerRecord) -> None:
        with self._lock:
            self._workers[worker.name] = worker

    def list_workers(self) -> list[WorkerRecord]:
        with self._lock:
            return [self._workers[name] for name in sorted(self._workers)]

    def delete_workers(self, seen_before: datetime) -> int:
        with self._lock:
            gone = [n for n, w in self._workers.items() if w.last_seen_at < seen_before]
            for name in gone:
                del self._workers[name]
            return len(gone)
