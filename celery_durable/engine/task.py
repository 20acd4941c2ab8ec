"""DurableTask: the Celery Task base class whose body may make checkpointed calls."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from celery import Celery, Task
from celery.utils import uuid

from ..errors import ConfigurationError
from ..identifiers import check_name, check_new_job_id
from ..retry import Backoff, NoRetry, Seconds, check_task_options
from ..store.records import JobState, NewJob
from .context import peek_execution, take_inline
from .debounce import DEBOUNCED_HEADER, Debounce, check_debounce
from .enqueue import check_unique, due_header, due_time, new_job
from .flow import FlowLimits, check_keys, check_limits
from .outbox import (
    OUTBOX_HEADER,
    Transaction,
    check_same_database,
    store_of,
    transaction_of,
    visible_within,
    wait_until_visible,
)
from .recorded_errors import NOT_RETRYABLE
from .runner import has_canvas, release, run_job
from .runtime import runtime_of

logger = logging.getLogger(__name__)


class DurableTask(Task):
    """Use as ``@app.task(base=DurableTask)`` or through ``@durable.task``.

    Enqueueing writes the job row before the message is published (a row that cannot
    be written means no message); executing claims the job's lease, replays completed
    calls and records new ones.
    """

    # The message stays unacked until the job ends, and a killed pool child requeues it
    # rather than storing a false FAILURE (recovery resumes the job either way).
    acks_late = True
    reject_on_worker_lost = True
    _durable_limits: FlowLimits | None = None
    _durable_rate_taken = False

    # Retry policy; None means the app's ``durable_*`` default.
    retries: int | None = None
    """How many times the job runs again after its body failed."""
    backoff: Backoff | Seconds | None = None
    """Delay before each job retry."""
    on_exhausted: str | None = None
    """``"fail"`` or ``"dead_letter"``: what the job becomes when retries are spent."""
    call_retries: int | None = None
    """Default retries of the calls this task makes."""
    call_backoff: Backoff | Seconds | None = None
    determinism: str | None = None
    """"explicit", "strict" or "best_effort"; None: the app's default."""

    # Flow control, enforced in the database across every worker (``engine.flow``).
    concurrency: int | None = None
    """At most this many jobs of the task (of one ``concurrency_key``) run at once."""
    concurrency_key: Callable[..., Any] | None = None
    """A function of the job's arguments: the key ``concurrency`` counts per."""
    rate_limit_key: Callable[..., Any] | None = None
    """A function of the job's arguments: the key ``rate_limit`` counts per."""
    durable_rate_limit: str | float | None = None
    """``rate_limit=`` as given: on a durable task it holds for the whole deployment
    (Celery's own ``rate_limit`` is per worker, and stays None here)."""

    @classmethod
    def bind(cls, app: Celery) -> Any:
        # A rate_limit the task itself declares is ours, for every worker at once; one
        # Celery fills in (task_default_rate_limit, task_annotations) keeps its meaning.
        if not cls.__dict__.get("_durable_rate_taken"):
            declared = cls.__dict__.get("rate_limit")
            if declared is not None:
                cls.durable_rate_limit, cls.rate_limit = declared, None
            cls._durable_rate_taken = True
        return super().bind(app)

    @classmethod
    def on_bound(cls, app: Celery) -> None:
        name = cls.name or cls.__name__
        check_task_options(cls, name)
        cls._durable_limits = check_limits(cls, name)
        # Celery's autoretry wraps run() after this: errors no retry can help (NoRetry,
        # Cancelled, a divergence, ...) must pass through it untouched.
        extra = (NoRetry, *NOT_RETRYABLE)
        current = tuple(getattr(cls, "dont_autoretry_for", ()) or ())
        cls.dont_autoretry_for = (*current, *(e for e in extra if e not in current))
        runtime_of(app)  # `@app.task(base=DurableTask)` alone wires the worker side too

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if take_inline(self) or request.called_directly or request.id is None:
            # A plain function call (a test, a script, or call() running it in-process).
            return super().__call__(*args, **kwargs)
        return run_job(runtime_of(self.app), self, request, args, kwargs)

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Celery has continued the job's canvas (chain, links, chord) and stored its
        result: a later delivery of the finished job must not do it again. Subclasses
        that override this call ``super().on_success(...)``."""
        request = self.request
        canvas = getattr(request, "durable_canvas", None)  # decided before the body ran
        if not (has_canvas(request) if canvas is None else canvas):
            return  # nothing a duplicate delivery could repeat: no statement spent
        runtime = runtime_of(self.app)
        try:
            runtime.storage.mark_reported(task_id, runtime.now())
        except Exception:  # a duplicate delivery would continue the canvas once more
            logger.warning(
                "job %s: could not record that its canvas was continued", task_id, exc_info=True
            )

    def apply_async(
        self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any
    ) -> Any:
        """Celery's apply_async, plus ``delay=`` (seconds or timedelta), ``at=`` (an aware
        datetime) and ``unique=`` (a key): see ``Durable.enqueue``."""
        runtime = runtime_of(self.app)
        peeked = peek_execution()
        execution = None if peeked is None else peeked.body_scope
        if execution is not None and execution.job_id == task_id:
            if not execution.released:
                # self.retry() inside the body: hand the lease back before the retry
                # message can be delivered, or that delivery would find the job busy.
                eta = _eta(options.get("eta"), options.get("countdown"))
                release(runtime, execution.lease, JobState.RETRYING, runtime.deliver_by(eta))
                execution.released = True
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        _join_ambient(runtime, task_id, options)
        planned = self.plan_job(args, kwargs, task_id, options)
        if planned.transaction is not None:
            return self._enqueue_in_transaction(planned, args, kwargs)
        return self._store_and_send(planned, args, kwargs)

    def _store_and_send(self, planned: PlannedJob, args: Any, kwargs: Any) -> Any:
        runtime, job = runtime_of(self.app), planned.job
        held_when_stored = already_stored().get(job.id)
        if held_when_stored is not None:
            # enqueue_many wrote the row with the whole batch; whether it waits in SQL
            # was decided then (a due time near the limit must not flip in between)
            planned = replace(planned, held=held_when_stored)
            created = True
        elif planned.debounce is not None:
            holder, created = runtime.storage.create_debounced_job(
                job, keep_first=planned.debounce.keep == "first"
            )
            if not created:
                return self.AsyncResult(holder)  # the key's pending job, moved later
        elif job.unique_key is not None:
            holder = runtime.storage.create_unique_job(job)
            if holder != job.id:
                return self.AsyncResult(holder)  # the key's job is still active
            created = True
        else:
            created = runtime.storage.create_job(job)
        try:
            return self.send_planned(planned, args, kwargs, created=created)
        except BaseException:
            if created:
                runtime.storage.delete_unstarted_job(job.id)
            raise

    def _enqueue_in_transaction(self, planned: PlannedJob, args: Any, kwargs: Any) -> Any:
        """The outbox (``engine.outbox``): the row joins the caller's transaction; the
        message goes after it commits."""
        runtime, job, transaction = runtime_of(self.app), planned.job, planned.transaction
        assert transaction is not None
        storage = store_of(runtime, self.name)
        check_same_database(storage, transaction.database_url(), self.name)
        if not (planned.id_given and transaction.exists(storage, job.id)):
            transaction.write(storage, job)  # (an id enqueued again is sent again)
        if planned.held:
            return self.AsyncResult(job.id)  # due later: the sweeper publishes it then
        patience = visible_within(transaction)

        def send() -> None:
            try:
                if not wait_until_visible(runtime, job.id, patience):
                    return  # the commit did not land (or the row's savepoint rolled back)
                self.send_planned(planned, args, kwargs, created=True)
                storage.outbox_sent(job.id, runtime.deliver_by(planned.options.get("eta")))
            except Exception:
                logger.exception(
                    "job %s committed but not published; the recovery sweeper's relay publishes it",
                    job.id,
                )

        transaction.after_commit(send)
        return self.AsyncResult(job.id)

    def send_planned(
        self, planned: PlannedJob, args: Any, kwargs: Any, *, created: bool, **extra: Any
    ) -> Any:
        """Publish the message of a job whose row is written (unless it is held: the
        sweeper publishes it when due)."""
        runtime, job = runtime_of(self.app), planned.job
        if created and runtime.observers.active:
            # the queue label workers will see (their delivery's routing key)
            runtime.observers.job_enqueued(
                self.name,
                job.queue or getattr(self, "queue", None) or self.app.conf.task_default_queue,
            )
        if planned.held:
            # A long wait is kept in SQL, not as an ETA message in worker RAM: the
            # recovery sweeper publishes the job when it is due.
            return self.AsyncResult(job.id)
        return super().apply_async(args, kwargs, task_id=job.id, **planned.options, **extra)

    def plan_job(
        self, args: Any, kwargs: Any, task_id: str | None, options: dict[str, Any]
    ) -> PlannedJob:
        """The row a new job of this task gets, and the options its message is sent
        with; every option checked (ValidationError) before anything is written."""
        runtime = runtime_of(self.app)
        # the id (if given) and the queue must fit the store
        id_given = task_id is not None
        task_id = uuid() if task_id is None else check_new_job_id(task_id)
        if isinstance(options.get("queue"), str):
            check_name(options["queue"], "queue")
        now = runtime.now()
        headers = {**(options.get("headers") or {}), **due_header(now)}
        if runtime.observers.middleware:
            # e.g. the trace context, stored with the row for every resend
            headers.update(runtime.observers.message_headers())
        options["headers"] = headers
        transaction = transaction_of(options.get("connection"), self.name)
        if transaction is not None:  # (a kombu Connection is Celery's own option)
            options.pop("connection")
            refused = [o for o in ("unique", "debounce") if options.get(o) is not None]
            if refused:
                raise ConfigurationError(
                    f"task {self.name!r}: {refused[0]}= is settled in the store's own "
                    f"transactions, so it cannot be combined with connection="
                )
            headers[OUTBOX_HEADER] = "1"
        debounce = check_debounce(
            self.name, options.pop("debounce", None), options.pop("debounce_keep", None), options
        )
        due = due_time(options.pop("delay", None), options.pop("at", None), now=now)
        if debounce is not None:
            due = now + debounce.window
            headers[DEBOUNCED_HEADER] = "1"
        unique = check_unique(options.pop("unique", None))
        flow_key = None
        if self._durable_limits is not None and self._durable_limits.active:
            flow_key = check_keys(self, args, kwargs)
        eta = due or _eta(options.get("eta"), options.get("countdown"))
        held = due is not None and (due - now).total_seconds() > runtime.settings.max_countdown
        deliver_at = due if held else None
        if transaction is not None and not held:  # the relay's deadline
            deliver_at = now + timedelta(seconds=runtime.settings.outbox_relay_after)
        job = new_job(
            runtime,
            self.name,
            task_id,
            args,
            kwargs,
            queue=options.get("queue") if isinstance(options.get("queue"), str) else None,
            priority=options.get("priority"),
            eta=eta,
            options=options,
            not_before=due,
            unique_key=unique,
            deliver_at=deliver_at,
            debounce_key=None if debounce is None else debounce.key,
            flow_key=flow_key,
        )
        return PlannedJob(
            job,
            held,
            {**options, "eta": due} if due is not None else options,
            debounce,
            transaction,
            id_given,
        )


def _join_ambient(runtime: Any, task_id: str | None, options: dict[str, Any]) -> None:
    """An enqueue that names no transaction joins the one open around it, if the app
    has a hook for that (Django's atomic blocks), unless its own options settle it in
    the store's transactions or enqueue_many has written its row."""
    ambient = runtime.ambient_transaction
    if ambient is None or options.get("connection") is not None:
        return
    if any(options.get(o) is not None for o in ("unique", "debounce")):
        return
    if task_id is not None and task_id in already_stored():
        return
    options["connection"] = ambient()


@dataclass(frozen=True)
class PlannedJob:
    job: NewJob
    held: bool
    """Due later than ``durable_max_countdown``: no message now, the sweeper sends it."""
    options: dict[str, Any]
    """What Celery's apply_async is given."""
    debounce: Debounce | None = None
    transaction: Transaction | None = None
    id_given: bool = False
    """The caller chose the id (it may exist already)."""
    """``connection=``: the caller's transaction the row is written in."""


_already_stored: ContextVar[dict[str, bool]] = ContextVar("celery_durable_already_stored")


def already_stored() -> dict[str, bool]:
    """Jobs whose rows ``enqueue_many`` has just written (id: held in SQL): publishing
    them (through Celery's own group machinery) must not write them again."""
    return _already_stored.get({})


@contextmanager
def stored(held: dict[str, bool]) -> Iterator[None]:
    token = _already_stored.set({**already_stored(), **held})
    try:
        yield
    finally:
        _already_stored.reset(token)


def _eta(eta: datetime | str | None, countdown: float | None) -> datetime | None:
    if countdown is not None:
        return datetime.now(timezone.utc) + timedelta(seconds=float(countdown))
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    if eta is not None and eta.tzinfo is None:
        eta = eta.replace(tzinfo=timezone.utc)
    return eta
