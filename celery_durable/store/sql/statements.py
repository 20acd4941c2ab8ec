"""The statements of jobs, calls and messages, built once per store with bind parameters.

Building a Core statement costs more Python time than PostgreSQL spends executing a
checkpoint INSERT; built once, SQLAlchemy's compiled cache serves it and each call only
binds values. Parameters are named ``p_*`` (SET clauses reserve the column names).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Delete,
    Insert,
    Integer,
    Select,
    Update,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
)

from ..records import (
    ACTIVE_STATES,
    FINISHED_STATES,
    CallState,
    Held,
    JobFilter,
    JobState,
    NewJob,
)
from .dialects import byte_order, minute_of
from .schema import Tables, UTCDateTime


def _inline(states: frozenset[JobState]) -> list[ColumnElement[str]]:
    """The states as literals in the SQL text: no bind parameters to expand, so a
    statement compiles once to a fixed text the hot path can prepare."""
    return [literal_column(f"'{state.value}'") for state in sorted(states)]


_ACTIVE = _inline(ACTIVE_STATES)
_UNSTARTED = frozenset({JobState.PENDING, JobState.RETRYING, JobState.SUSPENDED})


def pause_of(tables: Tables, task: Any, queue: Any) -> ColumnElement[bool]:
    """A pause row of the task ``task`` or the queue ``queue`` (the one a job is
    delivered from); both are column or bind expressions."""
    pauses = tables.pauses
    return and_(
        pauses.c.resumed_at.is_(None),
        or_(
            and_(pauses.c.kind == literal_column("'task'"), pauses.c.name == task),
            and_(pauses.c.kind == literal_column("'queue'"), pauses.c.name == queue),
        ),
    )


def paused_clause(tables: Tables, queue: Any) -> ColumnElement[bool]:
    """A pause holds the job (its task's, or its queue's)."""
    return exists().where(pause_of(tables, tables.jobs.c.task, queue))


CALL_COLUMNS = (
    "job_id",
    "seq",
    "root_id",
    "name",
    "args_digest",
    "state",
    "attempts",
    "result",
    "error",
    "started_at",
    "finished_at",
)


HOT = (
    "insert_job",
    "claim",
    "claim_returning",
    "get_job",
    "renew",
    "finish",
    "history",
    "record_call",
)
"""The statements every job sends: the store sends them on the hot path (``hot``)."""


@dataclass(frozen=True)
class JobStatements:
    insert_job: Insert
    unique_holder: Select[Any]
    delete_unstarted: Delete
    claim: Update
    claim_returning: Update
    hold_paused: Update
    get_job: Select[Any]
    renew: Update
    finish: Update
    release: Update
    expired: Select[Any]
    recover: Update
    recover_unowned: Update
    abandon: Update
    abandon_unowned: Update
    history: Select[Any]
    record_call: Insert
    insert_call: Insert
    update_call: Update
    lock_job: Update
    retry_release: Update
    finish_failed: Update
    insert_job_error: Insert
    job_errors: Select[Any]
    discard_call: Delete
    discard_all_calls: Delete
    requeue: Update
    cancel_unheld: Update
    release_abandoned: Update
    cancel_request: Update
    cancel_requested: Select[Any]
    suspend: Update
    suspend_cancel_taken: Update
    count_unfinished: Select[Any]
    suspend_state: Update
    wake_decrement: Update
    wake: Update
    settle_call: Update
    get_jobs: Select[Any]
    touch_job: Update
    insert_message: Insert
    wake_for_message: Update
    next_message: Select[Any]
    take_message: Update
    count_messages: Select[Any]
    untake_message: Update
    untake_all_messages: Update
    mark_reported: Update
    count_active: Select[Any]
    finished_ids: Select[Any]
    delete_finished_batch: Select[Any]
    count_finished: Select[Any]
    delete_finished: Delete
    remaining_ids: Select[Any]
    delete_calls_of: Delete
    delete_errors_of: Delete
    delete_messages_of: Delete


def job_statements(tables: Tables) -> JobStatements:
    jobs, calls = tables.jobs, tables.calls
    now, until = _time("p_now"), _time("p_until")
    deliver_by = _time("p_deliver_by")
    by_id = jobs.c.id == bindparam("p_id")
    fenced = (by_id, jobs.c.lease_owner == bindparam("p_owner"))
    expired = (by_id, jobs.c.state.in_(_ACTIVE), jobs.c.lease_expires_at < now)
    recover_values = {
        "state": JobState.PENDING.value,
        "lease_owner": None,
        "lease_expires_at": deliver_by,
        "recoveries": jobs.c.recoveries + 1,
        # republished: an outbox row is sent now; a rate-held job keeps its turn
        "held": case((jobs.c.held == Held.OUTBOX.value, None), else_=jobs.c.held),
    }
    # A job nobody has claimed yet may just be queued behind a backlog: republishing it
    # is not a recovery from a lost worker, so it does not count towards max_recoveries.
    resend_values = {**recover_values, "recoveries": jobs.c.recoveries}
    abandon_values = {
        "state": bindparam("p_state"),
        "lease_owner": None,
        "unique_key": None,
        "debounce_key": None,
        "lease_expires_at": None,
        "error": bindparam("p_error"),
        "finished_at": now,
    }
    owner_is_null = jobs.c.lease_owner.is_(None)
    paused = paused_clause(tables, bindparam("p_queue"))
    call_values = (
        select(
            *[bindparam(f"p_{name}", type_=calls.c[name].type).label(name) for name in CALL_COLUMNS]
        )
        .where(*fenced)
        .with_for_update(read=True)
    )  # a concurrent recovery waits for us
    claim = (
        jobs.update()
        .where(
            by_id,
            jobs.c.state.in_(_ACTIVE),
            or_(owner_is_null, jobs.c.lease_expires_at < now),
            or_(jobs.c.state != JobState.SUSPENDED.value, jobs.c.awaiting <= 0),
            or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now),
            jobs.c.cancel_requested_at.is_(None),
            ~paused,
        )
        .values(
            state=JobState.RUNNING.value,
            attempts=jobs.c.attempts + 1,
            lease_owner=bindparam("p_owner"),
            lease_expires_at=until,
            started_at=func.coalesce(jobs.c.started_at, now),
            held=None,
            debounce_key=None,
        )
    )
    # A delivery found its queue or task paused: the job waits in SQL (no deadline:
    # resume publishes it) without a redelivery loop.
    hold_paused = (
        jobs.update()
        .where(
            by_id,
            jobs.c.state.in_(_inline(_UNSTARTED)),
            owner_is_null,
            or_(jobs.c.state != JobState.SUSPENDED.value, jobs.c.awaiting <= 0),
            paused,
        )
        .values(held=Held.PAUSED.value, lease_expires_at=None, held_on=bindparam("p_queue"))
    )
    by_call = (
        calls.c.root_id == bindparam("p_root_id"),
        calls.c.job_id == bindparam("p_job_id"),
        calls.c.seq == bindparam("p_seq"),
    )
    finish_values = {
        "state": bindparam("p_state"),
        "result": bindparam("p_result"),
        "unique_key": None,
        "debounce_key": None,
        "error": bindparam("p_error"),
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": now,
    }
    errors, messages = tables.job_errors, tables.messages
    states: BindParameter[list[str]] = bindparam("p_states", expanding=True)
    ids: BindParameter[list[str]] = bindparam("p_ids", expanding=True)
    among_ids = jobs.c.id.in_(ids)
    finished_before = (jobs.c.state == bindparam("p_state"), jobs.c.finished_at < _time("p_before"))
    untaken = (
        messages.c.job_id == bindparam("p_id"),
        messages.c.topic == bindparam("p_topic"),
        messages.c.taken_at.is_(None),
    )
    return JobStatements(
        insert_job=jobs.insert().values({c: bindparam(c) for c in NEW_JOB_COLUMNS}),
        unique_holder=select(jobs.c.id).where(jobs.c.unique_key == bindparam("p_key")),
        delete_unstarted=jobs.delete().where(
            by_id, jobs.c.state == JobState.PENDING.value, jobs.c.attempts == 0
        ),
        claim=claim,
        claim_returning=claim.returning(jobs.c.attempts),
        hold_paused=hold_paused,
        get_job=select(jobs).where(by_id),
        renew=jobs.update().where(*fenced).values(lease_expires_at=until),
        finish=jobs.update().where(*fenced).values(**finish_values),
        finish_failed=jobs.update()
        .where(*fenced)
        .values(**finish_values, failures=jobs.c.failures + 1),
        release=jobs.update()
        .where(*fenced)
        .values(state=bindparam("p_state"), lease_owner=None, lease_expires_at=deliver_by),
        expired=select(jobs)
        .where(
            jobs.c.lease_expires_at < now,
            jobs.c.state.in_(_ACTIVE),
        )
        .order_by(jobs.c.lease_expires_at)
        .limit(bindparam("p_limit")),
        recover=jobs.update()
        .where(*expired, jobs.c.lease_owner == bindparam("p_owner"))
        .values(**recover_values),
        recover_unowned=jobs.update().where(*expired, owner_is_null).values(**resend_values),
        abandon=jobs.update()
        .where(*expired, jobs.c.lease_owner == bindparam("p_owner"))
        .values(**abandon_values),
        abandon_unowned=jobs.update().where(*expired, owner_is_null).values(**abandon_values),
        # the columns in CallRecord's field order: its rows become records positionally
        history=select(*[calls.c[name] for name in CALL_COLUMNS])
        .where(calls.c.root_id == bindparam("p_root_id"))
        .order_by(calls.c.job_id, calls.c.seq),
        # INSERT ... SELECT ... FROM jobs WHERE lease_owner = :me: the fence and the write
        # are one statement. SQLAlchemy drops INSERT rowcounts unless asked to keep them.
        record_call=calls.insert()
        .from_select(list(CALL_COLUMNS), call_values)
        .execution_options(preserve_rowcount=True),
        # The rarer writes below run inside a transaction that first locks the job row
        # with a fenced UPDATE, so they need no fence of their own.
        insert_call=calls.insert(),
        update_call=calls.update()
        .where(
            *by_call,
            calls.c.state == CallState.RETRYING.value,
            calls.c.attempts == bindparam("p_previous_attempts"),
        )
        .values(
            **{
                name: bindparam(f"p_{name}", type_=calls.c[name].type)
                for name in CALL_COLUMNS
                if name not in ("root_id", "job_id", "seq")
            }
        ),
        lock_job=jobs.update().where(*fenced).values(lease_owner=bindparam("p_owner")),
        retry_release=jobs.update()
        .where(*fenced)
        .values(
            state=JobState.RETRYING.value,
            lease_owner=None,
            lease_expires_at=deliver_by,
            not_before=_time("p_not_before"),
            failures=jobs.c.failures + bindparam("p_failed", type_=Integer()),
            error=func.coalesce(bindparam("p_error", type_=jobs.c.error.type), jobs.c.error),
        ),
        insert_job_error=errors.insert().from_select(
            ["job_id", "execution", "error", "failed_at"],
            select(
                jobs.c.id,
                jobs.c.attempts,
                bindparam("p_error", type_=errors.c.error.type),
                now.label("failed_at"),
            ).where(by_id),
        ),
        job_errors=select(errors)
        .where(errors.c.job_id == bindparam("p_id"))
        .order_by(errors.c.execution),
        discard_call=calls.delete().where(*by_call),
        discard_all_calls=calls.delete().where(calls.c.root_id == bindparam("p_root_id")),
        requeue=jobs.update()
        .where(
            by_id,
            jobs.c.state.in_(bindparam("p_states", expanding=True)),
        )
        .values(
            state=JobState.PENDING.value,
            failures=0,
            recoveries=0,
            requeues=jobs.c.requeues + 1,
            result=None,
            error=None,
            finished_at=None,
            not_before=None,
            cancel_requested_at=None,
            lease_owner=None,
            lease_expires_at=deliver_by,
            reported_at=None,
        ),
        release_abandoned=jobs.update()
        .where(
            by_id,
            jobs.c.state == JobState.RUNNING.value,
            jobs.c.lease_owner.like(bindparam("p_pattern"), escape="!"),
        )
        .values(state=JobState.PENDING.value, lease_owner=None, lease_expires_at=deliver_by),
        cancel_unheld=jobs.update()
        .where(
            by_id,
            jobs.c.state.in_(_ACTIVE),
            or_(owner_is_null, jobs.c.lease_expires_at < now),
        )
        .values(
            state=JobState.CANCELLED.value,
            error=bindparam("p_error"),
            finished_at=now,
            lease_owner=None,
            lease_expires_at=None,
            unique_key=None,
            debounce_key=None,
            cancel_requested_at=now,
        ),
        cancel_request=jobs.update()
        .where(
            by_id,
            jobs.c.state.in_(_ACTIVE),
            jobs.c.lease_owner.is_not(None),
            jobs.c.lease_expires_at >= now,
        )
        .values(cancel_requested_at=func.coalesce(jobs.c.cancel_requested_at, now)),
        cancel_requested=select(jobs.c.id).where(
            jobs.c.id.in_(bindparam("p_ids", expanding=True)),
            jobs.c.cancel_requested_at.is_not(None),
        ),
        suspend=jobs.update()
        .where(*fenced, jobs.c.cancel_requested_at.is_(None))
        .values(lease_owner=None),
        suspend_cancel_taken=jobs.update()
        .where(*fenced)
        .values(lease_owner=None, cancel_requested_at=None),
        count_unfinished=select(func.count())
        .select_from(jobs)
        .where(jobs.c.id.in_(bindparam("p_ids", expanding=True)), jobs.c.state.in_(_ACTIVE)),
        # Runs after `suspend` locked the row: no owner fence needed.
        suspend_state=jobs.update()
        .where(by_id)
        .values(
            awaiting=bindparam("p_awaiting", type_=Integer()),
            state=bindparam("p_state"),
            waiting_topic=bindparam("p_topic"),
            not_before=_time("p_wake_at"),
            lease_expires_at=deliver_by,
        ),
        # Two statements, not one with CASE: MySQL evaluates SET clauses left to right
        # on the updated values, PostgreSQL on the old ones. The decrement locks the
        # parent row whatever its state, so a parent that is suspending at this moment
        # counts its children only after this child's finish is committed.
        wake_decrement=jobs.update().where(by_id).values(awaiting=jobs.c.awaiting - 1),
        wake=jobs.update()
        .where(
            by_id,
            jobs.c.state == JobState.SUSPENDED.value,
            jobs.c.awaiting <= 0,
            jobs.c.waiting_topic.is_(None),  # a stray child never wakes a receive()
        )
        .values(state=JobState.PENDING.value, lease_expires_at=deliver_by),
        settle_call=calls.update()
        .where(
            *by_call,
            calls.c.state == CallState.DISPATCHED.value,
        )
        .values(
            **{
                name: bindparam(f"p_{name}", type_=calls.c[name].type)
                for name in ("state", "attempts", "result", "error", "finished_at")
            }
        ),
        get_jobs=select(jobs).where(jobs.c.id.in_(bindparam("p_ids", expanding=True))),
        # Locks an unfinished job's row (a send serialises with the job suspending).
        touch_job=jobs.update()
        .where(by_id, jobs.c.state.in_(_ACTIVE))
        .values(awaiting=jobs.c.awaiting),
        insert_message=messages.insert(),
        wake_for_message=jobs.update()
        .where(
            by_id,
            jobs.c.state == JobState.SUSPENDED.value,
            jobs.c.awaiting <= 0,
            jobs.c.waiting_topic == bindparam("p_topic"),
        )
        .values(
            state=JobState.PENDING.value, lease_expires_at=deliver_by, not_before=None
        ),  # the receive timeout no longer holds it back
        next_message=select(messages.c.id, messages.c.payload)
        .where(*untaken)
        .order_by(messages.c.id)
        .limit(1),
        take_message=messages.update()
        .where(messages.c.id == bindparam("p_message"))
        .values(taken_at=now, taken_by=bindparam("p_by")),
        # A receive's checkpoint dropped (a job retry, a requeue): its message is back.
        untake_message=messages.update()
        .where(
            messages.c.job_id == bindparam("p_root_id"), messages.c.taken_by == bindparam("p_by")
        )
        .values(taken_at=None, taken_by=None),
        untake_all_messages=messages.update()
        .where(messages.c.job_id == bindparam("p_root_id"))
        .values(taken_at=None, taken_by=None),
        count_messages=select(func.count()).select_from(messages).where(*untaken),
        mark_reported=jobs.update()
        .where(
            by_id,
            jobs.c.state.in_(_inline(FINISHED_STATES)),
        )
        .values(reported_at=func.coalesce(jobs.c.reported_at, now)),
        count_active=select(jobs.c.queue, jobs.c.state, func.count())
        .where(jobs.c.state.in_(_ACTIVE))
        .group_by(jobs.c.queue, jobs.c.state),
        # Retention reads one state's oldest finished jobs through (state, finished_at).
        finished_ids=select(jobs.c.id)
        .where(*finished_before)
        .order_by(jobs.c.finished_at)
        .limit(bindparam("p_limit")),
        count_finished=select(func.count()).select_from(jobs).where(*finished_before),
        delete_finished_batch=_delete_finished_batch(tables, finished_before),
        # A batch at a time. The state check is in the DELETE itself (a write: the
        # transaction holds the rows from here), so a job requeued meanwhile stays; the
        # ids still there afterwards tell whose calls, errors and messages go.
        delete_finished=jobs.delete().where(among_ids, jobs.c.state.in_(states)),
        remaining_ids=select(jobs.c.id).where(among_ids),
        delete_calls_of=calls.delete().where(calls.c.root_id.in_(ids)),
        delete_errors_of=errors.delete().where(errors.c.job_id.in_(ids)),
        delete_messages_of=messages.delete().where(messages.c.job_id.in_(ids)),
    )


def _delete_finished_batch(tables: Tables, finished_before: tuple[Any, ...]) -> Select[Any]:
    """PostgreSQL: one statement deletes a batch of the oldest finished jobs with their
    calls, errors and messages (data-modifying CTEs); returns how many jobs went. The
    DELETE repeats the state check, so a job requeued while it runs is re-checked
    (read committed re-evaluates a concurrently updated row) and stays."""
    jobs = tables.jobs
    batch = (
        select(jobs.c.id)
        .where(*finished_before)
        .order_by(jobs.c.finished_at)
        .limit(bindparam("p_limit"))
        .scalar_subquery()
    )
    gone = (
        jobs.delete()
        .where(jobs.c.id.in_(batch), finished_before[0])
        .returning(jobs.c.id)
        .cte("gone")
    )
    statement = select(func.count()).select_from(gone)
    for table, column in (
        (tables.calls, tables.calls.c.root_id),
        (tables.job_errors, tables.job_errors.c.job_id),
        (tables.messages, tables.messages.c.job_id),
    ):
        statement = statement.add_cte(
            table.delete().where(column.in_(select(gone.c.id))).cte(f"gone_{table.name}")
        )
    return statement


def list_jobs_query(tables: Tables, where: JobFilter) -> Select[Any]:
    """The one statement built per call: its WHERE clause is the filter's."""
    jobs = tables.jobs
    query = _filtered(select(jobs), tables, where)
    if where.states:
        query = query.where(jobs.c.state.in_([s.value for s in where.states]))
    return (
        query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
        .limit(where.limit)
        .offset(where.offset)
    )


