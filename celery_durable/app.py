"""The Durable facade: the composition root and the API users call.

``Durable(app)`` builds the pieces and wires them together: the settings, the runtime
the engine is given (store, clock, observers, lease keeper), the schedules, the recovery
sweeper and the worker's signal handlers. Its methods are the public API; each delegates
to the layer that does the work (``engine``, ``operations``, ``scheduling``,
``worker``). Nothing below this module imports it.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import logging
import math
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

from celery import Celery, Task, group
from celery.canvas import Signature
from celery.result import AsyncResult, GroupResult

from .determinism import Determinism, check_determinism
from .engine import runtime as runtimes
from .engine.child_task import register_dispatch_task
from .engine.enqueue import broker_priority
from .engine.enqueue_many import enqueue_many
from .engine.flow import check_limits
from .engine.leases import LeaseKeeper
from .engine.runtime import Runtime, utcnow
from .engine.task import DurableTask
from .errors import ConfigurationError, JobNotFound
from .identifiers import check_job_id, check_job_ids, check_optional_name
from .observability.hooks import CallInfo, JobInfo, Observers
from .operations import dead_letters, jobs, pauses, results, retention
from .operations.events import Event, read_events
from .operations.events import follow as events_follow
from .operations.messages import send as send_message
from .operations.views import (
    JobSummary,
    JobView,
    WorkerView,
    export_history,
    job_view,
    worker_view,
)
from .retry import RetryPolicy, check_task_options
from .scheduling.definition import definition_from
from .scheduling.kinds import Schedule
from .scheduling.registry import Schedules
from .settings import Settings, database_url_configured
from .store.protocol import Storage
from .store.records import CancelOutcome, JobFilter
from .store.sql import SQLStorage
from .worker import signals as worker_signals
from .worker.recovery import RecoverySweeper

_logger = logging.getLogger(__name__)
M = TypeVar("M")
"""A middleware: a ``celery_durable.Middleware`` or any object with some of its hooks."""
OnStart = TypeVar("OnStart", bound=Callable[[JobInfo], Any])
OnComplete = TypeVar("OnComplete", bound=Callable[[JobInfo, float], Any])
OnFail = TypeVar("OnFail", bound=Callable[[JobInfo, "BaseException | None"], Any])
OnRetry = TypeVar("OnRetry", bound=Callable[[JobInfo, int, "BaseException | None"], Any])
OnCheckpoint = TypeVar("OnCheckpoint", bound=Callable[[JobInfo, CallInfo], Any])
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
    arguments override them. ``storage=`` runs on a store of your own (a
    ``MemoryStorage`` in tests); ``clock=`` replaces the UTC clock. Nothing connects to
    the database until it is used.
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
        self.runtime = Runtime(
            app,
            Settings.from_conf(app.conf, **settings),
            open_storage=(lambda _: storage) if storage is not None else _sql_storage,
            clock=clock or utcnow,
        )
        """What the engine is given: store, clock, settings, observers, lease keeper."""
        runtimes.register(app, self.runtime)
        self.sweeper = RecoverySweeper(self.runtime, chores=[self._apply_retention_quietly])
        self.schedules = Schedules(self.runtime)
        """The database scheduler's management API (add, change, pause, ... runs)."""
        register_dispatch_task(app)
        worker_signals.install(
            worker_signals.WorkerSide(
                self.runtime,
                self.sweeper,
                names_a_database=storage is not None or database_url_configured(app.conf, settings),
            )
        )

    @classmethod
    def of(cls, app: Celery) -> Durable:
        """The app's Durable, created from its settings on first use."""
        with _instances_lock:
            existing = _instances.get(app)
        return existing if existing is not None else cls(app)

    # -- what the runtime holds, for code that used to reach it here ----------------------

    @property
    def settings(self) -> Settings:
        """The ``durable_*`` settings in force. Assigning new ones (``dataclasses.replace``)
        also resets what derives from them: the call retry default, the determinism
        default and the lease timings."""
        return self.runtime.settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        self.runtime.configure(value)

    @property
    def storage(self) -> Storage:
        """The durable store (opened on first use)."""
        return self.runtime.storage

    @property
    def observers(self) -> Observers:
        """The hooks and middleware, in order (see ``use`` and the ``on_*`` hooks)."""
        return self.runtime.observers

    @property
    def lease_keeper(self) -> LeaseKeeper:
        return self.runtime.lease_keeper

    @property
    def call_policy(self) -> RetryPolicy:
        """Retries and backoff of call()s whose task and call site set none."""
        return self.runtime.call_policy

    @call_policy.setter
    def call_policy(self, value: RetryPolicy) -> None:
        self.runtime.call_policy = value

    @property
    def determinism(self) -> Determinism:
        """The determinism mode of tasks that set none (see ``set_determinism``)."""
        return self.runtime.determinism

    @determinism.setter
    def determinism(self, value: Determinism | str) -> None:
        self.runtime.determinism = check_determinism(value, "determinism")

    def now(self) -> datetime:
        return self.runtime.now()

    def deliver_by(self, eta: datetime | None) -> datetime:
        return self.runtime.deliver_by(eta)

    def task(self, *args: Any, **options: Any) -> Any:
        """``@durable.task`` / ``@durable.task(name=..., queue=...)``: a durable Celery task.

        Same as ``@app.task(base=DurableTask, ...)``, but unknown options are rejected
        with the closest known one. Returns the task (used bare) or the decorator (used
        with options), as ``app.task`` does.
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
        check_limits(
            _FlowOptions(options),
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
        task: DurableTask | str,
        *args: Any,
        kwargs: dict[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
        unique: str | None = None,
        debounce: tuple[str, float | timedelta] | None = None,
        debounce_keep: str | None = None,
        connection: Any = None,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue a durable task (object or registered name); returns its AsyncResult.

        ``priority``: 0-9, higher runs first on every broker (mapped onto Redis's
        lower-first convention). ``delay`` (seconds or timedelta) / ``at`` (aware
        datetime): the job starts no earlier; waits longer than
        ``durable_max_countdown`` are kept in SQL and published when due. ``unique``:
        while a job with this key is pending, waiting, retrying or running, enqueueing
        again returns that job instead of creating one. ``debounce=(key, window)``:
        enqueues with this key while its job has not started collapse into that one
        job, which starts ``window`` after the last of them, with the latest arguments
        (``debounce_keep="first"``: the first). ``connection``: a SQLAlchemy Session or
        Connection in an open transaction on the store's database: the job's row is
        written in that transaction and its message sent only after it commits (never
        for one that rolls back). Other options go to Celery.
        """
        target = self.app.tasks.get(task) if isinstance(task, str) else task
        if not isinstance(target, DurableTask):
            raise ConfigurationError(
                f"enqueue() takes a durable task or its registered name, got {task!r}; "
                f"plain Celery tasks keep apply_async()"
            )
        if queue is not None:
            options["queue"] = queue
        if priority is not None:
            options["priority"] = broker_priority(self.app, priority)
        if connection is not None:
            options["connection"] = connection
        if debounce is not None or debounce_keep is not None:
            options.update(debounce=debounce, debounce_keep=debounce_keep)
        result: AsyncResult = target.apply_async(
            args, kwargs, delay=delay, at=at, unique=unique, **options
        )
        return result

    def enqueue_many(
        self, batch: group | Iterable[Signature[Any]]
    ) -> GroupResult | list[AsyncResult[Any]]:
        """Enqueue many durable jobs with one write: ``batch`` is signatures of durable
        tasks (``[charge.s(order) for order in orders]``, options with ``.set(queue=...,
        delay=...)``) or a ``group`` of them.

        Every signature is checked first; then all the rows are written in one
        transaction (multi-row INSERTs), then the messages are published: a list gives
        a list of AsyncResults, a group goes through Celery's group machinery and gives
        its GroupResult. A signature that does not validate, or an id that exists
        already, fails the whole batch with nothing written or sent. ``unique=`` is
        not taken here (keys are settled one job at a time: ``enqueue``).
        """
        return enqueue_many(self.runtime, batch)

    # -- hooks and middleware -------------------------------------------------------------

    def use(self, middleware: M) -> M:
        """Add a middleware (a ``Middleware`` subclass, or any object with some of its
        hooks; see ``celery_durable.observability.hooks``); returns it."""
        self.observers.use(middleware)
        return middleware

    def on_job_start(self, fn: OnStart) -> OnStart:
        """``@durable.on_job_start``: ``fn(job)`` when an execution starts."""
        self.observers.hooks.job_start.append(fn)
        return fn

    def on_job_complete(self, fn: OnComplete) -> OnComplete:
        """``fn(job, duration)`` when a job succeeds (duration of that execution)."""
        self.observers.hooks.job_complete.append(fn)
        return fn

    def on_job_fail(self, fn: OnFail) -> OnFail:
        """``fn(job, error)`` when a job fails for good (failed or dead-lettered)."""
        self.observers.hooks.job_fail.append(fn)
        return fn

    def on_retry(self, fn: OnRetry) -> OnRetry:
        """``fn(job, attempt, error)`` when a job is scheduled again after an error (a
        call retry or a job retry); ``attempt`` is the number of the next attempt."""
        self.observers.hooks.retry.append(fn)
        return fn

    def on_checkpoint(self, fn: OnCheckpoint) -> OnCheckpoint:
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
        """What every worker did (see ``celery_durable.operations.events``), oldest first, from
        ``since`` (an event's ``cursor`` or a time); with ``follow``, forever."""
        if follow:
            return events_follow(self.runtime, since, poll_interval=poll_interval)
        return iter(read_events(self.runtime, since))

    def set_determinism(self, mode: Determinism | str) -> None:
        """The default determinism mode: "explicit", "strict" or "best_effort"."""
        self.runtime.determinism = check_determinism(mode, "determinism")

    def export_history(self, job_id: str) -> dict[str, Any]:
        """A job's recorded history as JSON-able data, for ``testing.replay`` in CI."""
        return export_history(self.runtime, check_job_id(job_id))

    def schedule(self, name: str, task: Task | str, when: Schedule, **options: Any) -> None:
        """Register a schedule in code: ``durable.schedule("cleanup", cleanup,
        every(hours=1), args=..., unique=True, queue=..., timezone=...)``.

        Beat (``celery beat -S durable``) writes it into the database when it starts;
        a schedule removed from code is disabled there. Options: args, kwargs, queue,
        priority, unique (skip a tick while the previous run is active), missed ("once",
        "skip" or "all"), catchup_limit, timezone (IANA; default the app's).
        """
        self.schedules.register(definition_from(name, task, when, dict(options)))

    def migrate(self) -> list[int]:
        """Create or upgrade the tables (idempotent); returns the versions applied."""
        return self.storage.migrate()

    def pending_migrations(self) -> list[int]:
        """Schema versions ``migrate()`` would apply (empty when up to date)."""
        return self.storage.pending_migrations()

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

    def result(self, job_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the job to finish and return its result, read from its row (no Celery
        result backend needed). Raises JobFailedError if it failed, died or was
        cancelled, TimeoutError after ``timeout`` seconds, JobNotFound."""
        return results.wait_result(self.runtime, check_job_id(job_id), _timeout(timeout))

    # -- the async client API: the same operations, awaitable (each read or write runs
    # in a thread, so an event loop never blocks on the database) -------------------------

    async def aenqueue(self, task: DurableTask | str, *args: Any, **options: Any) -> AsyncResult:
        """``enqueue`` for async code (FastAPI, ...): the same arguments and result, but
        no ``connection=``: it runs in another thread, outside your transaction."""
        if options.get("connection") is not None:
            raise ConfigurationError(
                "aenqueue() cannot join your transaction (connection=): it runs in a "
                "thread of its own. Call enqueue(..., connection=...) where the "
                "transaction's code runs (in asyncio.to_thread with the rest of it)"
            )
        return await asyncio.to_thread(functools.partial(self.enqueue, task, *args, **options))

    async def aget_job(self, job_id: str) -> JobView:
        """``get_job`` for async code."""
        return await asyncio.to_thread(self.get_job, job_id)

    async def asend(self, job_id: str, topic: str, payload: Any, *, key: str | None = None) -> bool:
        """``send`` for async code."""
        return await asyncio.to_thread(
            functools.partial(self.send, job_id, topic, payload, key=key)
        )

    async def aresult(self, job_id: str, *, timeout: float | None = None) -> Any:
        """``result`` for async code: waits without blocking the loop."""
        return await results.await_result(self.runtime, check_job_id(job_id), _timeout(timeout))

    # -- operations -------------------------------------------------------------------------

    def jobs(
        self,
        *,
        states: str | Iterable[str] | None = None,
        task: str | None = None,
        queue: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        id_prefix: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobSummary]:
        """Jobs, newest first; ``since``/``until`` bound when they were enqueued;
        ``id_prefix``: ids that start with it."""
        where = self._job_filter(states, task, queue, since, until, id_prefix, limit, offset)
        return jobs.list_jobs(self.runtime, where)

    def job_counts(
        self,
        *,
        task: str | None = None,
        queue: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        id_prefix: str | None = None,
    ) -> dict[str, int]:
        """How many jobs match, for every state (the filters of ``jobs()``)."""
        where = self._job_filter(None, task, queue, since, until, id_prefix, 0, 0)
        return jobs.count_jobs(self.runtime, where)

    def throughput(self, minutes: int = 60) -> list[tuple[datetime, str, int]]:
        """(UTC minute, state, how many) of the jobs that finished in the last
        ``minutes`` minutes, oldest first."""
        if not 1 <= minutes <= 24 * 60:
            raise ValueError(f"minutes must be between 1 and 1440, got {minutes!r}")
        return jobs.throughput(self.runtime, minutes)

    def _job_filter(
        self,
        states: str | Iterable[str] | None,
        task: str | None,
        queue: str | None,
        since: datetime | None,
        until: datetime | None,
        id_prefix: str | None,
        limit: int,
        offset: int,
    ) -> JobFilter:
        return jobs.job_filter(
            states=states,
            task=check_optional_name(task, "task"),
            queue=check_optional_name(queue, "queue"),
            since=since,
            until=until,
            id_prefix=None if id_prefix is None else check_job_id(id_prefix, "id_prefix"),
            limit=limit,
            offset=offset,
        )

    def retry(self, job_id: str, *, from_scratch: bool = False) -> None:
        """Run a failed, dead or cancelled job again under the same id.

        Raises JobNotFound, or JobStateError if the job is active or succeeded."""
        jobs.retry(self.runtime, check_job_id(job_id), from_scratch=from_scratch)

    def send(self, job_id: str, topic: str, payload: Any, *, key: str | None = None) -> bool:
        """Send a message to a job; its body takes it with ``receive(topic)``.

        Wakes the job if it waits for this topic. ``key``: an idempotency key, so a
        sender that retries sends once (returns False for a repeat). Raises JobNotFound,
        or JobStateError for a job that has finished."""
        return send_message(self.runtime, check_job_id(job_id), topic, payload, key=key)

    def cancel(self, job_id: str, *, revoke: bool = False) -> CancelOutcome:
        """Cancel a job for good: pending, it never starts; running, it gets ``Cancelled``
        at its next call; never resumed by recovery; the children it waits for too.
        ``revoke=True`` also broadcasts Celery's revoke. Raises JobNotFound."""
        return jobs.cancel(self.runtime, check_job_id(job_id), revoke=revoke)

    def workers(self) -> list[WorkerView]:
        """The `celery worker`s that wrote a heartbeat in the last day, by name; each
        one's recovery sweeper writes it once per ``durable_sweep_interval``."""
        now = self.now()
        return [
            worker_view(w, now, self.settings.sweep_interval) for w in self.storage.list_workers()
        ]

    def _apply_retention_quietly(self) -> None:
        """The sweeper's retention chore (a worker logs what it deleted)."""
        deleted = self.apply_retention()
        if any(deleted.values()):
            _logger.info("retention deleted finished jobs: %s", deleted)

    def recover(self, *, dry_run: bool = False) -> list[str]:
        """Run one recovery sweep now; returns the ids republished or ended."""
        return self.sweeper.sweep_once(dry_run=dry_run)

    def apply_retention(self, *, dry_run: bool = False) -> dict[str, int]:
        """Delete finished jobs past ``durable_retention`` now; counts per state."""
        return retention.apply_retention(self.runtime, dry_run=dry_run)

    # -- paused queues and tasks ---------------------------------------------------------

    def pause(self, *, queue: str | None = None, task: str | None = None) -> bool:
        """Pause a queue or a task (give one): its jobs are not started, on any
        worker, until ``resume``; they wait in SQL, holding no worker slot. Running jobs
        finish. False if it was paused already."""
        return pauses.pause(self.runtime, queue=queue, task=task)

    def resume(self, *, queue: str | None = None, task: str | None = None) -> int | None:
        """Resume a paused queue or task: the jobs it held are published, oldest
        first. Returns how many, or None if it was not paused."""
        return pauses.resume(self.runtime, queue=queue, task=task)

    def paused(self) -> list[pauses.PauseView]:
        """Every paused queue and task."""
        return pauses.paused(self.runtime)

    def queues(self) -> list[pauses.QueueView]:
        """Queues with unfinished jobs or a pause: jobs by state, from SQL."""
        return pauses.queues(self.runtime)

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
            self.runtime,
            task=check_optional_name(task, "task"),
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )

    def dead_letter(self, job_id: str) -> JobView:
        """One dead letter with every failed execution and its call timeline.

        Raises JobNotFound if no dead letter has this id."""
        return dead_letters.show_dead(self.runtime, check_job_id(job_id))

    def requeue(self, job_ids: str | Iterable[str], *, from_scratch: bool = False) -> list[str]:
        """Run dead letters again (same job id); returns the ids requeued.

        Completed calls before the first failure replay unless ``from_scratch``."""
        ids = check_job_ids([job_ids] if isinstance(job_ids, str) else job_ids)
        return dead_letters.requeue(self.runtime, ids, from_scratch=from_scratch)

    def purge_dead_letters(
        self,
        job_ids: Iterable[str] | None = None,
        *,
        task: str | None = None,
        before: datetime | None = None,
    ) -> int:
        """Delete dead letters for good; returns how many were deleted."""
        return dead_letters.purge(
            self.runtime,
            None if job_ids is None else check_job_ids(job_ids),
            task=check_optional_name(task, "task"),
            before=before,
        )


class _FlowOptions:
    """Decorator options read like a task class's flow attributes (rate_limit= is
    ours on a durable task)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.concurrency = options.get("concurrency")
        self.concurrency_key = options.get("concurrency_key")
        self.rate_limit_key = options.get("rate_limit_key")
        self.durable_rate_limit = options.get("rate_limit", options.get("durable_rate_limit"))


def _timeout(timeout: float | None) -> float | None:
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout < 0
    ):
        raise ValueError(f"timeout must be seconds >= 0 or None, not {timeout!r}")
    return timeout


def _check_options(options: dict[str, Any]) -> None:
    known = _CELERY_DECORATOR_OPTIONS | {a for a in dir(DurableTask) if not a.startswith("_")}
    for option in options:
        if option not in known:
            close = difflib.get_close_matches(option, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(f"unknown durable task option {option!r}{hint}")


def _sql_storage(settings: Settings) -> Storage:
    return SQLStorage(
        settings.database_url,
        table_prefix=settings.table_prefix,
        synchronous_commit=settings.synchronous_commit,
        relaxed_checkpoints=settings.relaxed_checkpoints,
    )


runtimes.set_factory(lambda app: Durable.of(app).runtime)
