"""Helpers for users' own tests, and the storage conformance suite.

A third-party Storage proves itself by subclassing ``StorageConformance`` in a pytest
module and providing a ``storage`` fixture that yields a fresh, migrated store::

    class TestMyStore(StorageConformance):
        @pytest.fixture
        def storage(self):
            store = MyStore(...); store.migrate(); yield store; store.drop()
"""

from __future__ import annotations

from .replay import ReplayReport, replay
from .storage_core import LEASE, T0, CoreConformance, call_record, claimed, new_job
from .storage_identity import IdentityConformance
from .storage_operations import OperationsConformance
from .storage_retries import RetryConformance
from .storage_schedules import ScheduleConformance
from .storage_suspend import SuspendConformance


class StorageConformance(
    CoreConformance,
    RetryConformance,
    OperationsConformance,
    ScheduleConformance,
    SuspendConformance,
    IdentityConformance,
):
    """The behaviour every Storage must have. Needs a ``storage`` fixture."""


__all__ = [
    "LEASE",
    "T0",
    "CoreConformance",
    "IdentityConformance",
    "OperationsConformance",
    "ReplayReport",
    "RetryConformance",
    "ScheduleConformance",
    "StorageConformance",
    "SuspendConformance",
    "call_record",
    "claimed",
    "new_job",
    "replay",
]
