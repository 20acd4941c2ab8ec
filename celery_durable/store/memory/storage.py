"""In-process Storage for unit tests and docs. Thread-safe; not shared across processes.

Its parts mirror the SQL store's: jobs, calls (checkpoints and waiting), schedules,
observing (event-stream rows, heartbeats), over one lock and a dict per table.
"""

from __future__ import annotations

from .calls import MemoryCalls
from .flow import MemoryFlow
from .observing import MemoryObserving
from .schedules import MemorySchedules


class MemoryStorage(MemoryCalls, MemoryFlow, MemorySchedules, MemoryObserving):
    """``MemoryStorage()``: passes the storage conformance suite like the SQL store."""
