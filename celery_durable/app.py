"""The Durable facade: settings, storage, the task decorator and the worker wiring."""

from __future__ import annotations

import difflib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from celery import Celery, signals
from sqlalchemy.engine import make_url

from . import dead_letters, operations
from .determinism import Determinism, check_determinism
from .dispatch import register_dispatch_task
from .enqueue import enqueue
from .errors import ConfigurationError, JobNotFound
from .events import Event, read_events
from .events import follow as events_follow
from .identifiers import check_job_id, check_job_ids, check_optional_name
from .inspection import (
    JobSummary,
    JobView,
    WorkerView,
    export_history,
    job_view,
    worker_view,
)
from .leases import LeaseKeeper
from .messages import send as send_message
from .observe import CallInfo, JobInfo, Observers
from .recovery import RecoverySweeper
from .retry import RetryPolicy, check_task_options
from .schedules import Schedule
from .scheduling import Schedules, _definition
from .settings import Settings, database_url_configured
from .store.base import CancelOutcome, Storage
from .store.sql import SQLStorage
from .task import DurableTask

logger = logging.getLogger(__name__)
_instances: weakref.WeakKeyDictionary[Celery, Durable] = weakref.WeakKeyDictionary()
_instances_lock = threading.Lock()

# Options Celery's @app.task understands beyond the Task class attributes.
_CELERY_DECORATOR_OPTIONS = frozenset(
    {
        "base",
        "bind",
        "name",
        "shared",
        "lazy",
        "filter",
        "typing",
        "pydantic",
        "pydantic_strict",
        "pydantic_context",
        "pydantic_dump_kwargs",
        "autoretry_for",
        "dont_autoretry_for",
        "retry_kwargs",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "queue",
        "routing_key",
        "exchange",
        "priority",
        "delivery_mode",
        "compression",
        "expires",
    }
)


