"""Replay testing: run today's code against a job's recorded history, without running
or writing anything, and report where it would diverge. Check a deploy in CI::

    history = json.load(open("histories/order-1234.json"))   # `celery durable jobs export`
    report = replay(app.tasks["shop.process_order"], history)
    assert report.ok, report.divergence

Every recorded call returns its recorded result (or raises its recorded CallError);
nothing is ever called, so no side effect happens. Replay stops where the history ends
(an unfinished job) or at the first divergence, judged by the task's determinism mode.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import Task

from ..determinism import Determinism, check_determinism
from ..engine.context import Execution, activate, deactivate, task_determinism
from ..engine.leases import Watch
from ..engine.loop import run_body
from ..engine.matching import EndOfHistory
from ..engine.runtime import runtime_of
from ..errors import NonDeterministicError, ValidationError
from ..store.records import CallRecord, CallState, Lease

FORMAT = "celery-durable-history/1"


@dataclass(frozen=True)
class ReplayReport:
    job_id: str
    task: str
    replayed: int
    """Recorded positions the code asked for and got back."""
    divergence: NonDeterministicError | None
    ended_at: str | None
    """``"#4 shop.send_email"``: the first thing the history did not hold yet."""
    finished: bool
    """The body ran to its end (returned or raised) on recorded values alone."""
    result: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.divergence is None


def replay(
    task: Task,
    history: dict[str, Any] | str | Path,
    *,
    determinism: Determinism | str | None = None,
) -> ReplayReport:
    """Replay ``task``'s current code against ``history`` (a dict from
    ``durable.export_history`` or the path of its JSON file)."""
    data = history if isinstance(history, dict) else json.loads(Path(history).read_text())
    if data.get("format") != FORMAT:
        raise ValidationError(f"not a celery-durable history (format {data.get('format')!r})")
    job = data["job"]
    runtime = runtime_of(task.app)
    records = _History({(c["scope"], c["seq"]): _record(job["id"], c) for c in data["calls"]})
    mode = (
        check_determinism(determinism, "determinism")
        if determinism is not None
        else task_determinism(task, runtime.determinism)
    )
    execution = Execution(
        runtime=runtime,
        task_name=task.name,
        job_id=job["id"],
        root_id=job["id"],
        lease=Lease(job["id"], "replay-test"),
        history=records,
        watch=Watch(),
        call_policy=runtime.call_policy,
        determinism=mode,
        replay_only=True,
    )
    token = activate(execution)
    used = records
    try:
        result = task.run(*job["args"], **job["kwargs"])
        if inspect.iscoroutine(result):  # an async def body: on a loop, as a worker runs it
            execution.is_async = True
            result = run_body(execution, result)
        return ReplayReport(job["id"], task.name, used.count(), None, None, True, result)
    except NonDeterministicError as exc:
        return ReplayReport(job["id"], task.name, used.count(), exc, None, False)
    except EndOfHistory as end:
        return ReplayReport(
            job["id"], task.name, used.count(), None, f"#{end.seq} {end.name}", False
        )
    except Exception as exc:  # the body raised on recorded values: a finished failure
        return ReplayReport(job["id"], task.name, used.count(), None, None, True, error=exc)
    finally:
        deactivate(token)


class _History(dict[tuple[str, int], CallRecord]):
    """The recorded calls, noting which positions the code read back."""

    def __init__(self, records: dict[tuple[str, int], CallRecord]) -> None:
        super().__init__(records)
        self.read: set[tuple[str, int]] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        value = super().get(key, default)
        if value is not None:
            self.read.add(key)
        return value

    def count(self) -> int:
        return len(self.read)


def _record(root: str, c: dict[str, Any]) -> CallRecord:
    return CallRecord(
        job_id=c["scope"],
        seq=c["seq"],
        root_id=root,
        name=c["name"],
        args_digest=c["args_digest"],
        state=CallState(c["state"]),
        attempts=c["attempts"],
        result=c["result"],
        error=c["error"],
        started_at=datetime.fromisoformat(c["started_at"]),
        finished_at=datetime.fromisoformat(c["finished_at"]),
    )
