"""What runs inside `celery worker`, wired to Celery's signals once per process.

In the worker's main process, once the pool is up (``worker_ready``): the recovery
sweeper starts (and with it the heartbeat), the Prometheus exporter if configured, and a
warning if the store is a SQLite file nobody configured. On a warm shutdown
(``worker_shutting_down``): the sweeper stops and the bounded grace period starts. A
task Celery revoked (``task_revoked``) is cancelled in SQL, so recovery never brings it
back. The facade installs each app's worker side here; nothing in this module looks the
facade up.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from celery import Celery, signals
from sqlalchemy.engine import make_url

from ..engine.cancellation import cancel_job
from ..engine.runtime import Runtime
from ..engine.task import DurableTask
from ..observability.prometheus import mark_process_dead, start_exporter
from .recovery import RecoverySweeper
from .shutdown import start_grace_period

logger = logging.getLogger(__name__)

# Brokers that live on this machine anyway: a SQLite store beside them is the embedded
# default working as meant.
_LOCAL_BROKERS = frozenset({"", "memory", "filesystem", "sqla+sqlite", "sqlite"})


@dataclass
class WorkerSide:
    runtime: Runtime
    sweeper: RecoverySweeper
    names_a_database: bool
    """The app (or the Durable(...) call) names its database: no fallback warning."""


_sides: weakref.WeakKeyDictionary[Celery, WorkerSide] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_connected = False


def install(side: WorkerSide) -> None:
    global _connected
    with _lock:
        _sides[side.runtime.app] = side
        if not _connected:
            signals.worker_ready.connect(_on_ready, weak=False)
            signals.worker_shutting_down.connect(_on_shutting_down, weak=False)
            signals.task_revoked.connect(_on_revoked, weak=False)
            signals.worker_process_shutdown.connect(_on_process_shutdown, weak=False)
            _connected = True


def _side_of(sender: Any) -> WorkerSide | None:
    app = getattr(sender, "app", None)
    with _lock:
        return _sides.get(app) if app is not None else None


def _on_ready(sender: Any = None, **_: Any) -> None:
    """In the worker's main process, once the pool is up (sender: the consumer)."""
    side = _side_of(sender)
    if side is None:
        return
    settings = side.runtime.settings
    warn_if_the_store_is_a_local_file(side)
    if settings.recovery:
        side.sweeper.start(getattr(sender, "hostname", None), _consumed_queues(side.runtime.app))
    if settings.metrics_port:
        try:
            start_exporter(side.runtime, settings.metrics_port)
        except OSError:
            logger.exception("durable: cannot serve metrics on port %d", settings.metrics_port)


def warn_if_the_store_is_a_local_file(side: WorkerSide) -> None:
    """A worker of a networked broker whose app names no database: every worker (and
    every working directory) gets a SQLite file of its own, which is never what was
    meant (the usual cause: settings under a namespace that were not read)."""
    runtime = side.runtime
    scheme = str(runtime.app.conf.broker_url or "").split("://", 1)[0].lower()
    if side.names_a_database or scheme in _LOCAL_BROKERS:
        return
    path = os.path.abspath(make_url(runtime.settings.database_url).database or "")
    logger.warning(
        "durable_database_url is not set: this worker keeps its durable jobs in the SQLite "
        "file %s, which workers on other hosts or in other directories do not share. Set "
        "app.conf.durable_database_url (CELERY_DURABLE_DATABASE_URL with Django's CELERY "
        "namespace).",
        path,
    )


def _consumed_queues(app: Celery) -> list[str]:
    try:
        return sorted(app.amqp.queues.consume_from or app.amqp.queues)
    except Exception:  # informational only
        return []


def _on_process_shutdown(pid: int | None = None, **_: Any) -> None:
    mark_process_dead(pid or os.getpid())


def _on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    """Celery revoked a durable task (``AsyncResult.revoke()``, ``expires``): cancel the
    job in SQL too, or recovery would publish it again."""
    side = _side_of(sender)
    job_id = getattr(request, "id", None)
    if side is None or job_id is None or not isinstance(sender, DurableTask):
        return
    try:
        cancel_job(side.runtime, job_id)
    except Exception:
        logger.warning(
            "durable job %s was revoked but could not be cancelled", job_id, exc_info=True
        )


def _on_shutting_down(how: str = "Warm", **_: Any) -> None:
    """Warm shutdown begins (in the main process, inside its signal handler)."""
    with _lock:
        sides = list(_sides.values())
    for side in sides:
        side.sweeper.stop()
        if how == "Warm" and side.sweeper.started:
            start_grace_period(side.runtime)
