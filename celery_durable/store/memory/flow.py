"""The in-memory store's flow control: the SQL store's rules (``store.sql.flow``), under
the store's one lock."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from ..flow_rules import BURST, RATE_GATE, rate_deadline, rate_turn
from ..records import Claim, ClaimOutcome, Gate, Held, JobRecord, JobState, NewJob, Pause
from .jobs import MemoryJobs


class MemoryFlow(MemoryJobs):
    def claim_gated(
        self, job_id: str, owner: str, now: datetime, lease_until: datetime, gate: Gate
    ) -> Claim:
        with self._lock:
            job = self._unpaused(job_id, now, gate.queue, take_over_expired=False)
            if isinstance(job, Claim):
                return job
            flow_key = None
            if gate.concurrency is not None:
                flow_key = gate.concurrency_key
                running = self._running(gate.task, flow_key, now, job_id)
                older = self._ahead(job, gate.task, flow_key, now)
                if running + len(older) >= gate.concurrency:
                    self._jobs[job_id] = replace(
                        job,
                        held=Held.CONCURRENCY.value,
                        flow_key=flow_key,
                        lease_expires_at=now + gate.recheck,
                    )
                    free = max(0, gate.concurrency - running)
                    return Claim(
                        ClaimOutcome.HELD,
                        job,
                        held=Held.CONCURRENCY,
                        waiters=tuple(older[:free]),
                    )
            if gate.rate is not None:
                key = (gate.task, RATE_GATE + gate.rate_key)
                tokens, refilled_at, next_at = self._gates.get(key, (BURST, now, now))
                turn = rate_turn(
                    gate.rate, tokens, refilled_at, next_at, now, queued=job.held == Held.RATE
                )
                self._gates[key] = (turn.tokens, now, turn.next_at)
                if turn.due_at is not None:
                    self._jobs[job_id] = replace(
                        job,
                        held=Held.RATE.value,
                        not_before=turn.due_at,
                        lease_expires_at=rate_deadline(gate, turn.due_at, now),
                    )
                    return Claim(ClaimOutcome.HELD, job, held=Held.RATE, due_at=turn.due_at)
            return self._claim(job, owner, now, lease_until, flow_key)

    def _running(self, task: str, key: str, now: datetime, but: str) -> int:
        return sum(
            1
            for j in self._jobs.values()
            if j.task == task and j.flow_key == key and j.state is JobState.RUNNING and j.id != but
        )

    def _ahead(self, job: JobRecord, task: str, key: str, now: datetime) -> list[JobRecord]:
        """Jobs of the key enqueued before ``job`` that may start now (held for a slot,
        or not delivered yet), oldest first."""
        return sorted(
            (
                j
                for j in self._jobs.values()
                if j.task == task
                and j.flow_key == key
                and j.state is JobState.PENDING
                and j.held != Held.PAUSED.value
                and (j.not_before is None or j.not_before <= now)
                and (j.created_at, j.id) < (job.created_at, job.id)
            ),
            key=lambda j: (j.created_at, j.id),
        )

    def _waiting(self, task: str, key: str) -> list[JobRecord]:
        return sorted(
            (
                j
                for j in self._jobs.values()
                if j.task == task
                and j.flow_key == key
                and j.state is JobState.PENDING
                and j.held == Held.CONCURRENCY.value
            ),
            key=lambda j: (j.created_at, j.id),
        )

    def next_waiters(self, task: str, key: str, limit: int, now: datetime) -> list[JobRecord]:
        with self._lock:
            free = limit - self._running(task, key, now, "")
            return self._waiting(task, key)[: max(0, free)]

    def pause(self, kind: str, name: str, now: datetime) -> bool:
        with self._lock:
            current = self._pauses.get((kind, name))
            if current is not None and current[1] is None:
                return False
            self._pauses[(kind, name)] = (now, None)
            return True

    def resume(
        self, kind: str, name: str, now: datetime, deliver_by: datetime
    ) -> list[JobRecord] | None:
        with self._lock:
            current = self._pauses.get((kind, name))
            if current is None or current[1] is not None:
                return None
            self._pauses[(kind, name)] = (current[0], now)
        return self.resumed_holds(now, None, deliver_by)

    def resumed_holds(
        self, since: datetime, limit: int | None, deliver_by: datetime
    ) -> list[JobRecord]:
        with self._lock:
            lifted = {
                key for key, (_, resumed) in self._pauses.items() if resumed and resumed >= since
            }
            found = sorted(
                (
                    j
                    for j in self._jobs.values()
                    if j.held == Held.PAUSED.value
                    and (("task", j.task) in lifted or ("queue", j.held_on or j.queue) in lifted)
                    and not self._paused(j.task, j.held_on or j.queue)
                ),
                key=lambda j: (j.created_at, j.id),
            )[:limit]
            for job in found:
                self._jobs[job.id] = replace(job, held=None, lease_expires_at=deliver_by)
            return found

    def pauses(self) -> list[Pause]:
        with self._lock:
            return [
                Pause(kind, name or "", paused_at)
                for (kind, name), (paused_at, resumed) in sorted(self._pauses.items())
                if resumed is None
            ]

    def outbox_sent(self, job_id: str, deliver_by: datetime) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.held != Held.OUTBOX.value or job.lease_owner is not None:
                return False
            self._jobs[job_id] = replace(job, held=None, lease_expires_at=deliver_by)
            return True

    def create_debounced_job(self, job: NewJob, keep_first: bool) -> tuple[str, bool]:
        with self._lock:
            holder = next(
                (
                    j
                    for j in self._jobs.values()
                    if j.debounce_key == job.debounce_key
                    and j.task == job.task
                    and j.state is JobState.PENDING
                    and j.attempts == 0
                ),
                None,
            )
            if holder is not None:
                self._jobs[holder.id] = replace(
                    holder,
                    not_before=job.not_before,
                    lease_expires_at=job.deliver_by,
                    args=holder.args if keep_first else job.args,
                    kwargs=holder.kwargs if keep_first else job.kwargs,
                    flow_key=holder.flow_key if keep_first else job.flow_key,
                )
                return holder.id, False
            if job.id in self._jobs:
                return job.id, False
            self._jobs[job.id] = job.as_record()
            return job.id, True
