"""Errors as the engine sees them: which ones another attempt could fix, and how one is
stored (type, message, traceback, as JSON) with a call or a job."""

from __future__ import annotations

import traceback
from typing import Any

from .. import serialization
from ..errors import (
    CallError,
    Cancelled,
    ConfigurationError,
    NonDeterministicError,
    OutsideDurableTaskError,
    SerializationError,
    UnawaitedCallError,
    UnknownTaskError,
)
from ..retry import NoRetry
from ..store.records import CallRecord

# Errors no retry can fix: the same code meets the same history or configuration again.
NOT_RETRYABLE: tuple[type[BaseException], ...] = (
    NonDeterministicError,
    ConfigurationError,
    UnknownTaskError,
    OutsideDurableTaskError,
    SerializationError,
    Cancelled,
    UnawaitedCallError,
)


def call_retryable(exc: BaseException) -> bool:
    """Whether another attempt of the call could succeed.

    A CallError escaping the callee means one of *its* calls already spent its retries:
    retrying at this level would only replay that failure, so it goes to the body."""
    return not isinstance(exc, (NoRetry, CallError, *NOT_RETRYABLE))


def job_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (NoRetry, *NOT_RETRYABLE)):
        return False
    return not (isinstance(exc, CallError) and exc.no_retry)


def encode_error(exc: BaseException, **extra: Any) -> str:
    return serialization.dumps(
        {
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback_text(exc),
            **extra,
        },
        what="an error description",
    )


def traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class CallRetryPending(BaseException):
    """A call failed with retries left: the job stops here and runs again later.

    Internal: raised by call() and handled by the runner, which reschedules the job.
    """

    def __init__(self, record: CallRecord, delay: float, error: BaseException) -> None:
        super().__init__(record, delay, error)
        self.record = record
        self.delay = delay
        self.error = error

    def __str__(self) -> str:
        return f"call retry in {self.delay:g}s after {type(self.error).__name__}: {self.error}"