def count_jobs_query(tables: Tables, where: JobFilter) -> Select[Any]:
    """Jobs matching the filter (but its states) by state."""
    jobs = tables.jobs
    counted = select(jobs.c.state, func.count()).group_by(jobs.c.state)
    return _filtered(counted, tables, where)


def finished_per_minute_query(tables: Tables) -> Select[Any]:
    """Jobs finished since ``p_since`` by UTC minute ("YYYY-MM-DD HH:MM") and state,
    through the finished_at index."""
    jobs = tables.jobs
    minute = minute_of(jobs.c.finished_at).label("minute")
    return (
        select(minute, jobs.c.state, func.count())
        .where(jobs.c.finished_at >= _time("p_since"))
        .group_by(minute, jobs.c.state)
        .order_by(minute)
    )


def _starts_with(column: Any, prefix: str) -> list[ColumnElement[bool]]:
    """A range over the code points, not LIKE (case-insensitive on SQLite, wildcards to
    escape): compared byte for byte, which MySQL's binary collation and SQLite do
    already and PostgreSQL does under COLLATE "C" whatever the database's collation."""
    exact = byte_order(column)
    following = ord(prefix[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # no string holds a lone surrogate
        following = 0xE000
    if following > 0x10FFFF:
        return [exact >= prefix, column.startswith(prefix, autoescape=True)]
    return [exact >= prefix, exact < prefix[:-1] + chr(following)]


def _filtered(query: Select[Any], tables: Tables, where: JobFilter) -> Select[Any]:
    jobs = tables.jobs
    if where.id_prefix:
        query = query.where(*_starts_with(jobs.c.id, where.id_prefix))
    for column, value in (("task", where.task), ("queue", where.queue)):
        if value is not None:
            query = query.where(jobs.c[column] == value)
    for column, after, before in (
        ("created_at", where.created_after, where.created_before),
        ("finished_at", where.finished_after, where.finished_before),
    ):
        if after is not None:
            query = query.where(jobs.c[column] >= after)
        if before is not None:
            query = query.where(jobs.c[column] < before)
    return query


def _time(name: str) -> BindParameter[datetime]:
    return bindparam(name, type_=UTCDateTime())


def new_job_row(job: NewJob) -> dict[str, Any]:
    """The jobs row of a job just enqueued (``insert_job``'s parameters)."""
    return {
        "id": job.id,
        "task": job.task,
        "args": job.args,
        "kwargs": job.kwargs,
        "queue": job.queue,
        "priority": job.priority,
        "options": job.options,
        "state": JobState.PENDING.value,
        "attempts": 0,
        "recoveries": 0,
        "lease_expires_at": job.deliver_by,
        "created_at": job.created_at,
        "not_before": job.not_before,
        "unique_key": job.unique_key,
        "parent_id": job.parent_id,
        "flow_key": job.flow_key,
        # every column a fresh job sets, so the INSERT's text is one fixed statement
        "failures": 0,
        "requeues": 0,
        "awaiting": 0,
    }


NEW_JOB_COLUMNS = (
    "id",
    "task",
    "args",
    "kwargs",
    "queue",
    "priority",
    "options",
    "state",
    "attempts",
    "recoveries",
    "lease_expires_at",
    "created_at",
    "not_before",
    "unique_key",
    "parent_id",
    "flow_key",
    "failures",
    "requeues",
    "awaiting",
)
"""The columns ``new_job_row`` sets (the hot path's INSERT names exactly these)."""
