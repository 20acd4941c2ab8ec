"""Backoff strategies, NoRetry / RetryAfter, and retry options refused at definition time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery import Celery
from hypothesis import given
from hypothesis import strategies as st

from celery_durable import (
    ConfigurationError,
    ConstantBackoff,
    Durable,
    ExponentialBackoff,
    ExponentialBackoffWithJitter,
    NoRetry,
    RetryAfter,
)
from celery_durable.retry import RetryPolicy

positive = st.floats(min_value=0.001, max_value=1e4, allow_nan=False)  # up to a year x 1e3


def test_constant_backoff_accepts_seconds_and_timedelta() -> None:
    assert [ConstantBackoff(2.5).delay(n) for n in (1, 2, 9)] == [2.5, 2.5, 2.5]
    assert ConstantBackoff(timedelta(milliseconds=250)).delay(1) == 0.25


def test_exponential_backoff_doubles_from_base_and_caps() -> None:
    backoff = ExponentialBackoff(0.1, timedelta(seconds=1))
    assert [backoff.delay(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.delay(10_000) == 1.0  # no float overflow far past the cap


@given(
    base=positive,
    factor=st.floats(min_value=1, max_value=1e3),
    attempt=st.integers(min_value=1, max_value=5000),
)
def test_exponential_backoff_is_monotonic_and_bounded(
    base: float, factor: float, attempt: int
) -> None:
    backoff = ExponentialBackoff(base, base * factor)
    assert base <= backoff.delay(attempt) <= base * factor
    assert backoff.delay(attempt) <= backoff.delay(attempt + 1)


@given(
    base=positive,
    factor=st.floats(min_value=1, max_value=1e3),
    attempt=st.integers(min_value=1, max_value=200),
)
def test_jitter_stays_between_half_and_all_of_the_exponential_delay(
    base: float, factor: float, attempt: int
) -> None:
    plain = ExponentialBackoff(base, base * factor).delay(attempt)
    delay = ExponentialBackoffWithJitter(base, base * factor).delay(attempt)
    assert plain / 2 <= delay <= plain


def test_jitter_actually_varies() -> None:
    backoff = ExponentialBackoffWithJitter(1, 60)
    assert len({backoff.delay(5) for _ in range(50)}) > 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ExponentialBackoff(0, 10), "base must be positive"),
        (lambda: ExponentialBackoff(-1, 10), "must not be negative"),
        (lambda: ExponentialBackoff(5, 1), "must not be smaller than its base"),
        (lambda: ExponentialBackoffWithJitter(0, 1), "base must be positive"),
        (lambda: ConstantBackoff(-0.5), "must not be negative"),
        (lambda: ConstantBackoff("1s"), "number of seconds or a timedelta"),
        (lambda: RetryAfter(-1, ValueError()), "RetryAfter delay must not be negative"),
        (lambda: RetryPolicy(-1, ConstantBackoff(1)), "retries must be a whole number"),
        (lambda: ConstantBackoff(float("inf")), "at most"),
        (lambda: RetryAfter(1e12), "at most"),
        (lambda: RetryPolicy(1, ExponentialBackoff), "an instance, not the class"),  # type: ignore[arg-type]
    ],
)
def test_bad_backoff_values_are_refused(make: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()  # type: ignore[operator]


def test_no_retry_and_retry_after_keep_the_reason() -> None:
    cause = ValueError("card declined")
    assert NoRetry(cause).reason is cause and NoRetry(cause).__cause__ is cause
    assert str(NoRetry("bad input")) == "bad input"
    later = RetryAfter(timedelta(seconds=2), cause)
    assert (later.delay, later.reason) == (2.0, cause)
    assert RetryAfter(1).reason.__class__ is RetryAfter


@pytest.mark.parametrize(
    "options, message",
    [
        ({"retries": -1}, "retries of task 'bad' must be a whole number >= 0, got -1"),
        ({"retries": 1.5}, "retries of task 'bad' must be a whole number"),
        ({"call_retries": -2}, "call_retries of task 'bad'"),
        ({"backoff": "fast"}, "backoff of task 'bad' must be a backoff strategy"),
        ({"call_backoff": -1}, "must not be negative"),
        (
            {"on_exhausted": "explode"},
            "on_exhausted of task 'bad' must be one of 'fail', 'dead_letter', got 'explode'",
        ),
    ],
)
def test_bad_task_retry_options_fail_at_definition(
    options: dict[str, object], message: str
) -> None:
    durable = Durable(Celery("defs", set_as_current=False))
    with pytest.raises(ConfigurationError, match=message):

        @durable.task(name="bad", shared=False, **options)
        def bad() -> None: ...


def test_bad_options_through_app_task_fail_when_the_task_is_bound() -> None:
    from celery_durable import DurableTask

    app = Celery("defs2", set_as_current=False)
    with pytest.raises(ConfigurationError, match="on_exhausted of task 'bad2'"):

        @app.task(base=DurableTask, name="bad2", shared=False, lazy=False, on_exhausted="retry")
        def bad2() -> None: ...


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"durable_call_retries": -1}, "durable_call_retries must be a whole number"),
        ({"durable_job_retries": "x"}, "durable_job_retries must be a int"),
        ({"durable_on_exhausted": "dlq"}, "durable_on_exhausted must be one of"),
        ({"durable_call_backoff": "exp"}, "durable_call_backoff must be a backoff strategy"),
        ({"durable_max_countdown": -5}, "durable_max_countdown must not be negative"),
    ],
)
def test_bad_retry_settings_are_refused(settings: dict[str, object], message: str) -> None:
    app = Celery("settings", set_as_current=False)
    app.conf.update(settings)
    with pytest.raises(ConfigurationError, match=message):
        Durable(app)


def test_settings_take_a_number_as_a_constant_backoff() -> None:
    app = Celery("settings2", set_as_current=False)
    app.conf.durable_call_backoff = 0.5
    assert Durable(app).settings.call_backoff == ConstantBackoff(0.5)
