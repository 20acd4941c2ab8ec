"""celery-durable: Celery tasks whose nested calls are checkpointed in SQL."""

from .app import Durable
from .calls import call
from .context import current_call_id, current_job_id
from .errors import (
    CallError,
    ConfigurationError,
    DurableError,
    JobNotFound,
    LeaseLost,
    NonDeterministicError,
    OutsideDurableTaskError,
    SerializationError,
    StorageInterrupted,
    StorageUnavailable,
    UnknownTaskError,
)
from .inspection import CallView, JobView
from .store import JobState, MemoryStorage, SQLStorage, Storage
from .task import DurableTask

__all__ = [
    "CallError",
    "CallView",
    "ConfigurationError",
    "Durable",
    "DurableError",
    "DurableTask",
    "JobNotFound",
    "JobState",
    "JobView",
    "LeaseLost",
    "MemoryStorage",
    "NonDeterministicError",
    "OutsideDurableTaskError",
    "SQLStorage",
    "SerializationError",
    "Storage",
    "StorageInterrupted",
    "StorageUnavailable",
    "UnknownTaskError",
    "call",
    "current_call_id",
    "current_job_id",
]
