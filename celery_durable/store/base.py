"""The Storage protocol: the only seam between the engine and a database.

It speaks domain operations (claim a job, record a call, finish a job), never SQL.
Payload fields (``args``, ``result``, ``error`` ...) are JSON text: encoding is the
engine's job, so a store only moves strings. Times are timezone-aware UTC datetimes
passed in by the caller, which keeps every store testable with a fixed clock.

Fencing: every write made on behalf of a running execution carries its ``Lease`` and
takes effect only while that lease is still the job's owner; otherwise it raises
``LeaseLost`` and writes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


class JobState(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUSPENDED = "suspended"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


FINISHED_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED}
)
ACTIVE_STATES = frozenset(
    {JobState.PENDING, JobState.RUNNING, JobState.RETRYING, JobState.SUSPENDED}
)
"""Not finished: a suspended job is waiting (for a delay, or for dispatched calls)."""


class CallState(str, enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    """The last attempt failed and another one is scheduled (the job runs again)."""
    DISPATCHED = "dispatched"
    """Sent as a child job of its own (``result`` names it); settled to succeeded or
    failed when the parent resumes after the child finished."""


CallKey = tuple[str, int]
"""(scope job id, seq): where a call sits in a root job's history."""


def call_id(scope: str, seq: int) -> str:
    """``"<scope>:<seq>"``: a call's id, the same on every run of it (``current_call_id``,
    and which receive took a message)."""
    return f"{scope}:{seq}"


@dataclass(frozen=True)
class NewJob:
    """What enqueueing knows about a job before any worker has seen it."""

    id: str
    task: str
    args: str
    kwargs: str
    queue: str | None
    priority: int | None
    created_at: datetime
    deliver_by: datetime
    """If no execution has claimed the job by then, recovery republishes it."""
    options: str = "{}"
    """Celery message options recovery must send again (canvas links, chain, ids)."""
    not_before: datetime | None = None
    """Enqueued with delay= / at=: the job may not start before this."""
    unique_key: str | None = None
    """While the job is active no other job may hold this key."""
    parent_id: str | None = None
    """A dispatched call's child job: finishing it wakes this suspended parent."""

    def as_record(self) -> JobRecord:
        """The job as its row reads right after enqueue (pending, never claimed)."""
        return JobRecord(
            id=self.id,
            task=self.task,
            args=self.args,
            kwargs=self.kwargs,
            queue=self.queue,
            priority=self.priority,
            state=JobState.PENDING,
            attempts=0,
            recoveries=0,
            lease_owner=None,
            lease_expires_at=self.deliver_by,
            result=None,
            error=None,
            created_at=self.created_at,
            started_at=None,
            finished_at=None,
            options=self.options,
            not_before=self.not_before,
            unique_key=self.unique_key,
            parent_id=self.parent_id,
        )


@dataclass(frozen=True)
class JobRecord:
    id: str
    task: str
    args: str
    kwargs: str
    queue: str | None
    priority: int | None
    state: JobState
    attempts: int
    """How many executions have claimed the job (crashes included)."""
    recoveries: int
    """How many times recovery republished the job after a lost lease."""
    lease_owner: str | None
    lease_expires_at: datetime | None
    result: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    options: str = "{}"
    failures: int = 0
    """Executions that ended in an error since the job was (re)queued; the job-level
    retry budget is spent against it. Crashes are not failures."""
    requeues: int = 0
    """How many times the job was taken back from the dead-letter queue."""
    not_before: datetime | None = None
    """The job may not start before this time (a retry's backoff)."""
    cancel_requested_at: datetime | None = None
    """Cancel was asked while an execution held the job; it stops at its next call."""
    unique_key: str | None = None
    """Held while the job is active; released (NULL) when it finishes."""
    parent_id: str | None = None
    """The suspended job this one was dispatched by (woken when this one finishes)."""
    awaiting: int = 0
    """Suspended: how many dispatched children have not finished yet."""
    waiting_topic: str | None = None
    """Suspended in ``receive()``: the topic a message would wake it for."""
    reported_at: datetime | None = None
    """When the execution that finished the job saw Celery continue its canvas (chain,
    link callbacks, chord) and store its result. Set only for jobs that have a canvas; a
    later delivery of the finished job must not continue it again."""


