"""Tables, declared once in SQLAlchemy Core (the migrations that create them are in
``migrations``).

Dialect differences live here and nowhere else: MySQL needs fractional-second
DATETIME and LONGTEXT, everything else takes the portable types.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects import mysql


class ExactString(TypeDecorator[str]):
    """A VARCHAR compared byte for byte on every dialect.

    PostgreSQL and SQLite compare strings exactly already. MySQL and MariaDB default to
    ``utf8mb4_general_ci``, which ignores case, accents and trailing spaces, so job ids
    ``Order-X`` and ``order-X`` would collide: here the column gets a binary collation
    that does not pad (``utf8mb4_nopad_bin`` on MariaDB, ``utf8mb4_0900_bin`` on MySQL
    8; MySQL 5.7 has only ``utf8mb4_bin``, which still ignores trailing spaces).
    """

    impl = String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(
                mysql.VARCHAR(self.length, charset="utf8mb4", collation=binary_collation(dialect))
            )
        return dialect.type_descriptor(String(self.length))


def binary_collation(dialect: Any) -> str:
    if getattr(dialect, "is_mariadb", False):
        return "utf8mb4_nopad_bin"
    version = getattr(dialect, "server_version_info", None) or (8, 0, 17)
    return "utf8mb4_0900_bin" if tuple(version) >= (8, 0, 17) else "utf8mb4_bin"


ID = ExactString(191)  # 191 * 4 bytes fits MySQL's utf8mb4 index limit
NAME = ExactString(255)
JSON_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database (microseconds kept)."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("celery-durable stores aware datetimes only")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Tables:
    metadata: MetaData
    jobs: Table
    calls: Table
    job_errors: Table
    schedules: Table
    schedule_runs: Table
    schema_version: Table
    messages: Table
    workers: Table
    pauses: Table
    flow_gates: Table


def build_tables(prefix: str) -> Tables:
    metadata = MetaData()
    jobs = Table(
        f"{prefix}jobs",
        metadata,
        Column("id", ID, primary_key=True),
        Column("task", NAME, nullable=False),
        Column("args", JSON_TEXT, nullable=False),
        Column("kwargs", JSON_TEXT, nullable=False),
        Column("queue", NAME),
        Column("priority", Integer),
        Column("options", JSON_TEXT, nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("recoveries", Integer, nullable=False, default=0),
        Column("lease_owner", ExactString(128)),
        Column("lease_expires_at", UTCDateTime()),
        Column("result", JSON_TEXT),
        Column("error", JSON_TEXT),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("started_at", UTCDateTime()),
        Column("finished_at", UTCDateTime()),
        *retry_layer_columns(),
        *cancellation_columns(),
        *scheduling_columns(),
        *suspension_columns(),
        *reporting_columns(),
        *flow_columns(),
    )
    # Recovery scans only active rows past their deadline; finished rows hold NULL here.
    Index(f"{prefix}jobs_lease_expires_at", jobs.c.lease_expires_at)
    # unique=: NULLs never collide, and a finished job's key is set back to NULL.
    Index(f"{prefix}jobs_unique_key", jobs.c.unique_key, unique=True)
    # The event stream reads rows written after a point in time.
    Index(f"{prefix}jobs_started_at", jobs.c.started_at)
    Index(f"{prefix}jobs_finished_at", jobs.c.finished_at)
    # Dead-letter listings and retention read finished jobs of one state by age.
    Index(f"{prefix}jobs_state_finished_at", jobs.c.state, jobs.c.finished_at)
    # A limited task's claim counts the running jobs of its key, and finds the oldest
    # held ones; resume and the sweeper find the jobs a pause holds.
    Index(f"{prefix}jobs_flow", jobs.c.task, jobs.c.flow_key, jobs.c.state)
    Index(f"{prefix}jobs_held", jobs.c.held)
    # One pending job per task and debounce key; the claim sets the key back to NULL.
    Index(f"{prefix}jobs_debounce_key", jobs.c.task, jobs.c.debounce_key, unique=True)
    # Keyed by root first: one index range serves a whole tree's history, and a child
    # scope "<job>.<seq>" can never collide with a real job whose id has that shape.
    calls = Table(
        f"{prefix}calls",
        metadata,
        Column("root_id", ID, primary_key=True),
        Column("job_id", ID, primary_key=True),
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("name", NAME, nullable=False),
        Column("args_digest", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("result", JSON_TEXT),
        Column("error", JSON_TEXT),
        Column("started_at", UTCDateTime(), nullable=False),
        Column("finished_at", UTCDateTime(), nullable=False),
    )
    Index(f"{prefix}calls_finished_at", calls.c.finished_at)  # the event stream
    # One row per failed execution (claim number ``execution``), so a dead letter shows
    # every attempt's error, and a requeued job keeps the errors of its earlier life.
    job_errors = Table(
        f"{prefix}job_errors",
        metadata,
        Column("job_id", ID, primary_key=True),
        Column("execution", Integer, primary_key=True, autoincrement=False),
        Column("error", JSON_TEXT, nullable=False),
        Column("failed_at", UTCDateTime(), nullable=False),
    )
    Index(f"{prefix}job_errors_failed_at", job_errors.c.failed_at)  # the event stream
    schedules = Table(
        f"{prefix}schedules",
        metadata,
        Column("name", ID, primary_key=True),
        Column("task", NAME, nullable=False),
        Column("args", JSON_TEXT, nullable=False),
        Column("kwargs", JSON_TEXT, nullable=False),
        Column("options", JSON_TEXT, nullable=False),
        Column("spec", JSON_TEXT, nullable=False),
        Column("timezone", String(64), nullable=False),
        Column("is_unique", Boolean, nullable=False),
        Column("missed", String(8), nullable=False),
        Column("catchup_limit", Integer, nullable=False),
        Column("enabled", Boolean, nullable=False),
        Column("paused", Boolean, nullable=False),
        Column("source", String(8), nullable=False),
        Column("next_run_at", UTCDateTime()),
        Column("last_run_at", UTCDateTime()),
        Column("last_job_id", ID),
        Column("version", Integer, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
    )
    # A tick reads only due rows; paused and disabled schedules hold NULL here.
    Index(f"{prefix}schedules_next_run_at", schedules.c.next_run_at)
    # The unique (schedule, nominal tick) row is what makes a tick fire exactly once.
    schedule_runs = Table(
        f"{prefix}schedule_runs",
        metadata,
        Column("schedule", ID, primary_key=True),
        Column("nominal_at", UTCDateTime(), primary_key=True),
        Column("job_id", ID),
        Column("outcome", String(8), nullable=False),
        Column("reason", String(255)),
        Column("recorded_at", UTCDateTime(), nullable=False),
        Column("lateness", Float, nullable=False),
        Column("published", Boolean, nullable=False),
    )
    Index(
        f"{prefix}schedule_runs_unpublished", schedule_runs.c.published, schedule_runs.c.recorded_at
    )
    # Messages sent to a job (durable.send) until its body takes them (receive()).
    messages = Table(
        f"{prefix}messages",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("job_id", ID, nullable=False),
        Column("topic", NAME, nullable=False),
        Column("payload", JSON_TEXT, nullable=False),
        Column("key", ID),
        Column("sent_at", UTCDateTime(), nullable=False),
        Column("taken_at", UTCDateTime()),
        Column("taken_by", ID),  # "<scope>:<seq>" of the receive that took it
    )
    Index(f"{prefix}messages_job_topic", messages.c.job_id, messages.c.topic, messages.c.id)
    # A sender's idempotency key: the same message sent twice is stored once.
    Index(f"{prefix}messages_key", messages.c.job_id, messages.c.key, unique=True)
    # One row per `celery worker` (its node name), written by its recovery sweeper each
    # pass: which workers are alive, and a heartbeat operators and tests can wait on.
    workers = Table(
        f"{prefix}workers",
        metadata,
        Column("name", ID, primary_key=True),
        Column("hostname", NAME, nullable=False),
        Column("pid", Integer, nullable=False),
        Column("queues", JSON_TEXT, nullable=False),
        Column("started_at", UTCDateTime(), nullable=False),
        Column("last_seen_at", UTCDateTime(), nullable=False),
        Column("sweeps", Integer, nullable=False),
    )
    Index(f"{prefix}workers_last_seen_at", workers.c.last_seen_at)
    # A paused queue or task: its jobs are not started until it is resumed.
    pauses = Table(
        f"{prefix}pauses",
        metadata,
        Column("kind", String(8), primary_key=True),  # "queue" or "task"
        Column("name", NAME, primary_key=True),
        Column("paused_at", UTCDateTime(), nullable=False),
        # set by resume (the row stays a while: recovery releases holds that raced it)
        Column("resumed_at", UTCDateTime()),
    )
    # One row per limited task and key: the row a claim locks (so two claims of one key
    # take turns), and the token bucket of a rate limit.
    flow_gates = Table(
        f"{prefix}flow_gates",
        metadata,
        Column("task", NAME, primary_key=True),
        Column("key", ID, primary_key=True),
        Column("tokens", Float, nullable=False),
        Column("refilled_at", UTCDateTime(), nullable=False),
        Column("next_at", UTCDateTime(), nullable=False),  # a rate's next free turn
    )
    schema_version = Table(
        f"{prefix}schema_version",
        metadata,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("applied_at", UTCDateTime(), nullable=False),
    )
    return Tables(
        metadata,
        jobs,
        calls,
        job_errors,
        schedules,
        schedule_runs,
        schema_version,
        messages,
        workers,
        pauses,
        flow_gates,
    )


def retry_layer_columns() -> list[Column[Any]]:
    """Job columns added by migration 2 (the retry layer)."""
    return [
        Column("failures", Integer, nullable=False, default=0, server_default="0"),
        Column("requeues", Integer, nullable=False, default=0, server_default="0"),
        Column("not_before", UTCDateTime()),
    ]


def scheduling_columns() -> list[Column[Any]]:
    """Job columns added by migration 4 (scheduling)."""
    return [Column("unique_key", ID)]


def cancellation_columns() -> list[Column[Any]]:
    """Job columns added by migration 3 (cancellation)."""
    return [Column("cancel_requested_at", UTCDateTime())]


def suspension_columns() -> list[Column[Any]]:
    """Job columns added by migration 6 (calls that suspend)."""
    return [
        Column("parent_id", ID),
        Column("awaiting", Integer, nullable=False, default=0, server_default="0"),
        Column("waiting_topic", NAME),
    ]


def reporting_columns() -> list[Column[Any]]:
    """Job columns added by migration 7."""
    return [Column("reported_at", UTCDateTime())]


def flow_columns() -> list[Column[Any]]:
    """Job columns added by migration 8 (flow control)."""
    return [
        Column("held", String(16)),  # why an unstarted job waits: paused, concurrency, rate
        Column("flow_key", ID),  # the concurrency key it was claimed or held under
        Column("debounce_key", ID),
        Column("held_on", NAME),  # the queue a pause held it on (its delivery's)
    ]
