"""What the dashboard can change: each action takes the request's fields and reports what
it did. The HTML pages and the JSON API call the same functions."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..app import Durable
from ..errors import JobNotFound, JobStateError
from .filters import JobQuery, field_text

audit = logging.getLogger("celery_durable.web.audit")
BULK_LIMIT = 1000
"""A bulk action on "every job matching the filter" takes at most this many, newest first."""


class ActionError(Exception):
    """Bad input for an action: the status to answer with and what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Outcome:
    message: str
    ids: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """Ids the action left alone, with why."""


Fields = Mapping[str, Any]
Action = Callable[[Durable, Fields], Outcome]


def _one(fields: Fields, name: str) -> str:
    value = field_text(fields, name)
    if value is None:
        raise ActionError(400, f"the {name!r} field is missing")
    return value


def _many(fields: Fields, name: str) -> list[str]:
    value = fields.get(name)
    values = value if isinstance(value, list) else [] if value is None else [value]
    return [str(v).strip() for v in values if str(v).strip()]


def _flag(fields: Fields, name: str) -> bool:
    return (field_text(fields, name) or "").lower() in ("1", "true", "on", "yes")


def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def retry(durable: Durable, fields: Fields) -> Outcome:
    job_id = _one(fields, "job_id")
    scratch = _flag(fields, "from_scratch")
    durable.retry(job_id, from_scratch=scratch)
    return Outcome(f"job {job_id} runs again{' from scratch' if scratch else ''}", [job_id])


def cancel(durable: Durable, fields: Fields) -> Outcome:
    job_id = _one(fields, "job_id")
    outcome = durable.cancel(job_id)
    return Outcome(f"job {job_id}: {outcome.value}", [job_id])


def send(durable: Durable, fields: Fields) -> Outcome:
    job_id, topic = _one(fields, "job_id"), _one(fields, "topic")
    payload = _payload(fields.get("payload"))
    key = fields.get("key") or None
    sent = durable.send(job_id, topic, payload, key=key if isinstance(key, str) else None)
    message = f"message on {topic!r} sent to job {job_id}" if sent else "already sent (same key)"
    return Outcome(message, [job_id])


def _payload(value: Any) -> Any:
    """A form sends the payload as JSON text; a JSON body may send the value itself."""
    if not isinstance(value, str):
        return value
    if value.strip() == "":
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        message = f'the payload is not JSON ({exc}); send e.g. {{"ok": true}}'
        raise ActionError(400, message) from None


def _selected(fields: Fields) -> list[str]:
    ids = _many(fields, "ids") or _many(fields, "job_id")
    if not ids:
        raise ActionError(400, "no dead letters selected: tick some (or give job_id)")
    return ids


def requeue(durable: Durable, fields: Fields) -> Outcome:
    ids = _selected(fields)
    done = durable.requeue(ids, from_scratch=_flag(fields, "from_scratch"))
    skipped = {i: "not a dead letter" for i in ids if i not in done}
    return Outcome(f"requeued {_plural(len(done), 'dead letter')}", done, skipped)


def purge(durable: Durable, fields: Fields) -> Outcome:
    ids = _selected(fields)
    dead = [i for i in ids if _is_dead(durable, i)]
    deleted = durable.purge_dead_letters(dead) if dead else 0
    skipped = {i: "not a dead letter" for i in ids if i not in dead}
    return Outcome(f"deleted {_plural(deleted, 'dead letter')} for good", dead, skipped)


def _is_dead(durable: Durable, job_id: str) -> bool:
    try:
        return durable.get_job(job_id).state == "dead"
    except JobNotFound:
        return False


def _retry_one(durable: Durable, job_id: str) -> None:
    durable.retry(job_id)


def _retry_one_from_scratch(durable: Durable, job_id: str) -> None:
    durable.retry(job_id, from_scratch=True)


def _cancel_one(durable: Durable, job_id: str) -> None:
    durable.cancel(job_id)


_BULK: dict[str, Callable[[Durable, str], None]] = {
    "retry": _retry_one,
    "retry_from_scratch": _retry_one_from_scratch,
    "cancel": _cancel_one,
}


def bulk(durable: Durable, fields: Fields) -> Outcome:
    """``action`` on the ``ids`` selected, or with ``scope=filter`` on every job the
    list's filter matches (at most BULK_LIMIT)."""
    action = _one(fields, "action")
    if fields.get("scope") == "filter" or _many(fields, "scope") == ["filter"]:
        query = JobQuery.parse(fields, page_size=BULK_LIMIT)
        ids = [j.id for j in durable.jobs(**query.listing(limit=BULK_LIMIT, offset=0))]
    else:
        ids = _many(fields, "ids")
    if not ids:
        raise ActionError(400, "no jobs selected: tick some, or choose every matching job")
    if action in ("requeue", "purge"):
        inner = requeue if action == "requeue" else purge
        return inner(durable, {"ids": ids, "from_scratch": fields.get("from_scratch")})
    if action not in _BULK:
        known = ", ".join([*_BULK, "requeue", "purge"])
        raise ActionError(400, f"unknown bulk action {action!r}; one of {known}")
    done: list[str] = []
    skipped: dict[str, str] = {}
    for job_id in ids:
        try:
            _BULK[action](durable, job_id)
            done.append(job_id)
        except (JobNotFound, JobStateError) as exc:
            skipped[job_id] = str(exc)
    message = f"{action.replace('_', ' ')}: {_plural(len(done), 'job')}"
    if skipped:
        message += f", {len(skipped)} skipped"
    return Outcome(message, done, skipped)


def schedule_pause(durable: Durable, fields: Fields) -> Outcome:
    name = _one(fields, "name")
    durable.schedules.pause(name)
    return Outcome(f"schedule {name!r} paused")


def schedule_resume(durable: Durable, fields: Fields) -> Outcome:
    name = _one(fields, "name")
    durable.schedules.resume(name)
    return Outcome(f"schedule {name!r} resumed")


def schedule_trigger(durable: Durable, fields: Fields) -> Outcome:
    name = _one(fields, "name")
    job_id = durable.schedules.trigger(name)
    return Outcome(f"schedule {name!r} ran now as job {job_id}", [job_id])


def _target(fields: Fields) -> dict[str, str]:
    kind = _one(fields, "kind")
    if kind not in ("queue", "task"):
        raise ActionError(400, f"kind must be 'queue' or 'task', got {kind!r}")
    return {kind: _one(fields, "name")}


def pause(durable: Durable, fields: Fields) -> Outcome:
    target = _target(fields)
    fresh = durable.pause(**target)
    ((kind, name),) = target.items()
    return Outcome(f"{kind} {name!r} {'paused' if fresh else 'was paused already'}")


def resume(durable: Durable, fields: Fields) -> Outcome:
    target = _target(fields)
    released = durable.resume(**target)
    ((kind, name),) = target.items()
    if released is None:
        return Outcome(f"{kind} {name!r} was not paused")
    return Outcome(f"{kind} {name!r} resumed; {_plural(released, 'held job')} published")


ACTIONS: dict[str, Action] = {
    "retry": retry,
    "cancel": cancel,
    "send": send,
    "requeue": requeue,
    "purge": purge,
    "bulk": bulk,
    "schedule-pause": schedule_pause,
    "schedule-resume": schedule_resume,
    "schedule-trigger": schedule_trigger,
    "pause": pause,
    "resume": resume,
}
