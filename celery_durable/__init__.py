"""celery-durable: Celery tasks whose nested calls are checkpointed in SQL.

Everything in ``__all__`` is the public API; the subpackages are internal and may
change: ``store`` (records, the storage protocol, SQL and memory stores) < ``engine``
(one job's execution) < ``operations`` / ``scheduling`` / ``worker`` < ``app`` (the
``Durable`` facade), ``beat``, ``cli``, ``testing``.
"""

from .app import Durable
from .determinism import Determinism
from .engine.calls import call
from .engine.context import current_call_id, current_job_id
from .engine.gather import gather
from .engine.receive import receive
from .engine.recorded_values import now, patched, randint, random, uuid4
from .engine.sleep import sleep, sleep_until
from .engine.task import DurableTask
from .errors import (
    CallError,
    Cancelled,
    ConfigurationError,
    DurableError,
    JobFailedError,
    JobNotFound,
    JobStateError,
    LeaseLost,
    NonDeterministicError,
    OutsideDurableTaskError,
    ScheduleNotFound,
    SerializationError,
    StorageInterrupted,
    StorageUnavailable,
    UnawaitedCallError,
    UnknownTaskError,
    ValidationError,
)
from .observability.hooks import CallInfo, JobInfo, Middleware, Outcome
from .observability.log import LoggingMiddleware
from .observability.otel import OTelTracing
from .observability.prometheus import PrometheusMetrics, QueueDepthCollector
from .operations.events import Event
from .operations.views import CallView, ExecutionError, JobSummary, JobView, WorkerView
from .retry import (
    Backoff,
    ConstantBackoff,
    ExponentialBackoff,
    ExponentialBackoffWithJitter,
    NoRetry,
    RetryAfter,
)
from .scheduling.kinds import cron, daily, every, weekly
from .store import JobState, MemoryStorage, SQLStorage, Storage
from .store.records import CancelOutcome

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
    "Event",
    "ExecutionError",
    "ExponentialBackoff",
    "ExponentialBackoffWithJitter",
    "JobFailedError",
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
    "OTelTracing",
    "Outcome",
    "OutsideDurableTaskError",
    "PrometheusMetrics",
    "QueueDepthCollector",
    "RetryAfter",
    "SQLStorage",
    "ScheduleNotFound",
    "SerializationError",
    "Storage",
    "StorageInterrupted",
    "StorageUnavailable",
    "UnawaitedCallError",
    "UnknownTaskError",
    "ValidationError",
    "WorkerView",
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
