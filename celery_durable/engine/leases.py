"""Lease renewal and cancel requests, watched inside the process that runs the jobs.

One daemon thread per process (started lazily, so a prefork child starts its own after
fork) renews every held lease a third of the lease time before it would expire. Jobs
shorter than that never cost a renewal. A renewal that finds another owner sets the
execution's ``lost`` event; its next call() then stops with LeaseLost.

The same thread asks, every ``durable_cancel_check_interval`` while it holds leases,
which of its jobs have a cancel request (one query for all of them) and sets their
``cancelled`` event; the job's next call() then raises Cancelled.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..errors import StorageUnavailable
from ..store.protocol import Storage
from ..store.records import Lease

logger = logging.getLogger(__name__)


@dataclass
class Watch:
    """What the keeper tells one execution (and the child scopes it runs in-process)."""

    lost: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_raised: bool = False
    """Cancelled was raised into the body once; later calls run (compensation)."""


class LeaseKeeper:
    def __init__(
        self,
        storage: Callable[[], Storage],
        lease_seconds: float,
        clock: Callable[[], datetime],
        cancel_check_interval: float = 2.0,
    ) -> None:
        self._storage = storage
        self._lease = timedelta(seconds=lease_seconds)
        self._clock = clock
        self._cancel_interval = cancel_check_interval
        self._held: dict[Lease, Watch] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def configure(self, lease_seconds: float, cancel_check_interval: float) -> None:
        """New timings (new settings); a running thread picks them up at its next wait."""
        self._lease = timedelta(seconds=lease_seconds)
        self._cancel_interval = cancel_check_interval

    def hold(self, lease: Lease) -> Watch:
        watch = Watch()
        with self._lock:
            self._held[lease] = watch
            if self._thread is None or self._pid != os.getpid():
                self._start()
        return watch

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self._held.pop(lease, None)

    def _start(self) -> None:
        self._pid = os.getpid()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celery-durable-leases", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        renew_every = self._lease.total_seconds() / 3
        last_renewal = time.monotonic()
        while not self._wake.wait(min(renew_every, self._cancel_interval)):
            if time.monotonic() - last_renewal >= renew_every * 0.99:
                self.renew_all()
                last_renewal = time.monotonic()
            self.check_cancels()

    def renew_all(self) -> None:
        with self._lock:
            held = list(self._held.items())
        for lease, watch in held:
            try:
                if not self._storage().renew_lease(lease, self._clock() + self._lease):
                    watch.lost.set()
            except StorageUnavailable as exc:  # an outage: one line, not a traceback
                logger.warning("could not renew the lease on job %s: %s", lease.job_id, exc)
            except Exception:  # the next renewal tries again; fenced writes stay safe
                logger.warning("could not renew the lease on job %s", lease.job_id, exc_info=True)

    def check_cancels(self) -> None:
        with self._lock:
            watching = {
                lease.job_id: watch
                for lease, watch in self._held.items()
                if not watch.cancelled.is_set()
            }
        if not watching:
            return
        try:
            for job_id in self._storage().cancel_requested(list(watching)):
                watching[job_id].cancelled.set()
        except StorageUnavailable as exc:
            logger.warning("could not check for cancel requests: %s", exc)
        except Exception:
            logger.warning("could not check for cancel requests", exc_info=True)
