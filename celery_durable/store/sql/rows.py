"""Rows to records, and the bind parameters of fenced writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..records import CallRecord, CallState, JobRecord, JobState, Lease
from .statements import CALL_COLUMNS


def fence(lease: Lease, **params: Any) -> dict[str, Any]:
    return {"p_id": lease.job_id, "p_owner": lease.owner, **params}


def call_params(call: CallRecord, lease: Lease) -> dict[str, Any]:
    params = {key: getattr(call, name) for key, name in _CALL_KEYS}
    params["p_id"], params["p_owner"] = lease.job_id, lease.owner
    params["p_state"] = call.state.value
    return params


_CALL_KEYS = tuple((f"p_{name}", name) for name in CALL_COLUMNS)


# Enum(value) costs microseconds; a history of 10,000 calls reads 10,000 states.
_JOB_STATES = {state.value: state for state in JobState}
_CALL_STATES = {state.value: state for state in CallState}


def _mapping(row: Any) -> Mapping[str, Any]:
    """A SQLAlchemy Row's mapping, or the hot path's dict as it is."""
    return row if isinstance(row, dict) else row._mapping


def job_record(row: Any) -> JobRecord:
    m = _mapping(row)
    return JobRecord(
        id=m["id"],
        task=m["task"],
        args=m["args"],
        kwargs=m["kwargs"],
        queue=m["queue"],
        priority=m["priority"],
        state=_JOB_STATES[m["state"]],
        attempts=m["attempts"],
        recoveries=m["recoveries"],
        lease_owner=m["lease_owner"],
        lease_expires_at=m["lease_expires_at"],
        result=m["result"],
        error=m["error"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        options=m["options"],
        failures=m["failures"],
        requeues=m["requeues"],
        not_before=m["not_before"],
        cancel_requested_at=m["cancel_requested_at"],
        unique_key=m["unique_key"],
        parent_id=m["parent_id"],
        awaiting=m["awaiting"],
        waiting_topic=m["waiting_topic"],
        reported_at=m["reported_at"],
        held=m["held"],
        flow_key=m["flow_key"],
        debounce_key=m["debounce_key"],
        held_on=m["held_on"],
    )


def call_record(row: Any) -> CallRecord:
    m = _mapping(row)
    return CallRecord(
        job_id=m["job_id"],
        seq=m["seq"],
        root_id=m["root_id"],
        name=m["name"],
        args_digest=m["args_digest"],
        state=_CALL_STATES[m["state"]],
        attempts=m["attempts"],
        result=m["result"],
        error=m["error"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
    )


def call_record_of(row: tuple[Any, ...]) -> CallRecord:
    """A record from a row of ``CALL_COLUMNS`` in their order (the history's)."""
    job_id, seq, root_id, name, digest, state, attempts, result, error, started, finished = row
    return CallRecord(
        job_id,
        seq,
        root_id,
        name,
        digest,
        _CALL_STATES[state],
        attempts,
        result,
        error,
        started,
        finished,
    )