@dataclass(frozen=True)
class JobError:
    """One failed execution of a job: which claim it was, what it raised, when."""

    job_id: str
    execution: int
    error: str
    failed_at: datetime


@dataclass(frozen=True)
class JobFilter:
    """Which jobs ``list_jobs`` returns; every field that is set must match."""

    states: tuple[JobState, ...] = ()
    task: str | None = None
    queue: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    finished_after: datetime | None = None
    finished_before: datetime | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class CallRecord:
    """One checkpoint: the outcome of the call at ``seq`` in job ``job_id``.

    ``root_id`` is the top-level job's id; a durable task called in-process runs as a
    child scope ``"<parent>.<seq>"`` whose calls share the root, so one query loads a
    whole tree's history.
    """

    job_id: str
    seq: int
    root_id: str
    name: str
    args_digest: str
    state: CallState
    attempts: int
    result: str | None
    error: str | None
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class WorkerRecord:
    """A `celery worker`'s heartbeat, written by its recovery sweeper on each pass."""

    name: str
    """Celery's node name (``celery@host``, or what ``-n`` gave)."""
    hostname: str
    pid: int
    """The worker's main process."""
    queues: str
    """The queues it consumes, as a JSON list."""
    started_at: datetime
    last_seen_at: datetime
    sweeps: int
    """Recovery sweeps done since it started (each pass adds one)."""


@dataclass(frozen=True)
class Wake:
    """A finished child's parent, and the delivery deadline it gets if it wakes."""

    parent_id: str
    deliver_by: datetime


@dataclass(frozen=True)
class Lease:
    job_id: str
    owner: str


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    BUSY = "busy"
    """Another execution holds a live lease."""
    FINISHED = "finished"
    MISSING = "missing"
    EARLY = "early"
    """The job is waiting for a retry's backoff to pass (``not_before`` is later)."""


class SuspendOutcome(enum.Enum):
    SUSPENDED = "suspended"
    RUNNABLE = "runnable"
    """Nothing was left to wait for: the job is pending and due at once."""
    CANCEL_REQUESTED = "cancel_requested"
    """Cancel was asked before the job took it in: nothing was written."""


class SendOutcome(enum.Enum):
    SENT = "sent"
    WOKE = "woke"
    """Sent, and the job, suspended waiting for this topic, is pending now (publish it)."""
    DUPLICATE = "duplicate"
    """A message with this key was sent to the job before: nothing was stored."""
    MISSING = "missing"
    FINISHED = "finished"


class CancelOutcome(enum.Enum):
    CANCELLED = "cancelled"
    """The job was not running: it is cancelled now and will never start."""
    REQUESTED = "requested"
    """An execution holds the job: it stops at its next call boundary."""
    FINISHED = "finished"
    """Too late: the job had already finished."""
    MISSING = "missing"


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    job: JobRecord | None = None
    """The job as found, when the claim did not succeed."""
    attempts: int | None = None
    """After a successful claim, the job's attempt count if the store can tell in the same
    round trip. 1 means no execution ran before, so there is no history to load."""


@runtime_checkable
class Storage(Protocol):
    def migrate(self) -> list[int]:
        """Create or upgrade the tables. Idempotent; returns the schema versions applied."""

    def create_job(self, job: NewJob) -> bool:
        """Insert a pending job; False (and no change) if the id already exists."""

    def create_unique_job(self, job: NewJob) -> str:
        """Insert a job whose ``unique_key`` no active job holds; if one does, insert
        nothing and return that job's id. Race-free: the database enforces the key."""

    def delete_unstarted_job(self, job_id: str) -> None:
        """Undo ``create_job`` when publishing failed: only a never-claimed job goes."""

    def claim_job(self, job_id: str, owner: str, now: datetime, lease_until: datetime) -> Claim:
        """Take the lease if the job is active and unleased (or its lease expired)."""

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
