"""celery-durable: Celery tasks whose nested calls are checkpointed in SQL."""

from .app import Durable
from .calls import call
from .context import current_call_id, current_job_id
from .determinism import Determinism
from .dispatch import gather
from .errors import (
    CallError,
    Cancelled,
    ConfigurationError,
    DurableError,
    JobNotFound,
    JobStateError,
    LeaseLost,
    NonDeterministicError,
    OutsideDurableTaskError,
    ScheduleNotFound,
    SerializationError,
    StorageInterrupted,
    StorageUnavailable,
    UnknownTaskError,
    ValidationError,
)
from .inspection import CallView, ExecutionError, JobSummary, JobView
from .logging_middleware import LoggingMiddleware
from .messages import receive
from .metrics import PrometheusMetrics
from .observe import CallInfo, JobInfo, Middleware, Outcome
from .retry import (
    Backoff,
    ConstantBackoff,
    ExponentialBackoff,
    ExponentialBackoffWithJitter,
    NoRetry,
    RetryAfter,
)
from .schedules import cron, daily, every, weekly
from .sleeping import sleep, sleep_until
from .store import JobState, MemoryStorage, SQLStorage, Storage
from .store.base import CancelOutcome
from .task import DurableTask
from .values import now, patched, randint, random, uuid4

__all__ = [
    "Backoff",
    "CallError",
    "CallInfo",
    "CallView",
    "CancelOutcome",
    "Cancelled",
    "ConfigurationError",
    "ConstantBackoff",
    "Determinism",
    "Durable",
    "DurableError",
    "DurableTask",
    "ExecutionError",
    "ExponentialBackoff",
    "ExponentialBackoffWithJitter",
    "JobInfo",
    "JobNotFound",
    "JobState",
    "JobStateError",
    "JobSummary",
    "JobView",
    "LeaseLost",
    "LoggingMiddleware",
    "MemoryStorage",
    "Middleware",
    "NoRetry",
    "NonDeterministicError",
    "Outcome",
    "OutsideDurableTaskError",
    "PrometheusMetrics",
    "RetryAfter",
    "SQLStorage",
    "ScheduleNotFound",
    "SerializationError",
    "Storage",
    "StorageInterrupted",
    "StorageUnavailable",
    "UnknownTaskError",
    "ValidationError",
    "call",
    "cron",
    "current_call_id",
    "current_job_id",
    "daily",
    "every",
    "gather",
    "now",
    "patched",
    "randint",
    "random",
    "receive",
    "sleep",
    "sleep_until",
    "uuid4",
    "weekly",
]
