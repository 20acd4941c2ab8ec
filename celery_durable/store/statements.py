"""Every statement SQLStorage sends, built once per store with bind parameters.

Building a Core statement costs more Python time than PostgreSQL spends executing a
checkpoint INSERT; built once, SQLAlchemy's compiled cache serves it and each call only
binds values. Parameters are named ``p_*`` (SET clauses reserve the column names).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BindParameter,
    Delete,
    Insert,
    Select,
    Update,
    bindparam,
    func,
    or_,
    select,
)

from .base import ACTIVE_STATES, JobState
from .schema import Tables, UTCDateTime

_ACTIVE = [s.value for s in ACTIVE_STATES]
CALL_COLUMNS = ("job_id", "seq", "root_id", "name", "args_digest", "state", "attempts",
                "result", "error", "started_at", "finished_at")


@dataclass(frozen=True)
class Statements:
    insert_job: Insert
    delete_unstarted: Delete
    claim: Update
    claim_returning: Update
    get_job: Select  # type: ignore[type-arg]
    renew: Update
    finish: Update
    release: Update
    expired: Select  # type: ignore[type-arg]
    recover: Update
    recover_unowned: Update
    abandon: Update
    abandon_unowned: Update
    history: Select  # type: ignore[type-arg]
    record_call: Insert


def build_statements(tables: Tables) -> Statements:
    jobs, calls = tables.jobs, tables.calls
    now, until = _time("p_now"), _time("p_until")
    deliver_by = _time("p_deliver_by")
    by_id = jobs.c.id == bindparam("p_id")
    fenced = (by_id, jobs.c.lease_owner == bindparam("p_owner"))
    expired = (by_id, jobs.c.state.in_(_ACTIVE), jobs.c.lease_expires_at < now)
    recover_values = {"state": JobState.PENDING.value, "lease_owner": None,
                      "lease_expires_at": deliver_by,
                      "recoveries": jobs.c.recoveries + 1}
    # A job nobody has claimed yet may just be queued behind a backlog: republishing it
    # is not a recovery from a lost worker, so it does not count towards max_recoveries.
    resend_values = {**recover_values, "recoveries": jobs.c.recoveries}
    abandon_values = {"state": JobState.FAILED.value, "lease_owner": None,
                      "lease_expires_at": None, "error": bindparam("p_error"),
                      "finished_at": now}
    owner_is_null = jobs.c.lease_owner.is_(None)
    call_values = select(*[
        bindparam(f"p_{name}", type_=calls.c[name].type).label(name) for name in CALL_COLUMNS
    ]).where(*fenced).with_for_update(read=True)  # a concurrent recovery waits for us
    claim = jobs.update().where(
        by_id, jobs.c.state.in_(_ACTIVE), or_(owner_is_null, jobs.c.lease_expires_at < now),
    ).values(
        state=JobState.RUNNING.value, attempts=jobs.c.attempts + 1,
        lease_owner=bindparam("p_owner"), lease_expires_at=until,
        started_at=func.coalesce(jobs.c.started_at, now),
    )
    return Statements(
        insert_job=jobs.insert(),
        delete_unstarted=jobs.delete().where(
            by_id, jobs.c.state == JobState.PENDING.value, jobs.c.attempts == 0),
        claim=claim,
        claim_returning=claim.returning(jobs.c.attempts),
        get_job=select(jobs).where(by_id),
        renew=jobs.update().where(*fenced).values(lease_expires_at=until),
        finish=jobs.update().where(*fenced).values(
            state=bindparam("p_state"), result=bindparam("p_result"),
            error=bindparam("p_error"), lease_owner=None, lease_expires_at=None,
            finished_at=now),
        release=jobs.update().where(*fenced).values(
            state=bindparam("p_state"), lease_owner=None,
            lease_expires_at=deliver_by),
        expired=select(jobs).where(
            jobs.c.lease_expires_at < now, jobs.c.state.in_(_ACTIVE),
        ).order_by(jobs.c.lease_expires_at).limit(bindparam("p_limit")),
        recover=jobs.update().where(
            *expired, jobs.c.lease_owner == bindparam("p_owner")).values(**recover_values),
        recover_unowned=jobs.update().where(*expired, owner_is_null).values(**resend_values),
        abandon=jobs.update().where(
            *expired, jobs.c.lease_owner == bindparam("p_owner")).values(**abandon_values),
        abandon_unowned=jobs.update().where(*expired, owner_is_null).values(**abandon_values),
        history=select(calls).where(calls.c.root_id == bindparam("p_root_id"))
        .order_by(calls.c.job_id, calls.c.seq),
        # INSERT ... SELECT ... FROM jobs WHERE lease_owner = :me: the fence and the write
        # are one statement. SQLAlchemy drops INSERT rowcounts unless asked to keep them.
        record_call=calls.insert().from_select(list(CALL_COLUMNS), call_values)
        .execution_options(preserve_rowcount=True),
    )


def _time(name: str) -> BindParameter[datetime]:
    return bindparam(name, type_=UTCDateTime())
