"""Helpers for users' own tests, and the storage conformance suite.

A third-party Storage proves itself by subclassing ``StorageConformance`` in a pytest
module and providing a ``storage`` fixture that yields a fresh, migrated store::

    class TestMyStore(StorageConformance):
        @pytest.fixture
        def storage(self):
            store = MyStore(...); store.migrate(); yield store; store.drop()
"""

from __future__ import annotations

from .conformance.core import LEASE, T0, CoreConformance, call_record, claimed, new_job
from .conformance.flow import FlowConformance
from .conformance.identity import IdentityConformance
from .conformance.operations import OperationsConformance
from .conformance.retries import RetryConformance
from .conformance.schedules import ScheduleConformance
from .conformance.suspend import SuspendConformance
from .replay import ReplayReport, replay


class StorageConformance(
    CoreConformance,
    RetryConformance,
    OperationsConformance,
    ScheduleConformance,
    SuspendConformance,
    IdentityConformance,
    FlowConformance,
):
    """The behaviour every Storage must have. Needs a ``storage`` fixture."""


__all__ = [
    "LEASE",
    "T0",
    "CoreConformance",
    "FlowConformance",
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
