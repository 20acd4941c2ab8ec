"""Schedule kinds and when they fire: every, daily, weekly, cron, each with a timezone.

Every fire time is an absolute UTC instant computed from the previous *nominal* tick
(not from when the tick actually ran), so intervals never drift.

Daylight saving time, the written policy:

* ``every(...)`` is an interval of real time: it has no timezone and ignores DST.
* ``daily``, ``weekly`` and ``cron`` follow the wall clock of their timezone:
  - a local time that DST skips (spring forward) fires at the same offset after the
    gap: a daily 02:30 in New York fires at 03:30 EDT on that day, once;
  - a local time that DST repeats (fall back) fires once, at its first occurrence.
* A cron that fires every hour (its hour field matches all 24 hours, e.g.
  ``"0 * * * *"`` or ``"*/15 * * * *"``) keeps a steady rhythm of real time instead:
  the skipped hour simply does not exist and the repeated hour fires twice, so it
  neither skips nor doubles an hour of real time.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..errors import ConfigurationError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
UTC = timezone.utc


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"unknown timezone {name!r}: use an IANA name such as 'America/New_York' or 'UTC'"
        ) from None


def _aware(when: datetime, what: str) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ConfigurationError(f"{what} must be a timezone-aware datetime, got {when!r}")
    return when.astimezone(UTC)


class Schedule(ABC):
    """When something fires. ``timezone`` None means the app's timezone."""

    timezone: str | None

    @abstractmethod
    def next_after(self, previous: datetime, tz: str = "UTC") -> datetime:
        """The first fire time strictly after ``previous`` (aware), as aware UTC."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able definition; ``schedule_from_dict`` reverses it."""

    def describe(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def zone_name(self, default: str) -> str:
        return self.timezone or default


@dataclass(frozen=True)
class Every(Schedule):
    seconds: float
    timezone: str | None = None

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ConfigurationError(f"every() needs a positive interval, got {self.seconds!r}")
        if self.timezone is not None:
            every(self.seconds, timezone=self.timezone)  # refused, with the reason

    def next_after(self, previous: datetime, tz: str = "UTC") -> datetime:
        return _aware(previous, "previous") + timedelta(seconds=self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"every": self.seconds}


@dataclass(frozen=True)
class Cron(Schedule):
    expression: str
    timezone: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str) or len(self.expression.split()) != 5:
            raise ConfigurationError(
                f"cron() takes 5 fields (minute hour day month weekday), got {self.expression!r}"
            )
        if not croniter.is_valid(self.expression):
            raise ConfigurationError(f"invalid cron expression {self.expression!r}")
        if self.timezone is not None:
            zone(self.timezone)

    @property
    def every_hour(self) -> bool:
        """The hour field matches all 24 hours: keep a real-time rhythm across DST."""
        hours = croniter(self.expression).expanded[1]
        return hours == ["*"] or set(hours) == set(range(24))

    def next_after(self, previous: datetime, tz: str = "UTC") -> datetime:
        prev_utc = _aware(previous, "previous")
        local = zone(self.zone_name(tz))
        wall = prev_utc.astimezone(local).replace(tzinfo=None)
        # One microsecond earlier, so a repeated wall time can yield its second instant.
        candidates = croniter(self.expression, wall - timedelta(microseconds=1))
        for _ in range(100_000):
            naive: datetime = candidates.get_next(datetime)
            for instant in self._instants(naive, local):
                if instant > prev_utc:
                    return instant
        raise ConfigurationError(f"cron {self.expression!r} never fires")  # pragma: no cover

    def _instants(self, naive: datetime, local: ZoneInfo) -> list[datetime]:
        first = naive.replace(tzinfo=local, fold=0)
        second = naive.replace(tzinfo=local, fold=1)
        exists = first.astimezone(UTC).astimezone(local).replace(tzinfo=None) == naive
        if not self.every_hour:
            # Wall clock: a skipped time runs shifted by the gap (fold=0 does exactly
            # that), a repeated one at its first occurrence.
            return [first.astimezone(UTC)]
        if not exists:
            return []  # real-time rhythm: the skipped wall time is not an instant
        return sorted({first.astimezone(UTC), second.astimezone(UTC)})

    def to_dict(self) -> dict[str, Any]:
        return {"cron": self.expression, "timezone": self.timezone}


def every(
    seconds: float | timedelta | None = None,
    *,
    minutes: float = 0,
    hours: float = 0,
    days: float = 0,
    timezone: str | None = None,
) -> Every:
    """``every(30)``, ``every(timedelta(hours=1))``, ``every(hours=1)``.

    An interval of real time: it has no timezone, and DST never stretches or shrinks
    it. ``timezone=`` is refused (use ``daily``, ``weekly`` or ``cron`` for wall-clock
    times)."""
    if timezone is not None:
        raise ConfigurationError(
            f"every() is an interval of real time and takes no timezone (got "
            f"timezone={timezone!r}): DST never changes it. For times on a wall clock use "
            f"daily(), weekly() or cron() with timezone=..."
        )
    if isinstance(seconds, timedelta):
        total = seconds.total_seconds()
    elif seconds is None or isinstance(seconds, (int, float)):
        total = float(seconds or 0)
    else:
        raise ConfigurationError(f"every() takes seconds or a timedelta, got {seconds!r}")
    return Every(total + minutes * 60 + hours * 3600 + days * 86400)


def cron(expression: str, *, timezone: str | None = None) -> Cron:
    """``cron("0 9 * * MON-FRI", timezone="Europe/London")`` (croniter syntax)."""
    return Cron(expression, timezone)


def daily(hour: int, minute: int = 0, *, timezone: str | None = None) -> Cron:
    _check_time(hour, minute, "daily")
    return Cron(f"{minute} {hour} * * *", timezone)


def weekly(weekday: int | str, hour: int, minute: int = 0, *, timezone: str | None = None) -> Cron:
    """``weekday``: 0-6 from Monday (Python's convention) or "mon" ... "sun"."""
    if isinstance(weekday, str) and weekday.lower()[:3] in WEEKDAYS:
        day = WEEKDAYS.index(weekday.lower()[:3])
    elif isinstance(weekday, int) and not isinstance(weekday, bool) and 0 <= weekday <= 6:
        day = weekday
    else:
        raise ConfigurationError(
            f"weekly() takes a weekday 0-6 (Monday is 0) or a name such as 'mon', got {weekday!r}"
        )
    _check_time(hour, minute, "weekly")
    return Cron(f"{minute} {hour} * * {(day + 1) % 7}", timezone)  # cron: Sunday is 0


def _check_time(hour: Any, minute: Any, what: str) -> None:
    for name, value, top in (("hour", hour, 23), ("minute", minute, 59)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ConfigurationError(f"{what}() {name} must be 0-{top}, got {value!r}")


def schedule_from_dict(data: dict[str, Any]) -> Schedule:
    if "every" in data:
        return Every(float(data["every"]))
    if "cron" in data:
        return Cron(str(data["cron"]), data.get("timezone"))
    raise ConfigurationError(f"not a schedule definition: {data!r}")
