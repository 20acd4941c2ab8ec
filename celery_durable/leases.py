"""Lease renewal inside the process that runs the jobs.

One daemon thread per process (started lazily, so a prefork child starts its own after
fork) renews every held lease a third of the lease time before it would expire. Jobs
shorter than that never cost a renewal. A renewal that finds another owner sets the
execution's ``lost`` event; its next call() then stops with LeaseLost.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from .store.base import Lease, Storage

logger = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, storage: Callable[[], Storage], lease_seconds: float,
                 clock: Callable[[], datetime]) -> None:
        self._storage = storage
        self._lease = timedelta(seconds=lease_seconds)
        self._clock = clock
        self._held: dict[Lease, threading.Event] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, lease: Lease) -> threading.Event:
        lost = threading.Event()
        with self._lock:
            self._held[lease] = lost
            if self._thread is None or self._pid != os.getpid():
                self._start()
        return lost

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self._held.pop(lease, None)

    def _start(self) -> None:
        self._pid = os.getpid()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celery-durable-leases",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self._lease.total_seconds() / 3
        while not self._wake.wait(interval):
            self.renew_all()

    def renew_all(self) -> None:
        with self._lock:
            held = list(self._held.items())
        for lease, lost in held:
            try:
                if not self._storage().renew_lease(lease, self._clock() + self._lease):
                    lost.set()
            except Exception:  # the next renewal tries again; fenced writes stay safe
                logger.warning("could not renew the lease on job %s", lease.job_id,
                               exc_info=True)
