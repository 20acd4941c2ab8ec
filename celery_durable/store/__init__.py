"""Storage: records, the protocols, the SQL and in-memory implementations.

``records`` (what the stores hold), ``protocol`` (``Storage`` and ``ScheduleStorage``,
the seam the engine talks to), ``sql`` (PostgreSQL, MySQL/MariaDB, SQLite: tables,
migrations and statements), ``memory`` (in-process, for tests).
"""

from .memory import MemoryStorage
from .protocol import ScheduleStorage, Storage
from .records import (
    CallRecord,
    CallState,
    JobRecord,
    JobState,
    Lease,
    NewJob,
    ScheduleRecord,
    ScheduleRun,
    WorkerRecord,
)
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
    "ScheduleRecord",
    "ScheduleRun",
    "ScheduleStorage",
    "Storage",
    "WorkerRecord",
]
