"""The SQL store's flow control: claims under concurrency and rate limits, paused queues
and tasks, debounced enqueues.

A limited task's claim is one transaction that first locks the task's gate rows (one
per limit and key, in ``flow_gates``), so two claims of the same key take turns on every
database: PostgreSQL and MySQL lock the row, SQLite the whole database. Under the lock
it counts the key's running jobs (a job whose lease expired does not count: its worker
is gone) and takes a token from the rate's bucket. What it counts is the jobs table
itself, so nothing can drift: a worker that dies holding a slot frees it when its lease
expires.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import (
    Connection,
    Insert,
    Select,
    Update,
    and_,
    bindparam,
    exists,
    func,
    not_,
    or_,
    select,
)
from sqlalchemy import exc as sa_exc

from ..claims import unclaimable
from ..flow_rules import BURST, CONCURRENCY_GATE, RATE_GATE, gate_keys, rate_deadline, rate_turn
from ..records import (
    Claim,
    ClaimOutcome,
    Gate,
    Held,
    JobRecord,
    JobState,
    NewJob,
    Pause,
)
from .hot import compile_statement
from .jobs import JobsSQL
from .rows import job_record
from .schema import Tables
from .statements import NEW_JOB_COLUMNS, new_job_row, pause_of, paused_clause

RESUME_BATCH = 1000


@dataclass(frozen=True)
class FlowStatements:
    touch_gate: Update
    insert_gate: Insert
    gate: Select[Any]
    set_gate: Update
    job_for_update: Select[Any]
    is_paused: Select[Any]
    running: Select[Any]
    older_waiters: Select[Any]
    waiters: Select[Any]
    hold: Update
    claim: Update
    insert_pause: Insert
    repause: Update
    resume_pause: Update
    pauses: Select[Any]
    lock_gate: Select[Any]
    resumed_since: Select[Any]
    resumed_holds: Select[Any]
    release_holds: Update
    debounce_update: Update
    debounce_update_keep_args: Update
    debounce_holder: Select[Any]
    insert_debounced: Insert
    outbox_sent: Update
    insert_outbox: Insert
    job_exists: Select[Any]


def flow_statements(tables: Tables, claim: Update) -> FlowStatements:
    jobs, gates, pauses = tables.jobs, tables.flow_gates, tables.pauses
    by_gate = (gates.c.task == bindparam("p_task"), gates.c.key == bindparam("p_key"))
    by_pause = (pauses.c.kind == bindparam("p_kind"), pauses.c.name == bindparam("p_name"))
    of_key = (jobs.c.task == bindparam("p_task"), jobs.c.flow_key == bindparam("p_key"))
    held_for_slot = (
        *of_key,
        jobs.c.state == JobState.PENDING.value,
        jobs.c.held == Held.CONCURRENCY.value,
    )
    pending_debounced = (
        jobs.c.task == bindparam("p_task"),
        jobs.c.debounce_key == bindparam("p_key"),
        jobs.c.state == JobState.PENDING.value,
        jobs.c.attempts == 0,
    )
    held_by_pause = jobs.c.held == Held.PAUSED.value
    # a job a pause holds: its task's, or its queue's (recorded when it was held)
    still_paused = paused_clause(tables, func.coalesce(jobs.c.held_on, jobs.c.queue))
    # a pause lifted since p_since that held this job
    recently_resumed = exists().where(
        pauses.c.resumed_at >= bindparam("p_since"),
        or_(
            and_(pauses.c.kind == "task", pauses.c.name == jobs.c.task),
            and_(
                pauses.c.kind == "queue",
                pauses.c.name == func.coalesce(jobs.c.held_on, jobs.c.queue),
            ),
        ),
    )
    debounce_values: dict[str, Any] = {
        "not_before": bindparam("p_not_before"),
        "lease_expires_at": bindparam("p_deliver_by"),
    }
    return FlowStatements(
        # a write first, so SQLite takes its lock before reading anything
        touch_gate=gates.update().where(*by_gate).values(next_at=gates.c.next_at),
        insert_gate=gates.insert().values(
            task=bindparam("p_task"),
            key=bindparam("p_key"),
            tokens=BURST,
            refilled_at=bindparam("p_now"),
            next_at=bindparam("p_now"),
        ),
        gate=select(gates.c.tokens, gates.c.refilled_at, gates.c.next_at).where(*by_gate),
        set_gate=gates.update()
        .where(*by_gate)
        .values(
            tokens=bindparam("p_tokens"),
            refilled_at=bindparam("p_now"),
            next_at=bindparam("p_next_at"),
        ),
        job_for_update=select(jobs).where(jobs.c.id == bindparam("p_id")).with_for_update(),
        is_paused=select(pauses.c.kind)
        .where(pause_of(tables, bindparam("p_task"), bindparam("p_queue")))
        .limit(1),
        # every running job holds its slot until recovery takes it back (a lease that
        # lapsed may still be renewed by a slow but live execution)
        running=select(func.count())
        .select_from(jobs)
        .where(*of_key, jobs.c.state == JobState.RUNNING.value, jobs.c.id != bindparam("p_id")),
        # every job of the key that may start now and was enqueued before this one:
        # held for a slot, or not delivered yet (its key was written at enqueue)
        older_waiters=select(jobs)
        .where(
            *of_key,
            jobs.c.state == JobState.PENDING.value,
            or_(jobs.c.held.is_(None), jobs.c.held != Held.PAUSED.value),
            or_(jobs.c.not_before.is_(None), jobs.c.not_before <= bindparam("p_now")),
            jobs.c.id != bindparam("p_id"),
            or_(
                jobs.c.created_at < bindparam("p_created_at"),
                and_(
                    jobs.c.created_at == bindparam("p_created_at"),
                    jobs.c.id < bindparam("p_id"),
                ),
            ),
        )
        .order_by(jobs.c.created_at, jobs.c.id)
        .limit(bindparam("p_limit")),
        waiters=select(jobs)
        .where(*held_for_slot)
        .order_by(jobs.c.created_at, jobs.c.id)
        .limit(bindparam("p_limit")),
        hold=jobs.update()
        .where(jobs.c.id == bindparam("p_id"), jobs.c.lease_owner.is_(None))
        .values(
            held=bindparam("p_held"),
            flow_key=bindparam("p_flow_key"),
            lease_expires_at=bindparam("p_deliver_by"),
            not_before=bindparam("p_not_before"),
        ),
        claim=claim.values(flow_key=bindparam("p_flow_key")),
        insert_pause=pauses.insert().values(
            kind=bindparam("p_kind"), name=bindparam("p_name"), paused_at=bindparam("p_now")
        ),
        repause=pauses.update()
        .where(*by_pause, pauses.c.resumed_at.is_not(None))
        .values(paused_at=bindparam("p_now"), resumed_at=None),
        resume_pause=pauses.update()
        .where(*by_pause, pauses.c.resumed_at.is_(None))
        .values(resumed_at=bindparam("p_now")),
        pauses=select(pauses)
        .where(pauses.c.resumed_at.is_(None))
        .order_by(pauses.c.kind, pauses.c.name),
        lock_gate=select(gates.c.key).where(*by_gate).with_for_update(),
        resumed_since=select(pauses.c.name)
        .where(pauses.c.resumed_at >= bindparam("p_since"))
        .limit(1),
        resumed_holds=select(jobs)
        .where(held_by_pause, recently_resumed, not_(still_paused))
        .order_by(jobs.c.created_at, jobs.c.id)
        .limit(bindparam("p_limit")),
        release_holds=jobs.update()
        .where(jobs.c.id.in_(bindparam("p_ids", expanding=True)), held_by_pause)
        .values(held=None, lease_expires_at=bindparam("p_deliver_by")),
        debounce_update=jobs.update()
        .where(*pending_debounced)
        .values(
            **debounce_values,
            args=bindparam("p_args"),
            kwargs=bindparam("p_kwargs"),
            flow_key=bindparam("p_flow_key"),  # the latest arguments' key
        ),
        debounce_update_keep_args=jobs.update().where(*pending_debounced).values(**debounce_values),
        debounce_holder=select(jobs.c.id).where(*pending_debounced),
        job_exists=select(jobs.c.id).where(jobs.c.id == bindparam("p_id")),
        insert_outbox=jobs.insert().values(
            {**{c: bindparam(c) for c in NEW_JOB_COLUMNS}, "held": Held.OUTBOX.value}
        ),
        outbox_sent=jobs.update()
        .where(
            jobs.c.id == bindparam("p_id"),
            jobs.c.held == Held.OUTBOX.value,
            jobs.c.lease_owner.is_(None),
        )
        .values(held=None, lease_expires_at=bindparam("p_deliver_by")),
        insert_debounced=jobs.insert().values(
            {
                **{c: bindparam(c) for c in NEW_JOB_COLUMNS},
                "debounce_key": bindparam("debounce_key"),
            }
        ),
    )


class FlowSQL(JobsSQL):
    @cached_property
    def _flow(self) -> FlowStatements:
        return flow_statements(self.tables, self._sql.claim)

    @cached_property
    def _gates_seen(self) -> set[tuple[str, str]]:
        return set()

    # -- claims under limits ----------------------------------------------------------------

    def claim_gated(
        self, job_id: str, owner: str, now: datetime, lease_until: datetime, gate: Gate
    ) -> Claim:
        keys = gate_keys(gate)
        for _ in range(3):
            self._ensure_gates(gate.task, keys, now)
            with self._transaction() as conn:
                if all(self._lock_gate(conn, gate.task, k) for k in keys):
                    return self._claim_locked(conn, job_id, owner, now, lease_until, gate)
            self._gates_seen.clear()  # a gate row went missing: write it again
        raise RuntimeError(f"could not lock the flow gates of task {gate.task!r}")

    def _lock_gate(self, conn: Connection, task: str, key: str) -> bool:
        """Take the gate row's lock for the rest of the transaction; False if the row is
        missing. SQLite locks the database on its first write, so there the lock is a
        write; elsewhere the row is locked by reading it FOR UPDATE."""
        params = {"p_task": task, "p_key": key}
        if conn.dialect.name == "sqlite":
            return bool(conn.execute(self._flow.touch_gate, params).rowcount == 1)
        return conn.execute(self._flow.lock_gate, params).first() is not None

    def _ensure_gates(self, task: str, keys: Sequence[str], now: datetime) -> None:
        for key in keys:
            if (task, key) in self._gates_seen:
                continue
            with contextlib.suppress(sa_exc.IntegrityError):  # another claim wrote it
                self._rowcount(self._flow.insert_gate, {"p_task": task, "p_key": key, "p_now": now})
            self._gates_seen.add((task, key))

    def _claim_locked(
        self,
        conn: Connection,
        job_id: str,
        owner: str,
        now: datetime,
        lease_until: datetime,
        gate: Gate,
    ) -> Claim:
        flow = self._flow
        row = conn.execute(flow.job_for_update, {"p_id": job_id}).first()
        if row is None:
            return Claim(ClaimOutcome.MISSING)
        job = job_record(row)
        refused = unclaimable(job, now)
        if refused is not None:
            return refused
        if job.lease_owner is not None:  # an expired lease: recovery gives it back first
            return Claim(ClaimOutcome.BUSY, job)
        hold = {"p_id": job_id, "p_flow_key": job.flow_key, "p_not_before": job.not_before}
        if conn.execute(flow.is_paused, {"p_task": gate.task, "p_queue": gate.queue}).first():
            # the plain claim's statements do the same: held with no deadline
            conn.execute(self._sql.hold_paused, {"p_id": job_id, "p_queue": gate.queue})
            return Claim(ClaimOutcome.HELD, job, held=Held.PAUSED)
        flow_key = None
        if gate.concurrency is not None:
            flow_key = gate.concurrency_key
            key = {"p_task": gate.task, "p_key": flow_key, "p_id": job_id}
            running = int(conn.execute(flow.running, key).scalar_one())
            free = max(0, gate.concurrency - running)
            # at most as many older jobs as there are free slots: they take them first
            older = (
                [
                    job_record(r)
                    for r in conn.execute(
                        flow.older_waiters,
                        {**key, "p_now": now, "p_created_at": job.created_at, "p_limit": free},
                    )
                ]
                if free
                else []
            )
            if len(older) >= free:
                conn.execute(
                    flow.hold,
                    {
                        **hold,
                        "p_held": Held.CONCURRENCY.value,
                        "p_flow_key": flow_key,
                        "p_deliver_by": now + gate.recheck,
                    },
                )
                return Claim(ClaimOutcome.HELD, job, held=Held.CONCURRENCY, waiters=tuple(older))
        if gate.rate is not None:
            rate_key = {"p_task": gate.task, "p_key": RATE_GATE + gate.rate_key}
            tokens, refilled_at, next_at = conn.execute(flow.gate, rate_key).one()
            turn = rate_turn(
                gate.rate, tokens, refilled_at, next_at, now, queued=job.held == Held.RATE
            )
            conn.execute(
                flow.set_gate,
                {**rate_key, "p_tokens": turn.tokens, "p_next_at": turn.next_at, "p_now": now},
            )
            if turn.due_at is not None:
                conn.execute(
                    flow.hold,
                    {
                        **hold,
                        "p_held": Held.RATE.value,
                        "p_not_before": turn.due_at,
                        "p_deliver_by": rate_deadline(gate, turn.due_at, now),
                    },
                )
                return Claim(ClaimOutcome.HELD, job, held=Held.RATE, due_at=turn.due_at)
        params = {
            "p_id": job_id,
            "p_owner": owner,
            "p_now": now,
            "p_until": lease_until,
            "p_queue": gate.queue,
            "p_flow_key": flow_key,
        }
        if conn.execute(flow.claim, params).rowcount != 1:  # cannot happen under the lock
            return Claim(ClaimOutcome.BUSY, job)
        return Claim(ClaimOutcome.CLAIMED, attempts=job.attempts + 1, flow_key=flow_key)

    def next_waiters(self, task: str, key: str, limit: int, now: datetime) -> list[JobRecord]:
        flow = self._flow
        self._ensure_gates(task, [CONCURRENCY_GATE + key], now)
        with self._transaction() as conn:
            # under the gate's lock: a claim that is holding a job of this key right now
            # has committed before we look, so the job it holds is among the waiters
            self._lock_gate(conn, task, CONCURRENCY_GATE + key)
            params = {"p_task": task, "p_key": key, "p_id": ""}
            free = limit - int(conn.execute(flow.running, params).scalar_one())
            if free <= 0:
                return []
            return [job_record(r) for r in conn.execute(flow.waiters, {**params, "p_limit": free})]

    # -- pauses -----------------------------------------------------------------------------

    def pause(self, kind: str, name: str, now: datetime) -> bool:
        params = {"p_kind": kind, "p_name": name, "p_now": now}
        if self._rowcount(self._flow.repause, params) == 1:
            return True  # paused again after a resume
        try:
            self._rowcount(self._flow.insert_pause, params)
        except sa_exc.IntegrityError:
            return False
        return True

    def resume(
        self, kind: str, name: str, now: datetime, deliver_by: datetime
    ) -> list[JobRecord] | None:
        params = {"p_kind": kind, "p_name": name, "p_now": now}
        if self._rowcount(self._flow.resume_pause, params) != 1:
            return None
        return self.resumed_holds(now, None, deliver_by)

    def resumed_holds(
        self, since: datetime, limit: int | None, deliver_by: datetime
    ) -> list[JobRecord]:
        """Release jobs held by a pause lifted since ``since`` that no pause holds now,
        oldest first."""
        flow, released = self._flow, list[JobRecord]()
        with self._connect() as conn:  # each sweep asks this: one small read, usually
            if conn.execute(flow.resumed_since, {"p_since": since}).first() is None:
                return released
        while limit is None or len(released) < limit:
            batch = RESUME_BATCH if limit is None else min(RESUME_BATCH, limit - len(released))
            with self._transaction() as conn:
                found = [
                    job_record(r)
                    for r in conn.execute(flow.resumed_holds, {"p_limit": batch, "p_since": since})
                ]
                if not found:
                    break
                conn.execute(
                    flow.release_holds,
                    {"p_ids": [j.id for j in found], "p_deliver_by": deliver_by},
                )
            released += found
            if len(found) < batch:
                break
        return released

    def pauses(self) -> list[Pause]:
        with self._connect() as conn:
            return [Pause(r.kind, r.name, r.paused_at) for r in conn.execute(self._flow.pauses)]

    # -- the outbox -------------------------------------------------------------------------

    def outbox_insert(self, job: NewJob) -> tuple[Insert, dict[str, Any]]:
        """The INSERT of a job written in the caller's transaction (marked
        ``Held.OUTBOX``), and its parameters, to run on the caller's connection."""
        return self._flow.insert_outbox, new_job_row(job)

    def outbox_insert_sql(self, job: NewJob) -> tuple[str, Any]:
        """The same as SQL text with ``%s`` (or ``?`` on SQLite) parameters and their
        values bound for this store's dialect: for a connection SQLAlchemy does not
        own (Django's)."""
        statement = self.__dict__.get("_outbox_compiled")
        if statement is None:
            statement = compile_statement(
                "insert_outbox", self._flow.insert_outbox, self.engine.dialect
            )
            self.__dict__["_outbox_compiled"] = statement
        return statement.sql, statement.parameters(new_job_row(job))

    def outbox_exists(self) -> Select[Any]:
        """Whether a job id exists (``p_id``), to run on the caller's connection."""
        return self._flow.job_exists

    def outbox_sent(self, job_id: str, deliver_by: datetime) -> bool:
        return (
            self._rowcount(self._flow.outbox_sent, {"p_id": job_id, "p_deliver_by": deliver_by})
            == 1
        )

    # -- debounce ---------------------------------------------------------------------------

    def create_debounced_job(self, job: NewJob, keep_first: bool) -> tuple[str, bool]:
        flow = self._flow
        params = {
            "p_task": job.task,
            "p_key": job.debounce_key,
            "p_not_before": job.not_before,
            "p_deliver_by": job.deliver_by,
            "p_args": job.args,
            "p_kwargs": job.kwargs,
            "p_flow_key": job.flow_key,
        }
        update = flow.debounce_update_keep_args if keep_first else flow.debounce_update
        for _ in range(5):  # the pending job may start between our UPDATE and INSERT
            with self._transaction() as conn:
                if conn.execute(update, params).rowcount == 1:
                    holder = conn.scalar(
                        flow.debounce_holder, {"p_task": job.task, "p_key": job.debounce_key}
                    )
                    return str(holder), False
            try:
                self._rowcount(
                    flow.insert_debounced, {**new_job_row(job), "debounce_key": job.debounce_key}
                )
            except sa_exc.IntegrityError:
                if self.get_job(job.id) is not None:
                    return job.id, False  # the id itself existed: an enqueue repeated
                continue  # another enqueue of the key won: update that one
            return job.id, True
        raise RuntimeError(f"could not settle debounce key {job.debounce_key!r}")
