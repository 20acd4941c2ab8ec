"""The storage protocols: the only seam between the engine and a database.

They speak domain operations (claim a job, record a call, finish a job), never SQL.
Times are timezone-aware UTC datetimes passed in by the caller, which keeps every store
testable with a fixed clock.

Fencing: every write made on behalf of a running execution carries its ``Lease`` and
takes effect only while that lease is still the job's owner; otherwise it raises
``LeaseLost`` and writes nothing.

``StorageConformance`` (``celery_durable.testing``) is the behaviour every
implementation must have.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from .records import (
    CallKey,
    CallRecord,
    CancelOutcome,
    Claim,
    Gate,
    JobError,
    JobFilter,
    JobRecord,
    JobState,
    Lease,
    NewJob,
    Pause,
    ScheduleRecord,
    ScheduleRun,
    SendOutcome,
    SuspendOutcome,
    Wake,
    WorkerRecord,
)


@runtime_checkable
class ScheduleStorage(Protocol):
    def put_schedule(self, record: ScheduleRecord, expected_version: int | None) -> bool:
        """Insert a new schedule (``expected_version`` None: False if the name exists), or
        replace one still at ``expected_version`` (False if it changed meanwhile)."""

    def get_schedule(self, name: str) -> ScheduleRecord | None: ...

    def list_schedules(self) -> list[ScheduleRecord]: ...

    def delete_schedule(self, name: str) -> bool:
        """Delete a schedule and its run history; False if there was none."""

    def due_schedules(self, now: datetime, limit: int) -> list[ScheduleRecord]:
        """Schedules whose next tick is due, oldest first, through an index."""

    def fire_schedule(
        self,
        seen: ScheduleRecord,
        runs: Sequence[ScheduleRun],
        next_run_at: datetime | None,
        last_job_id: str | None,
        jobs: Sequence[NewJob],
        now: datetime,
    ) -> bool:
        """Atomically: advance the schedule if it is still as ``seen`` (compare-and-set
        on its version), record the runs (unique per schedule and nominal tick) and
        create the jobs' rows. False, with nothing written, if another beat did it."""

    def mark_published(self, schedule: str, nominal_at: datetime) -> None: ...

    def unpublished_runs(self, before: datetime, limit: int) -> list[ScheduleRun]:
        """Fired runs recorded before ``before`` whose message may not have been sent."""

    def schedule_runs(self, name: str, limit: int) -> list[ScheduleRun]:
        """A schedule's runs, newest first."""


def latest_schedule_runs(store: ScheduleStorage) -> dict[str, ScheduleRun]:
    """Each schedule's last run, by name (one that never ran is absent): the store's own
    ``latest_schedule_runs()``, one query, where it has that optional method; else
    ``schedule_runs(name, 1)`` for each schedule."""
    own = getattr(store, "latest_schedule_runs", None)
    if own is not None:
        return dict(own())
    found = {s.name: store.schedule_runs(s.name, 1) for s in store.list_schedules()}
    return {name: runs[0] for name, runs in found.items() if runs}


