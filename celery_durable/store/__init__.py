"""Storage: the protocol, its SQL and in-memory implementations."""

from .base import CallRecord, CallState, JobRecord, JobState, Lease, NewJob, Storage
from .memory import MemoryStorage
from .sql import SQLStorage

__all__ = [
    "CallRecord",
    "CallState",
    "JobRecord",
    "JobState",
    "Lease",
    "MemoryStorage",
    "NewJob",
    "SQLStorage",
    "Storage",
]
