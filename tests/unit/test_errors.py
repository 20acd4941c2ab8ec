"""Every exception of ours survives the trips it makes: pickled from a pool child to the
worker's main process, and through a JSON result backend to a caller's ``.get()``."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from celery import Celery
from celery.backends.base import BaseBackend
from kombu.utils import json

from celery_durable import errors
from celery_durable.engine.recorded_errors import CallRetryPending
from celery_durable.retry import NoRetry, RetryAfter
from celery_durable.store.records import CallRecord, CallState
from celery_durable.testing import T0

RECORD = CallRecord(
    job_id="j1",
    seq=2,
    root_id="j1",
    name="shop.pay",
    args_digest="d" * 16,
    state=CallState.RETRYING,
    attempts=1,
    result=None,
    error=None,
    started_at=T0,
    finished_at=T0,
)
EXAMPLES: list[Any] = [
    errors.ConfigurationError("durable_lease_seconds must be positive"),
    errors.ValidationError("job id must not contain a NUL byte"),
    errors.StorageUnavailable("cannot use the durable database"),
    errors.SerializationError("the result is of type object"),
    errors.JobNotFound("j1"),
    errors.ScheduleNotFound("nightly"),
    errors.JobStateError("j1", "running", "only failed jobs can be retried"),
    errors.JobFailedError("j1", "dead", "ValueError", "card declined"),
    errors.UnawaitedCallError("the async body of job j1 created 1 call(s) it never awaited"),
    errors.UnknownTaskError("call() got task name 'x'"),
    errors.OutsideDurableTaskError("call() can only be used inside"),
    errors.CallError(
        job_id="j1",
        seq=2,
        name="shop.pay",
        error_type="ValueError",
        error_message="declined",
        attempts=3,
        no_retry=True,
    ),
    errors.Cancelled("j1"),
    errors.NonDeterministicError(
        job_id="j1",
        task="shop.flow",
        seq=3,
        expected="a",
        recorded="b",
        expected_digest="e" * 16,
        recorded_digest="r" * 16,
        mode="strict",
    ),
    errors.LeaseLost("j1"),
    errors.StorageInterrupted("j1", errors.StorageUnavailable("server closed")),
    NoRetry(KeyError("card")),
    NoRetry("no items"),
    RetryAfter(2.5, ConnectionError("429")),
    RetryAfter(1),
]


def _fields(exc: BaseException) -> dict[str, Any]:
    # NoRetry/RetryAfter's `error` may be the wrapped exception object: after JSON only
    # its text is left, which str(exc) covers.
    return {
        k: v
        for k, v in vars(exc).items()
        if not k.startswith("_")
        and k != "error"
        and isinstance(v, (str, int, float, bool, type(None)))
    }


def test_every_error_of_ours_is_in_the_examples() -> None:
    ours = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    } - {errors.DurableError}
    assert ours <= {type(e) for e in EXAMPLES}, ours - {type(e) for e in EXAMPLES}


@pytest.mark.parametrize("exc", EXAMPLES, ids=lambda e: type(e).__name__)
def test_pickled_across_processes(exc: BaseException) -> None:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert _fields(back) == _fields(exc)


@pytest.mark.parametrize("exc", EXAMPLES, ids=lambda e: type(e).__name__)
def test_rebuilt_by_a_json_result_backend(exc: BaseException) -> None:
    app = Celery("errors", set_as_current=False)
    app.conf.result_serializer = "json"
    backend = BaseBackend(app)
    stored = json.loads(json.dumps(backend.prepare_exception(exc)))
    back = backend.exception_to_python(stored)
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert _fields(back) == _fields(exc)


def test_a_pending_call_retry_pickles_with_its_record() -> None:
    pending = CallRetryPending(RECORD, 1.5, TimeoutError("slow"))
    back = pickle.loads(pickle.dumps(pending))
    assert (back.record, back.delay, str(back)) == (RECORD, 1.5, str(pending))


def test_messages_are_not_doubled() -> None:
    assert str(errors.Cancelled("j1")) == "durable job j1 was cancelled"
    assert str(errors.JobNotFound("j1")) == "durable job 'j1' not found"
    assert str(errors.ScheduleNotFound("s")) == "no schedule named 's'"