class Durable:
    """Durable execution for one Celery app.

    ``Durable(app)`` reads the ``durable_*`` settings from ``app.conf``; keyword
    arguments override them. Nothing connects to the database until it is used.
    """

    def __init__(
        self,
        app: Celery,
        *,
        storage: Storage | None = None,
        clock: Callable[[], datetime] | None = None,
        **settings: Any,
    ) -> None:
        with _instances_lock:
            if app in _instances:
                raise ConfigurationError(
                    f"app {app.main!r} already has a Durable instance; get it with "
                    f"Durable.of(app) instead of creating a second one"
                )
            _instances[app] = self
        self.app = app
        self.settings = Settings.from_conf(app.conf, **settings)
        self._names_a_database = storage is not None or database_url_configured(app.conf, settings)
        self.call_policy = RetryPolicy(self.settings.call_retries, self.settings.call_backoff)
        """Retries and backoff of call()s whose task and call site set none."""
        self.determinism = check_determinism(self.settings.determinism, "durable_determinism")
        """The determinism mode of tasks that set none (see ``set_determinism``)."""
        self._storage = storage
        self._clock = clock or _utcnow
        self.lease_keeper = LeaseKeeper(
            lambda: self.storage,
            self.settings.lease_seconds,
            self.now,
            self.settings.cancel_check_interval,
        )
        self.sweeper = RecoverySweeper(self)
        self.observers = Observers()
        self.schedules = Schedules(self)
        """The database scheduler's management API (add, change, pause, ... runs)."""
        register_dispatch_task(app)
        _connect_worker_signals()

    @classmethod
    def of(cls, app: Celery) -> Durable:
        """The app's Durable, created from its settings on first use."""
        with _instances_lock:
            existing = _instances.get(app)
        return existing if existing is not None else cls(app)

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = SQLStorage(
                self.settings.database_url, table_prefix=self.settings.table_prefix
            )
        return self._storage

    def now(self) -> datetime:
        return self._clock()

    def deliver_by(self, eta: datetime | None) -> datetime:
        start = max(eta, self.now()) if eta is not None else self.now()
        return start + timedelta(seconds=self.settings.delivery_timeout)

    def task(self, *args: Any, **options: Any) -> Any:
        """``@durable.task`` / ``@durable.task(name=..., queue=...)``: a durable Celery task.

        Same as ``@app.task(base=DurableTask, ...)``, but unknown options are rejected.
        """
        _check_options(options)
        check_task_options(
            options,
            str(
                options.get("name") or getattr(args[0], "__name__", "?")
                if args
                else options.get("name", "?")
            ),
        )
        options.setdefault("base", DurableTask)
        if len(args) == 1 and callable(args[0]):
            return self.app.task(**options)(args[0])
        return self.app.task(*args, **options)

    def enqueue(
        self,
        task: Any,
        *args: Any,
        kwargs: dict[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: Any = None,
        at: datetime | None = None,
        unique: str | None = None,
        **options: Any,
    ) -> Any:
        """Enqueue a durable task (object or registered name); returns its AsyncResult.

        ``priority``: 0-9, higher runs first on every broker (mapped onto Redis's
        lower-first convention). ``delay`` (seconds or timedelta) / ``at`` (aware
        datetime): the job starts no earlier; waits longer than
        ``durable_max_countdown`` are kept in SQL and published when due. ``unique``:
        while a job with this key is pending, waiting, retrying or running, enqueueing
        again returns that job instead of creating one. Other options go to Celery.
        """
        return enqueue(
            self,
            task,
            args,
            kwargs,
            queue=queue,
            priority=priority,
            delay=delay,
            at=at,
            unique=unique,
            **options,
        )

    # -- hooks and middleware -------------------------------------------------------------

    def use(self, middleware: Any) -> Any:
        """Add a middleware (see ``celery_durable.observe``); returns it."""
        self.observers.use(middleware)
        return middleware

    def on_job_start(self, fn: Callable[[JobInfo], Any]) -> Callable[[JobInfo], Any]:
        """``@durable.on_job_start``: ``fn(job)`` when an execution starts."""
        self.observers.hooks.job_start.append(fn)
        return fn

    def on_job_complete(
        self, fn: Callable[[JobInfo, float], Any]
    ) -> Callable[[JobInfo, float], Any]:
        """``fn(job, duration)`` when a job succeeds (duration of that execution)."""
        self.observers.hooks.job_complete.append(fn)
        return fn

    def on_job_fail(
        self, fn: Callable[[JobInfo, BaseException | None], Any]
    ) -> Callable[[JobInfo, BaseException | None], Any]:
        """``fn(job, error)`` when a job fails for good (failed or dead-lettered)."""
        self.observers.hooks.job_fail.append(fn)
        return fn

    def on_retry(
        self, fn: Callable[[JobInfo, int, BaseException | None], Any]
    ) -> Callable[[JobInfo, int, BaseException | None], Any]:
        """``fn(job, attempt, error)`` when a job is scheduled again after an error (a
        call retry or a job retry); ``attempt`` is the number of the next attempt."""
        self.observers.hooks.retry.append(fn)
        return fn

    def on_checkpoint(
        self, fn: Callable[[JobInfo, CallInfo], Any]
    ) -> Callable[[JobInfo, CallInfo], Any]:
        """``fn(job, call)`` after a call's checkpoint is written."""
        self.observers.hooks.checkpoint.append(fn)
        return fn

    def events(
        self,
        since: str | datetime | None = None,
        *,
        follow: bool = True,
        poll_interval: float = 0.5,
    ) -> Iterator[Event]:
        """What every worker did (see ``celery_durable.events``), oldest first, from
        ``since`` (an event's ``cursor`` or a time); with ``follow``, forever."""
        if follow:
            return events_follow(self, since, poll_interval=poll_interval)
        return iter(read_events(self, since))

    def set_determinism(self, mode: Determinism | str) -> None:
        """The default determinism mode: "explicit", "strict" or "best_effort"."""
        self.determinism = check_determinism(mode, "determinism")

    def export_history(self, job_id: str) -> dict[str, Any]:
        """A job's recorded history as JSON-able data, for ``testing.replay`` in CI."""
        return export_history(self, check_job_id(job_id))

    def schedule(self, name: str, task: Any, when: Schedule, **options: Any) -> None:
        """Register a schedule in code: ``durable.schedule("cleanup", cleanup,
        every(hours=1), args=..., unique=True, queue=..., timezone=...)``.

        Beat (``celery beat -S durable``) writes it into the database when it starts;
        a schedule removed from code is disabled there. Options: args, kwargs, queue,
        priority, unique (skip a tick while the previous run is active), missed ("once",
        "skip" or "all"), catchup_limit, timezone (IANA; default the app's).
        """
        self.schedules.register(_definition(name, task, when, dict(options)))

    def migrate(self) -> list[int]:
        """Create or upgrade the tables (idempotent); returns the versions applied."""
        return self.storage.migrate()

    def pending_migrations(self) -> list[int]:
        """Schema versions ``migrate()`` would apply (empty when up to date)."""
        pending = getattr(self.storage, "pending_migrations", None)
        return list(pending()) if pending is not None else []

    def get_job(self, job_id: str) -> JobView:
        """The job's state, result/error, timestamps and call timeline.

        Raises JobNotFound for an id no job has.
        """
        job = self.storage.get_job(check_job_id(job_id))
        if job is None:
            raise JobNotFound(job_id)
        return job_view(
            job,
            self.storage.load_history(job_id),
            self.storage.job_errors(job_id) if job.failures or job.requeues else [],
        )

    # -- operations -------------------------------------------------------------------------

    def jobs(
        self,
        *,
        states: str | Iterable[str] | None = None,
        task: str | None = None,
        queue: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobSummary]:
        """Jobs, newest first; ``since``/``until`` bound when they were enqueued."""
        task = check_optional_name(task, "task")
        queue = check_optional_name(queue, "queue")
        return operations.list_jobs(
            self,
            states=states,
            task=task,
            queue=queue,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )

    def retry(self, job_id: str, *, from_scratch: bool = False) -> None:
        """Run a failed, dead or cancelled job again under the same id.

        Raises JobNotFound, or JobStateError if the job is active or succeeded."""
        operations.retry(self, check_job_id(job_id), from_scratch=from_scratch)

    def send(self, job_id: str, topic: str, payload: Any, *, key: str | None = None) -> bool:
        """Send a message to a job; its body takes it with ``receive(topic)``.

        Wakes the job if it waits for this topic. ``key``: an idempotency key, so a
        sender that retries sends once (returns False for a repeat). Raises JobNotFound,
        or JobStateError for a job that has finished."""
        return send_message(self, check_job_id(job_id), topic, payload, key=key)

    def cancel(self, job_id: str, *, revoke: bool = False) -> CancelOutcome:
        """Cancel a job for good (see the README); raises JobNotFound."""
        return operations.cancel(self, check_job_id(job_id), revoke=revoke)

    def workers(self) -> list[WorkerView]:
        """The `celery worker`s that wrote a heartbeat in the last day, by name; each
        one's recovery sweeper writes it once per ``durable_sweep_interval``."""
        now = self.now()
        return [
            worker_view(w, now, self.settings.sweep_interval) for w in self.storage.list_workers()
        ]

    def recover(self, *, dry_run: bool = False) -> list[str]:
        """Run one recovery sweep now; returns the ids republished or ended."""
        return self.sweeper.sweep_once(dry_run=dry_run)

    def apply_retention(self, *, dry_run: bool = False) -> dict[str, int]:
        """Delete finished jobs past ``durable_retention`` now; counts per state."""
        return operations.apply_retention(self, dry_run=dry_run)

    # -- the dead-letter queue ------------------------------------------------------------

    def dead_letters(
        self,
        *,
        task: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobSummary]:
        """Dead letters, newest first; ``since``/``until`` bound when they died."""
        return dead_letters.list_dead(
            self,
            task=check_optional_name(task, "task"),
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )

    def dead_letter(self, job_id: str) -> JobView:
        """One dead letter with every failed execution and its call timeline.

        Raises JobNotFound if no dead letter has this id."""
        return dead_letters.show_dead(self, check_job_id(job_id))

    def requeue(self, job_ids: str | Iterable[str], *, from_scratch: bool = False) -> list[str]:
        """Run dead letters again (same job id); returns the ids requeued.

        Completed calls before the first failure replay unless ``from_scratch``."""
        ids = check_job_ids([job_ids] if isinstance(job_ids, str) else job_ids)
        return dead_letters.requeue(self, ids, from_scratch=from_scratch)

    def purge_dead_letters(
        self,
        job_ids: Iterable[str] | None = None,
        *,
        task: str | None = None,
        before: datetime | None = None,
    ) -> int:
        """Delete dead letters for good; returns how many were deleted."""
        return dead_letters.purge(
            self,
            None if job_ids is None else check_job_ids(job_ids),
            task=check_optional_name(task, "task"),
            before=before,
        )


_signals_connected = False


def _connect_worker_signals() -> None:
    global _signals_connected
    with _instances_lock:
        if not _signals_connected:
            signals.worker_ready.connect(_start_recovery, weak=False)
            signals.worker_shutting_down.connect(_stop_recovery, weak=False)
            signals.task_revoked.connect(_cancel_revoked, weak=False)
            signals.worker_process_shutdown.connect(_forget_process_metrics, weak=False)
            _signals_connected = True


def _start_recovery(sender: Any = None, **_: Any) -> None:
    """In the worker's main process, once the pool is up (sender: the consumer)."""
    durable = _instances.get(getattr(sender, "app", None))  # type: ignore[arg-type]
    if durable is None:
        return
    _warn_if_the_store_is_a_local_file(durable)
    if durable.settings.recovery:
        durable.sweeper.start(getattr(sender, "hostname", None), _consumed_queues(durable))
    if durable.settings.metrics_port:
        from .metrics import start_exporter

        try:
            start_exporter(durable, durable.settings.metrics_port)
        except OSError:
            logger.exception(
                "durable: cannot serve metrics on port %d", durable.settings.metrics_port
            )


# Brokers that live on this machine anyway: a SQLite store beside them is the embedded
# default working as meant.
_LOCAL_BROKERS = frozenset({"", "memory", "filesystem", "sqla+sqlite", "sqlite"})


def _warn_if_the_store_is_a_local_file(durable: Durable) -> None:
    """A worker of a networked broker whose app names no database: every worker (and
    every working directory) gets a SQLite file of its own, which is never what was
    meant (the usual cause: settings under a namespace that were not read)."""
    scheme = str(durable.app.conf.broker_url or "").split("://", 1)[0].lower()
    if durable._names_a_database or scheme in _LOCAL_BROKERS:
        return
    path = os.path.abspath(make_url(durable.settings.database_url).database or "")
    logger.warning(
        "durable_database_url is not set: this worker keeps its durable jobs in the SQLite "
        "file %s, which workers on other hosts or in other directories do not share. Set "
        "app.conf.durable_database_url (CELERY_DURABLE_DATABASE_URL with Django's CELERY "
        "namespace).",
        path,
    )


def _consumed_queues(durable: Durable) -> list[str]:
    try:
        return sorted(durable.app.amqp.queues.consume_from or durable.app.amqp.queues)
    except Exception:  # informational only
        return []


def _forget_process_metrics(pid: int | None = None, **_: Any) -> None:
    from .metrics import mark_process_dead

    mark_process_dead(pid or os.getpid())


def _cancel_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    """Celery revoked a durable task (``AsyncResult.revoke()``, ``expires``): cancel the
    job in SQL too, or recovery would publish it again."""
    durable = _instances.get(getattr(sender, "app", None))  # type: ignore[arg-type]
    job_id = getattr(request, "id", None)
    if durable is None or job_id is None or not isinstance(sender, DurableTask):
        return
    try:
        durable.cancel(job_id, revoke=False)
    except Exception:
        logger.warning(
            "durable job %s was revoked but could not be cancelled", job_id, exc_info=True
        )


def _stop_recovery(how: str = "Warm", **_: Any) -> None:
    """Warm shutdown begins (in the main process, inside its signal handler)."""
    from .shutdown import start_grace_period

    for durable in list(_instances.values()):
        durable.sweeper.stop()
        if how == "Warm" and durable.sweeper.started:
            start_grace_period(durable)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _check_options(options: dict[str, Any]) -> None:
    known = _CELERY_DECORATOR_OPTIONS | {a for a in dir(DurableTask) if not a.startswith("_")}
    for option in options:
        if option not in known:
            close = difflib.get_close_matches(option, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(f"unknown durable task option {option!r}{hint}")
