"""The runtime: everything the engine needs from outside, given to it as one object.

The engine never looks up the ``Durable`` facade. It is handed a ``Runtime``: the Celery
app it publishes through, the settings, the store, the clock, the observers
(hooks and middleware), the lease keeper and the defaults the facade can change. The
facade (``celery_durable.app``) builds one per app and registers it here, so that a
``DurableTask`` bound to the app (which Celery instantiates, not us) finds it.

``runtime_of(app)`` also covers ``@app.task(base=DurableTask)`` used without a facade
(a documented way to start): the facade module registers, once, the factory that builds
the app's ``Durable`` on first use. That callback is the one place the engine reaches
upward, and it is handed to it from above; the registry exists because Celery gives a
task class only its app.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from celery import Celery

from ..determinism import Determinism, check_determinism
from ..observability.hooks import Observers
from ..retry import RetryPolicy
from ..settings import Settings
from ..store.protocol import Storage
from .leases import LeaseKeeper

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Runtime:
    app: Celery
    settings: Settings
    open_storage: Callable[[Settings], Storage]
    """Opens the store on first use (the facade passes the SQL store of
    ``durable_database_url``, or the store it was given)."""
    clock: Clock = utcnow
    observers: Observers = field(default_factory=Observers)
    call_policy: RetryPolicy = field(init=False)
    """Retries and backoff of calls whose task and call site set none."""
    determinism: Determinism = field(init=False)
    """The determinism mode of tasks that set none."""
    lease_keeper: LeaseKeeper = field(init=False)
    ambient_transaction: Callable[[], Any] | None = None
    """The transaction an enqueue that names none joins, if there is one open (set by
    ``celery_durable.contrib.django.join_transactions``): returns it, or None."""

    def __post_init__(self) -> None:
        self._storage: Storage | None = None
        self.lease_keeper = LeaseKeeper(
            lambda: self.storage,
            self.settings.lease_seconds,
            self.now,
            self.settings.cancel_check_interval,
        )
        self.configure(self.settings)

    def configure(self, settings: Settings) -> None:
        """Take new settings, and what derives from them (the defaults, the lease)."""
        self.settings = settings
        self.call_policy = RetryPolicy(settings.call_retries, settings.call_backoff)
        self.determinism = check_determinism(settings.determinism, "durable_determinism")
        self.lease_keeper.configure(settings.lease_seconds, settings.cancel_check_interval)

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = self.open_storage(self.settings)
        return self._storage

    def now(self) -> datetime:
        return self.clock()

    def deliver_by(self, eta: datetime | None) -> datetime:
        """When a job published now (or due at ``eta``) is sent again if nobody claimed
        it: ``durable_delivery_timeout`` after it is due."""
        start = max(eta, self.now()) if eta is not None else self.now()
        return start + timedelta(seconds=self.settings.delivery_timeout)


_runtimes: weakref.WeakKeyDictionary[Celery, Runtime] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_factory: Callable[[Celery], Runtime] | None = None


def register(app: Celery, runtime: Runtime) -> None:
    with _lock:
        _runtimes[app] = runtime


def registered(app: Celery) -> Runtime | None:
    with _lock:
        return _runtimes.get(app)


def set_factory(factory: Callable[[Celery], Runtime]) -> None:
    """How to build the runtime of an app that has none yet (set by the facade)."""
    global _factory
    _factory = factory


def runtime_of(app: Celery) -> Runtime:
    """The app's runtime, built from its settings on first use."""
    runtime = registered(app)
    if runtime is not None:
        return runtime
    if _factory is None:  # pragma: no cover - the package import sets it
        raise RuntimeError("celery_durable.app was not imported: no runtime factory")
    return _factory(app)
