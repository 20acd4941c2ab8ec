"""Celery's ``beat_schedule`` entries, taken over as code schedules of the durable beat.

A number or timedelta becomes ``every()``, a ``crontab`` becomes ``cron()`` with the
same fields. Anything else (solar, custom schedule classes) is refused by name.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab
from celery.schedules import schedule as celery_schedule

from ..errors import ConfigurationError
from .definition import Definition, task_name
from .kinds import Schedule, cron, every
from .registry import Schedules


def import_beat_schedule(schedules: Schedules, entries: dict[str, Any]) -> None:
    for name, entry in entries.items():
        options = dict(entry.get("options") or {})
        schedules.register(
            Definition(
                name=name,
                task=task_name(entry["task"]),
                when=_when(name, entry["schedule"]),
                args=tuple(entry.get("args") or ()),
                kwargs=dict(entry.get("kwargs") or {}),
                options={k: v for k, v in options.items() if k in ("queue", "priority")} or None,
            )
        )


def _when(name: str, value: Any) -> Schedule:
    if isinstance(value, (int, float, timedelta)):
        return every(value)
    if isinstance(value, crontab):
        fields = (
            value._orig_minute,
            value._orig_hour,
            value._orig_day_of_month,
            value._orig_month_of_year,
            value._orig_day_of_week,
        )
        return cron(" ".join(str(f) for f in fields))
    if isinstance(value, celery_schedule):
        return every(value.run_every)
    raise ConfigurationError(
        f"beat_schedule entry {name!r}: {type(value).__name__} schedules cannot move to "
        f"the durable beat; use every(), daily(), weekly() or cron()"
    )