@runtime_checkable
class Storage(Protocol):
    safe_url: str
    """Where the store lives, for messages and logs (a database URL with its password
    masked)."""

    def migrate(self) -> list[int]:
        """Create or upgrade the tables. Idempotent; returns the schema versions applied."""

    def pending_migrations(self) -> list[int]:
        """The schema versions ``migrate()`` would apply (empty when up to date)."""

    def create_job(self, job: NewJob) -> bool:
        """Insert a pending job; False (and no change) if the id already exists."""

    def create_jobs(self, jobs: Sequence[NewJob]) -> None:
        """Insert pending jobs all at once (one transaction, one executemany in SQL):
        all or none. If an id exists already, or twice in ``jobs``, nothing is written
        and ValidationError names the ids. No ``unique_key`` here (one at a time)."""

    def create_unique_job(self, job: NewJob) -> str:
        """Insert a job whose ``unique_key`` no active job holds; if one does, insert
        nothing and return that job's id. Race-free: the database enforces the key."""

    def delete_unstarted_job(self, job_id: str) -> None:
        """Undo ``create_job`` when publishing failed: only a never-claimed job goes."""

    def claim_job(
        self,
        job_id: str,
        owner: str,
        now: datetime,
        lease_until: datetime,
        queue: str | None = None,
    ) -> Claim:
        """Take the lease if the job is active and unleased (or its lease expired), and
        neither its task nor ``queue`` (the one it was delivered from) is paused. A
        paused job is held (HELD, ``Held.PAUSED``): it waits with no deadline until
        ``resume`` releases it."""

    def claim_gated(
        self, job_id: str, owner: str, now: datetime, lease_until: datetime, gate: Gate
    ) -> Claim:
        """``claim_job`` for a task with limits, atomically with their checks: at most
        ``gate.concurrency`` running jobs of the task with its concurrency key (a job
        whose lease expired does not count), older jobs held for a slot first; a token
        of ``gate.rate`` per second. A job that does not pass is held (HELD), without
        the lease: for a slot (``waiters``: the older held jobs a free slot goes to,
        to publish now), or for its rate (``due_at``: its turn)."""

    def next_waiters(self, task: str, key: str, limit: int, now: datetime) -> list[JobRecord]:
        """The oldest jobs held for a slot of ``key`` that fit in the free slots of a
        limit of ``limit`` (publish them: a slot was freed)."""

    def pause(self, kind: str, name: str, now: datetime) -> bool:
        """Pause a queue or a task (``kind`` "queue" or "task"); False if it was."""

    def resume(
        self, kind: str, name: str, now: datetime, deliver_by: datetime
    ) -> list[JobRecord] | None:
        """Lift a pause (recorded as resumed at ``now``); the jobs it held (and no other
        pause holds), oldest first, are released with the deadline ``deliver_by``
        (publish them). None: it was not paused."""

    def resumed_holds(
        self, since: datetime, limit: int | None, deliver_by: datetime
    ) -> list[JobRecord]:
        """Release jobs held by a pause lifted since ``since`` that no pause holds now
        (a hold that raced the resume), oldest first; recovery publishes them."""

    def pauses(self) -> list[Pause]:
        """Every pause, by kind and name."""

    def outbox_sent(self, job_id: str, deliver_by: datetime) -> bool:
        """The message of a job written in the caller's transaction was sent after the
        commit: it is no longer the relay's (``Held.OUTBOX`` cleared, the deadline
        ``deliver_by``). False if the relay or a worker got to it first."""

    def create_debounced_job(self, job: NewJob, keep_first: bool) -> tuple[str, bool]:
        """Insert a job with ``job.debounce_key``, unless an unstarted pending job holds
        that key: then move its ``not_before`` and deadline to ``job``'s (and its
        arguments too, unless ``keep_first``) and return its id. Returns (id, created).
        Race-free: the database enforces one pending job per key."""

    def load_history(self, root_id: str) -> list[CallRecord]:
        """Every call recorded under the root job, in one query."""

    def record_call(self, call: CallRecord, lease: Lease) -> None:
        """Write a checkpoint, fenced on the lease. A first attempt (``attempts == 1``)
        is inserted in one round trip; a later one updates the row its previous attempt
        left in state retrying."""

    def retry_call(
        self,
        call: CallRecord,
        lease: Lease,
        not_before: datetime,
        deliver_by: datetime,
        now: datetime,
    ) -> None:
        """A call failed and will be attempted again: write it in state retrying and
        release the job (state retrying, not before ``not_before``), atomically."""

    def retry_job(
        self,
        lease: Lease,
        error: str,
        discard: Sequence[CallKey],
        not_before: datetime,
        deliver_by: datetime,
        now: datetime,
    ) -> None:
        """The body failed and the job runs again: count the failure, keep its error,
        drop the ``discard`` checkpoints and release the job, atomically."""

    def discard_calls(self, lease: Lease, keys: Sequence[CallKey]) -> None:
        """Delete these checkpoints of the lease's job, fenced on the lease (a history
        that diverged, in determinism mode best_effort)."""

    def renew_lease(self, lease: Lease, until: datetime) -> bool:
        """Extend the lease; False if it was lost."""

    def finish_job(
        self,
        lease: Lease,
        state: JobState,
        result: str | None,
        error: str | None,
        now: datetime,
        wake: Wake | None = None,
    ) -> bool:
        """Record the final outcome and release the lease, fenced on it. A failed or
        dead job's error is also kept among its execution errors.

        ``wake``: this job is a dispatched child; in the same transaction its parent
        stops waiting for it. Returns True if that made the parent runnable (pending)."""

    def suspend_job(
        self,
        lease: Lease,
        calls: Sequence[CallRecord],
        children: Sequence[NewJob],
        waiting_for: Sequence[str],
        wake_at: datetime | None,
        deliver_by: datetime | None,
        now: datetime,
        *,
        cancel_taken: bool = False,
        topic: str | None = None,
    ) -> SuspendOutcome:
        """Write ``calls``, create the ``children`` (their ``parent_id`` is this job) and
        release the job in state suspended until ``wake_at`` and until every job of
        ``waiting_for`` that is not finished has finished, in one transaction.
        ``deliver_by`` is when recovery resumes it regardless, to look again (None:
        never; a message's send wakes it).

        RUNNABLE: nothing was left to wait for; the job is pending, due at once (the
        caller publishes it). CANCEL_REQUESTED: a cancel is pending that the body has
        not taken in; nothing is written. With ``cancel_taken`` (the body caught
        Cancelled and compensates) the request is cleared instead, so the job can resume
        to finish compensating; its history marks where it was cancelled. With ``topic``
        the job waits for a message on it too: RUNNABLE if one is already there."""

    def send_message(
        self,
        job_id: str,
        topic: str,
        payload: str,
        key: str | None,
        now: datetime,
        deliver_by: datetime,
    ) -> SendOutcome:
        """Store a message for an unfinished job; if the job is suspended waiting for
        this topic, make it pending (due by ``deliver_by``) in the same transaction."""

    def take_message(self, lease: Lease, topic: str, call: CallRecord) -> str | None:
        """Take the oldest message on ``topic`` for the lease's job and record ``call``
        with the payload as its result, in one transaction fenced on the lease; None
        (nothing written) if there is none."""

    def settle_calls(self, lease: Lease, calls: Sequence[CallRecord]) -> None:
        """Replace dispatched checkpoints by their outcome (state succeeded or failed),
        fenced on the lease, in one transaction."""

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """The jobs among these ids that exist (one query), in no particular order."""

    def release_job(
        self, lease: Lease, state: JobState, deliver_by: datetime, now: datetime
    ) -> None:
        """Give the lease back without finishing (a retry is on its way)."""

    def expired_jobs(self, now: datetime, limit: int) -> list[JobRecord]:
        """Active jobs whose lease or delivery deadline passed, oldest first."""

    def recover_job(self, seen: JobRecord, deliver_by: datetime, now: datetime) -> bool:
        """Compare-and-set an expired job back to pending; True if this caller won.

        ``recoveries`` grows only when the job had an owner (its worker was lost)."""

    def abandon_job(
        self, seen: JobRecord, error: str, now: datetime, state: JobState = JobState.FAILED
    ) -> bool:
        """Compare-and-set an expired job to failed or dead (it crashed its workers too
        often). A dispatched child's parent stops waiting for it, due at ``now``."""

    def get_job(self, job_id: str) -> JobRecord | None:
        """The job, or None."""

    def release_abandoned(
        self, job_id: str, owner_prefix: str, deliver_by: datetime
    ) -> JobRecord | None:
        """Give back a running job whose lease owner starts with ``owner_prefix`` (an
        execution its own worker is about to stop): pending again, no recovery counted.
        Returns the job as released, or None if it was not held that way."""

    def cancel_job(self, job_id: str, error: str, now: datetime) -> CancelOutcome:
        """Cancel a job that no live execution holds (state cancelled, never claimed
        again); for a held one, only record that cancel was requested. A cancelled
        dispatched child's parent stops waiting for it, due at ``now``."""

    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs have a cancel request (one query)."""

    def count_active(self) -> list[tuple[str | None, str, int]]:
        """(queue, state, how many) of jobs not finished (pending, running, retrying,
        suspended)."""

    def list_jobs(self, where: JobFilter) -> list[JobRecord]:
        """Jobs matching the filter, newest first."""

    def count_jobs(self, where: JobFilter) -> dict[str, int]:
        """How many jobs match the filter, by state (its ``states``, limit and offset are
        ignored); states with none are left out."""

    def finished_per_minute(self, since: datetime) -> list[tuple[datetime, str, int]]:
        """(minute, state, how many) of the jobs that finished since then, oldest first;
        ``minute`` is the UTC minute their ``finished_at`` falls in."""

    def job_errors(self, job_id: str) -> list[JobError]:
        """The errors of the job's failed executions, oldest first."""

    def requeue_job(
        self,
        job_id: str,
        from_states: Sequence[JobState],
        discard: Sequence[CallKey] | None,
        deliver_by: datetime,
        now: datetime,
    ) -> bool:
        """Compare-and-set a finished job back to pending with a fresh retry budget;
        drop the ``discard`` checkpoints (None: all of them). True if it was requeued."""

    def delete_jobs(self, job_ids: Sequence[str], states: Sequence[JobState]) -> int:
        """Delete the jobs that are in one of ``states``, with their calls and errors;
        returns how many jobs went."""

    def delete_finished(self, state: JobState, before: datetime, limit: int) -> int:
        """Delete the oldest (at most ``limit``) jobs in ``state`` (a finished one) that
        finished before ``before``, with their calls, errors and messages; returns how
        many went. Retention calls it until it returns 0, so it must be linear: an index
        finds the batch, and a batch costs a few statements, never one per job."""

    def finished_job_ids(self, state: JobState, before: datetime, limit: int) -> list[str]:
        """Ids of jobs in ``state`` (a finished one) that finished before ``before``,
        oldest first, at most ``limit``."""

    def count_finished(self, state: JobState, before: datetime) -> int:
        """How many jobs in ``state`` finished before ``before``."""

    def mark_reported(self, job_id: str, now: datetime) -> None:
        """Record that Celery continued the finished job's canvas (``reported_at``)."""

    def changes_since(self, after: datetime, limit: int) -> list[dict[str, Any]]:
        """Rows written after ``after`` that the event stream turns into events: up to
        ``limit`` of each kind ("started", "finished", "call", "error"), as dicts of
        their columns plus ``kind`` (and ``position`` for calls)."""

    def record_heartbeat(self, worker: WorkerRecord) -> None:
        """Insert or replace the worker's row (keyed by its name)."""

    def list_workers(self) -> list[WorkerRecord]:
        """Every worker row, by name."""

    def delete_workers(self, seen_before: datetime) -> int:
        """Forget workers not seen since ``seen_before``; returns how many."""
