"""Retry policies: backoff strategies, NoRetry / RetryAfter, and how a policy is chosen.

Two layers use the same pieces. A *call* that fails is attempted again (its earlier
calls replay from checkpoints) up to ``retries`` more times; a *job* whose body still
fails runs again as a whole (completed calls still replay) up to its own ``retries``;
after that it ends as ``on_exhausted`` says: ``"fail"`` or ``"dead_letter"``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from .determinism import check_determinism
from .errors import ConfigurationError

Seconds = float | int | timedelta


@runtime_checkable
class Backoff(Protocol):
    """Anything with ``delay(attempt) -> seconds`` is a backoff strategy.

    ``attempt`` is the number of the retry being scheduled: 1 for the first retry.
    """

    def delay(self, attempt: int) -> float: ...


def seconds(value: Seconds, what: str) -> float:
    """Seconds as a float, from a number or a timedelta; negative values are refused."""
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise ConfigurationError(
            f"{what} must be a number of seconds or a timedelta, got {value!r}"
        )
    if result < 0 or result != result:  # NaN is not a delay either
        raise ConfigurationError(f"{what} must not be negative, got {value!r}")
    if result > MAX_DELAY:
        raise ConfigurationError(f"{what} must be at most {MAX_DELAY:g} s (a year), got {value!r}")
    return result


MAX_DELAY = 366 * 86400.0


@dataclass(frozen=True)
class ConstantBackoff:
    """The same delay before every retry."""

    seconds: float

    def __init__(self, delay: Seconds) -> None:
        object.__setattr__(self, "seconds", seconds(delay, "ConstantBackoff delay"))

    def delay(self, attempt: int) -> float:
        return self.seconds


@dataclass(frozen=True)
class ExponentialBackoff:
    """``base * 2 ** (attempt - 1)``, capped at ``max``: 1 s, 2 s, 4 s ... 60 s."""

    base: float
    max: float

    def __init__(self, base: Seconds, max: Seconds) -> None:
        name = type(self).__name__
        b, m = seconds(base, f"{name} base"), seconds(max, f"{name} max")
        if b <= 0:
            raise ConfigurationError(f"{name} base must be positive, got {base!r}")
        if m < b:
            raise ConfigurationError(
                f"{name} max ({max!r}) must not be smaller than its base ({base!r})"
            )
        object.__setattr__(self, "base", b)
        object.__setattr__(self, "max", m)

    def delay(self, attempt: int) -> float:
        if attempt < 1:
            return 0.0
        # 2 ** 1100 would overflow a float; any exponent past the cap gives the cap.
        exponent = min(attempt - 1, 1000)
        return float(min(self.max, self.base * 2.0**exponent))


@dataclass(frozen=True, init=False)
class ExponentialBackoffWithJitter(ExponentialBackoff):
    """Exponential backoff with "equal jitter": a uniform delay between half the
    exponential delay and all of it, so retries of many jobs spread out but never
    come sooner than half the plain backoff."""

    def delay(self, attempt: int) -> float:
        ceiling = super().delay(attempt)
        return random.uniform(ceiling / 2, ceiling)


class NoRetry(Exception):
    """Fail this call or job now: no retries at any layer.

    ``raise NoRetry(exc)`` keeps ``exc`` as the reason (and as ``__cause__``);
    ``raise NoRetry("message")`` gives a reason of its own.
    """

    def __init__(self, error: BaseException | str) -> None:
        self.error = error
        super().__init__(error if isinstance(error, str) else f"{type(error).__name__}: {error}")
        if isinstance(error, BaseException):
            self.__cause__ = error

    @property
    def reason(self) -> BaseException:
        return self.error if isinstance(self.error, BaseException) else self


class RetryAfter(Exception):
    """Retry this call or job after exactly ``delay`` (instead of the backoff).

    It counts as an attempt: with no retries left, the failure is final.
    """

    def __init__(self, delay: Seconds, error: BaseException | str | None = None) -> None:
        self.delay = seconds(delay, "RetryAfter delay")
        self.error = error
        self.message = (
            error
            if isinstance(error, str)
            else (f"{type(error).__name__}: {error}" if error is not None else "retry requested")
        )
        # (delay, message) as args: a result backend rebuilds it with cls(*args)
        super().__init__(self.delay, None if error is None else self.message)
        if isinstance(error, BaseException):
            self.__cause__ = error

    def __str__(self) -> str:
        return f"{self.message} (retry after {self.delay:g}s)"

    @property
    def reason(self) -> BaseException:
        return self.error if isinstance(self.error, BaseException) else self


ON_EXHAUSTED = ("fail", "dead_letter")


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    backoff: Backoff

    def __post_init__(self) -> None:
        check_retries(self.retries, "retries")
        check_backoff(self.backoff, "backoff")

    def delay(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait before retry number ``attempt`` after ``error``."""
        if isinstance(error, RetryAfter):
            return error.delay
        return max(0.0, float(self.backoff.delay(attempt)))


