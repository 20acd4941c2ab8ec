"""A schedule as code or the API gives it (``Definition``), checked, and what it becomes
as a row; the job id of each nominal tick."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery

from .. import serialization
from ..errors import ConfigurationError
from ..identifiers import check_key, check_name
from ..store.records import ScheduleRecord
from .kinds import Schedule, zone

MISSED = ("once", "skip", "all")


_NAMESPACE = uuid.UUID("6f1c3a52-3f0e-4d39-9a53-5e0f6c1d2b7a")


ENQUEUE_OPTIONS = (
    "queue",
    "priority",
    "routing_key",
    "exchange",
    "expires",
    "time_limit",
    "soft_time_limit",
    "headers",
)


@dataclass(frozen=True)
class Definition:
    """A schedule as code or the API gives it, before it becomes a row."""

    name: str
    task: str
    when: Schedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    unique: bool = False
    missed: str = "once"
    catchup_limit: int = 10
    timezone: str | None = None

    def __post_init__(self) -> None:
        check_key(self.name, "a schedule name")
        check_name(self.task, f"schedule {self.name!r}: the task name")
        if not isinstance(self.when, Schedule):
            raise ConfigurationError(
                f"schedule {self.name!r}: when must be every(), daily(), weekly() or "
                f"cron(), got {self.when!r}"
            )
        if self.missed not in MISSED:
            raise ConfigurationError(
                f"schedule {self.name!r}: missed must be one of "
                f"{', '.join(MISSED)}, got {self.missed!r}"
            )
        if (
            isinstance(self.catchup_limit, bool)
            or not isinstance(self.catchup_limit, int)
            or self.catchup_limit < 1
        ):
            raise ConfigurationError(f"schedule {self.name!r}: catchup_limit must be >= 1")
        unknown = set(self.options or {}) - set(ENQUEUE_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"schedule {self.name!r}: unknown option(s) {', '.join(sorted(unknown))}"
            )
        if self.timezone is not None:
            zone(self.timezone)

    def record(
        self,
        default_tz: str,
        now: datetime,
        *,
        source: str,
        existing: ScheduleRecord | None = None,
    ) -> ScheduleRecord:
        what = f"schedule {self.name!r}"
        tz = self.timezone or self.when.timezone or default_tz
        spec = serialization.dumps(self.when.to_dict(), what=f"{what} definition")
        return ScheduleRecord(
            name=self.name,
            task=self.task,
            args=serialization.dumps(list(self.args), what=f"{what} args"),
            kwargs=serialization.dumps(dict(self.kwargs or {}), what=f"{what} kwargs"),
            options=serialization.dumps(dict(self.options or {}), what=f"{what} options"),
            spec=spec,
            timezone=tz,
            unique=self.unique,
            missed=self.missed,
            catchup_limit=self.catchup_limit,
            enabled=True,
            paused=existing.paused if existing else False,
            source=source,
            next_run_at=None if existing and existing.paused else self.when.next_after(now, tz),
            last_run_at=existing.last_run_at if existing else None,
            last_job_id=existing.last_job_id if existing else None,
            version=existing.version + 1 if existing else 1,
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )


def default_timezone(app: Celery) -> str:
    """The app's ``timezone`` (Django's ``TIME_ZONE`` too), else UTC."""
    return str(app.conf.timezone or "UTC")


def same_definition(a: ScheduleRecord, b: ScheduleRecord) -> bool:
    fields = (
        "task",
        "args",
        "kwargs",
        "options",
        "spec",
        "timezone",
        "unique",
        "missed",
        "catchup_limit",
    )
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def run_job_id(name: str, nominal: datetime) -> str:
    """The job id of one nominal tick: the same in every beat, so it cannot double."""
    return str(uuid.uuid5(_NAMESPACE, f"{name}|{nominal.isoformat()}"))


def task_name(task: Any) -> str:
    name = getattr(task, "name", task)
    if not isinstance(name, str):
        raise ConfigurationError(f"a schedule needs a task or a task name, got {task!r}")
    return check_name(name, "a schedule's task name")


def definition_from(name: str, task: Any, when: Schedule, options: dict[str, Any]) -> Definition:
    enqueue = {k: options.pop(k) for k in list(options) if k in ENQUEUE_OPTIONS}
    allowed = {"args", "kwargs", "unique", "missed", "catchup_limit", "timezone"}
    unknown = set(options) - allowed
    if unknown:
        raise ConfigurationError(
            f"schedule {name!r}: unknown option(s) {', '.join(sorted(unknown))}"
        )
    args = options.pop("args", ())
    return Definition(
        name=name,
        task=task_name(task),
        when=when,
        args=tuple(args),
        options=enqueue or None,
        **options,
    )
