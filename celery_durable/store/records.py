"""What the stores hold: frozen records of jobs, calls, errors, schedules and workers,
the job states, and the outcomes store operations report.

Payload fields (``args``, ``result``, ``error`` ...) are JSON text: encoding is the
engine's job, so a store only moves strings. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


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


Position = tuple[int, ...]
"""Where a call sits in program order: (3,) for the root's call #3, (3, 1) for the first
call of the child called at #3."""


def position(root_id: str, scope: str, seq: int) -> Position:
    """(3,) for the root's call #3, (3, 1) for call #1 of the child called at #3.

    Sorting positions gives program order: a call starts before the calls it makes."""
    inner = scope[len(root_id) :].lstrip(".")
    return (*(int(part) for part in inner.split(".") if part), seq)


def position_text(root_id: str, scope: str, seq: int) -> str:
    """``"3"``, ``"3.1"``: a position as people read it."""
    return ".".join(map(str, position(root_id, scope, seq)))


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
    debounce_key: str | None = None
    """Enqueueing again with this key, while the job has not started, updates this job
    instead of creating one (``debounce=``)."""
    flow_key: str | None = None
    """A limited task's concurrency key: an older job of the key goes first."""

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
            debounce_key=self.debounce_key,
            flow_key=self.flow_key,
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
    held: str | None = None
    """Why the job waits in SQL without having started: ``Held`` (a pause, its key's
    concurrency limit, its rate limit); None otherwise."""
    flow_key: str | None = None
    """The concurrency key it was claimed or held under (a limited task's)."""
    debounce_key: str | None = None
    """Set until the job starts: a debounced enqueue with this key updates this job."""
    held_on: str | None = None
    """Held by a pause: the queue it was delivered from."""


class Held(str, enum.Enum):
    """Why a job that was delivered waits in SQL instead of starting."""

    PAUSED = "paused"
    """Its queue or task is paused: resume publishes it."""
    CONCURRENCY = "concurrency"
    """Its key had every slot taken: the job that frees one publishes it."""
    RATE = "rate"
    """Its rate limit had no token: it comes back when its turn is due."""
    OUTBOX = "outbox"
    """Written in the caller's transaction; its message is sent after that commits (or
    by the recovery sweeper, soon after its deadline, if the sender died first)."""


@dataclass(frozen=True)
class Gate:
    """The flow rules a delivery of a limited task must pass to claim its job."""

    task: str
    queue: str | None
    """The queue the job was delivered from (a pause of it holds the job)."""
    concurrency: int | None = None
    """At most this many jobs of the task with ``concurrency_key`` run at once."""
    concurrency_key: str = ""
    rate: float | None = None
    """At most this many jobs of the task with ``rate_key`` start per second."""
    rate_key: str = ""
    recheck: timedelta = timedelta(minutes=15)
    """How long a held job waits before recovery publishes it again, should nothing
    else: a job held for a slot is published by the execution that frees one, a job
    held for its rate by the claimer (an ETA message, for waits up to
    ``countdown_limit``)."""
    countdown_limit: float = 60.0
    """Rate waits longer than this get no ETA message: recovery publishes the job when
    its turn is due."""


@dataclass(frozen=True)
class Pause:
    kind: str
    """``"queue"`` or ``"task"``."""
    name: str
    paused_at: datetime


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
    id_prefix: str | None = None
    """Ids that start with this (the dashboard's search box); an index range."""
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
    HELD = "held"
    """A flow rule keeps the job waiting in SQL (``Claim.held`` says which)."""


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
    held: Held | None = None
    """HELD: the rule that holds the job."""
    due_at: datetime | None = None
    """HELD by a rate limit: when the job's turn comes (its message is due then)."""
    waiters: tuple[JobRecord, ...] = ()
    """HELD by a concurrency limit while a slot is free: the older held jobs that get
    it (publish them now)."""
    flow_key: str | None = None
    """CLAIMED under a concurrency limit: the key whose slot the execution holds."""


@dataclass(frozen=True)
class ScheduleRecord:
    name: str
    task: str
    args: str
    kwargs: str
    options: str
    """Enqueue options as JSON: queue, priority, ..."""
    spec: str
    """The schedule's definition as JSON (``Schedule.to_dict()``)."""
    timezone: str
    unique: bool
    """Skip a tick while the previous run is still pending or running."""
    missed: str
    """What a beat that was down does with ticks it missed: once, skip or all."""
    catchup_limit: int
    enabled: bool
    """False once the schedule was removed from code (kept, with its history)."""
    paused: bool
    source: str
    """"code" (synced from ``durable.schedule(...)``) or "api"."""
    next_run_at: datetime | None
    """The next nominal tick; None while paused or disabled (so the due index skips it)."""
    last_run_at: datetime | None
    last_job_id: str | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ScheduleRun:
    """One nominal tick of a schedule: fired (with the job id) or skipped (why)."""

    schedule: str
    nominal_at: datetime
    job_id: str | None
    outcome: str
    reason: str | None
    recorded_at: datetime
    lateness: float
    """Seconds between the nominal tick and when it was recorded."""
    published: bool


def last_run_after(
    runs: Sequence[ScheduleRun],
    last_run_at: datetime | None,
    last_job_id: str | None,
    job_id: str | None,
) -> tuple[datetime | None, str | None]:
    """A schedule's last run (its nominal tick and job) once ``runs`` are recorded: the
    newest tick wins, so an overdue tick recorded after a newer trigger does not move it
    back. ``job_id`` is the job the newest of ``runs`` fired, if any."""
    newest = max((r.nominal_at for r in runs), default=None)
    if newest is None or (last_run_at is not None and newest < last_run_at):
        return last_run_at, last_job_id
    return newest, job_id or last_job_id