def check_retries(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{what} must be a whole number >= 0, got {value!r}")
    return value


def check_backoff(value: Any, what: str) -> Backoff:
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        return ConstantBackoff(value)
    if isinstance(value, type) or not isinstance(value, Backoff):
        raise ConfigurationError(
            f"{what} must be a backoff strategy (an object with delay(attempt), e.g. "
            f"ExponentialBackoff(1, 60): an instance, not the class), a number of seconds "
            f"or a timedelta, got {value!r}"
        )
    return value


def check_on_exhausted(value: Any, what: str = "on_exhausted") -> str:
    if value not in ON_EXHAUSTED:
        raise ConfigurationError(
            f"{what} must be one of {', '.join(map(repr, ON_EXHAUSTED))}, got {value!r}"
        )
    return str(value)


def final_reason(error: BaseException) -> BaseException:
    """The exception a person should see: the one NoRetry/RetryAfter wraps, if any."""
    if isinstance(error, (NoRetry, RetryAfter)):
        return error.reason
    return error


def call_policy(task: Any, default: RetryPolicy) -> RetryPolicy:
    """The policy for calls a task makes: its ``call_retries``/``call_backoff`` where set."""
    retries = getattr(task, "call_retries", None)
    backoff = getattr(task, "call_backoff", None)
    if retries is None and backoff is None:
        return default
    return RetryPolicy(
        default.retries if retries is None else retries,
        default.backoff if backoff is None else check_backoff(backoff, "call_backoff"),
    )


@dataclass(frozen=True)
class JobPolicy:
    retry: RetryPolicy
    on_exhausted: str


def job_policy(task: Any, settings: Any) -> JobPolicy:
    """A task's ``retries``/``backoff``/``on_exhausted``, else the ``durable_*`` defaults."""
    retries = getattr(task, "retries", None)
    backoff = getattr(task, "backoff", None)
    on_exhausted = getattr(task, "on_exhausted", None)
    return JobPolicy(
        RetryPolicy(
            settings.job_retries if retries is None else retries,
            settings.job_backoff if backoff is None else check_backoff(backoff, "backoff"),
        ),
        settings.on_exhausted if on_exhausted is None else on_exhausted,
    )


TASK_OPTIONS = ("retries", "backoff", "on_exhausted", "call_retries", "call_backoff")


def check_task_options(options: Any, task_name: str) -> None:
    """Refuse bad retry options when a task is defined, naming the task and the option."""
    get = (
        options.get
        if isinstance(options, dict)
        else (lambda name, default=None: getattr(options, name, default))
    )
    where = f"task {task_name!r}"
    for name in ("retries", "call_retries"):
        if get(name, None) is not None:
            check_retries(get(name), f"{name} of {where}")
    for name in ("backoff", "call_backoff"):
        if get(name, None) is not None:
            check_backoff(get(name), f"{name} of {where}")
    if get("on_exhausted", None) is not None:
        check_on_exhausted(get("on_exhausted"), f"on_exhausted of {where}")
    if get("determinism", None) is not None:
        check_determinism(get("determinism"), f"determinism of {where}")
