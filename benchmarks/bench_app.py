"""The Celery app the throughput benchmark runs real workers on.

``celery -A bench_app worker`` (run from this directory) builds the app from
environment variables; ``bench_core.py`` builds its producer-side copy with
``create_app(...)`` and the same values:

    BENCH_BROKER_URL             redis://127.0.0.1:6379/13
    BENCH_QUEUE                  queue the tasks are routed to (unique per run)
    BENCH_DURABLE_DATABASE_URL   SQLAlchemy URL of the durable store
    BENCH_DURABLE_TABLE_PREFIX   table prefix of the durable store (unique per run)
    BENCH_COUNTER_URL            Redis URL of the completion counter of plain tasks
    BENCH_COUNTER_KEY            Redis key the plain task INCRs
    BENCH_MIDDLEWARE             observability to turn on: "" (none, the default),
                                 "all", or a comma list of hooks,prometheus,logging,otel
    BENCH_MIDDLEWARE_LOG         where LoggingMiddleware writes: a file path (appended,
                                 one line per record) or "null" (a NullHandler)
    BENCH_SPAN_COUNTER_KEY       optional Redis key (on BENCH_COUNTER_URL) the span
                                 exporter INCRBYs with the number of spans it discarded

The observability set-up (``install_observability``) is shared with the in-process
part of ``bench_core.py``, so both measure the same configuration:

* hooks: one no-op function for each of ``on_job_start``, ``on_job_complete``,
  ``on_job_fail``, ``on_retry`` and ``on_checkpoint``;
* prometheus: ``PrometheusMetrics`` on its own ``CollectorRegistry`` (single-process
  mode: ``PROMETHEUS_MULTIPROC_DIR`` is not set, no exporter is served);
* logging: ``LoggingMiddleware`` on a logger at INFO (propagate off) with one handler,
  a ``FileHandler`` with a timestamped format, or a ``NullHandler``;
* otel: ``OTelTracing`` on an SDK ``TracerProvider`` with a ``BatchSpanProcessor``
  (default settings) and an exporter that discards the spans and only counts them.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis
from celery import Celery
from celery.signals import task_failure, task_success

from celery_durable import Durable, call
from celery_durable.engine.runtime import utcnow
from celery_durable.store.records import (
    CallRecord,
    CallState,
    ClaimOutcome,
    JobState,
    Lease,
    NewJob,
)

MIDDLEWARE_KINDS = ("hooks", "prometheus", "logging", "otel")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_counter: dict[str, Any] = {}


def _redis(url: str) -> redis.Redis:
    client = _counter.get(url)
    if client is None or _counter.get("pid") != os.getpid():
        client = redis.Redis.from_url(url)
        _counter[url] = client
        _counter["pid"] = os.getpid()
    return client


def parse_kinds(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"all"`` / ``"hooks,otel"`` / a sequence -> the kinds, in MIDDLEWARE_KINDS order."""
    if value is None:
        return ()
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value)]
    items = [v for v in items if v and v not in ("0", "none", "off")]
    if any(v in ("1", "all", "on") for v in items):
        return MIDDLEWARE_KINDS
    unknown = sorted(set(items) - set(MIDDLEWARE_KINDS))
    if unknown:
        raise ValueError(f"unknown middleware {unknown}; choose from {MIDDLEWARE_KINDS}")
    return tuple(k for k in MIDDLEWARE_KINDS if k in items)


class DiscardSpanExporter:
    """A span exporter that drops every span; counts them (and, given a Redis key, adds
    each batch's size to it: one INCRBY per batch, in the processor's thread)."""

    def __init__(
        self,
        counter_url: str | None = None,
        counter_key: str | None = None,
    ) -> None:
        self.spans = 0
        self.counter_url, self.counter_key = counter_url, counter_key

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.spans += len(spans)
        if self.counter_url and self.counter_key and spans:
            with suppress(Exception):  # only a check; never fail the export
                _redis(self.counter_url).incrby(self.counter_key, len(spans))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def make_tracer_provider(exporter: DiscardSpanExporter) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))  # type: ignore[arg-type]
    return provider


def make_job_logger(name: str, log: str) -> logging.Logger:
    """The LoggingMiddleware's logger: INFO, not propagated, one handler for ``log``."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if log == "null":
        logger.addHandler(logging.NullHandler())
    else:
        # delay: each prefork pool process opens the file (append mode) on first use
        handler = logging.FileHandler(log, mode="a", delay=True)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    return logger


def _noop(*_: Any) -> None:
    return None


@dataclass
class Observability:
    """What ``install_observability`` turned on, to read back and check afterwards."""

    kinds: tuple[str, ...]
    metrics: Any = None
    registry: Any = None
    logger: logging.Logger | None = None
    provider: Any = None
    exporter: DiscardSpanExporter | None = None
    middleware: list[Any] = field(default_factory=list)

    def flush(self) -> None:
        if self.provider is not None:
            self.provider.force_flush()

    def calls_counted(self, task: str) -> float:
        """durable_calls_total of ``task`` in this Prometheus registry (0 if off)."""
        if self.registry is None:
            return 0.0
        total = 0.0
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == "durable_calls_total" and sample.labels.get("task") == task:
                    total += sample.value
        return total


def install_observability(
    durable: Durable,
    kinds: Sequence[str],
    *,
    log: str = "null",
    logger_name: str = "bench.durable_jobs",
    provider: Any = None,
    exporter: DiscardSpanExporter | None = None,
) -> Observability:
    """Turn on ``kinds`` (see MIDDLEWARE_KINDS) on ``durable``; the order of use() is
    prometheus, logging, otel (so OTel's job span is the innermost)."""
    obs = Observability(tuple(kinds))
    if "hooks" in kinds:
        for register in (
            durable.on_job_start,
            durable.on_job_complete,
            durable.on_job_fail,
            durable.on_retry,
            durable.on_checkpoint,
        ):
            register(_noop)
    if "prometheus" in kinds:
        from prometheus_client import CollectorRegistry

        from celery_durable import PrometheusMetrics

        obs.registry = CollectorRegistry()
        obs.metrics = durable.use(PrometheusMetrics(registry=obs.registry))
        obs.middleware.append(obs.metrics)
    if "logging" in kinds:
        from celery_durable import LoggingMiddleware

        obs.logger = make_job_logger(logger_name, log)
        obs.middleware.append(durable.use(LoggingMiddleware(obs.logger)))
    if "otel" in kinds:
        from celery_durable import OTelTracing

        if provider is None:
            exporter = exporter or DiscardSpanExporter()
            provider = make_tracer_provider(exporter)
        obs.provider, obs.exporter = provider, exporter
        obs.middleware.append(durable.use(OTelTracing(provider)))
    return obs


def create_app(
    *,
    broker: str,
    queue: str,
    store: str,
    prefix: str,
    counter_url: str,
    counter_key: str,
    middleware: Sequence[str] = (),
    middleware_log: str = "null",
    span_counter_key: str | None = None,
    name: str = "bench_app",
    synchronous_commit: str | None = None,
) -> Celery:
    app = Celery(name, broker=broker, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        durable_database_url=store,
        durable_table_prefix=prefix,
        durable_synchronous_commit=synchronous_commit,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,  # no pidbox keys left in Redis
    )
    durable = Durable(app)
    app.bench_observability = install_observability(  # type: ignore[attr-defined]
        durable,
        middleware,
        log=middleware_log,
        logger_name=f"{name}.durable_jobs",
        exporter=DiscardSpanExporter(counter_url, span_counter_key),
    )

    @app.task(name="bench.plain", shared=False)
    def plain(i: int) -> int:
        """The plain-Celery baseline: trivial work plus the completion counter."""
        _redis(counter_url).incr(counter_key)
        return i + 1

    @app.task(name="bench.noop", shared=False)
    def noop(i: int) -> int:
        """What a durable job calls: trivial work, no side effect."""
        return i + 1

    @durable.task(name="bench.one_call", shared=False)
    def one_call(i: int) -> int:
        """A durable job with exactly one checkpointed call."""
        return call(noop, i)  # type: ignore[no-any-return]

    @app.task(name="bench.statements_only", shared=False)
    def statements_only(i: int) -> int:
        """The statement floor: a plain task that sends what a one-call job's worker
        sends (claim, checkpoint, finish) straight through the store, no engine."""
        store, now = durable.storage, utcnow()
        job_id = statements_only.request.id
        lease = Lease(job_id, f"floor-{os.getpid()}")
        claim = store.claim_job(job_id, lease.owner, now, now + timedelta(minutes=5))
        if claim.outcome is not ClaimOutcome.CLAIMED:
            raise RuntimeError(f"job {job_id}: {claim.outcome}")
        value = noop(i)
        store.record_call(
            CallRecord(
                job_id,
                0,
                job_id,
                noop.name,
                "-",
                CallState.SUCCEEDED,
                1,
                str(value),
                None,
                now,
                utcnow(),
            ),
            lease,
        )
        store.finish_job(lease, JobState.SUCCEEDED, str(value), None, utcnow())
        _redis(counter_url).incr(f"{counter_key}:floor")
        return value  # type: ignore[no-any-return]

    def enqueue_statements_only(i: int) -> None:
        """The producer's half of the floor: the job row, then a plain message."""
        job_id, now = uuid.uuid4().hex, utcnow()
        durable.storage.create_job(
            NewJob(
                id=job_id,
                task=statements_only.name,
                args=f"[{i}]",
                kwargs="{}",
                queue=None,
                priority=None,
                created_at=now,
                deliver_by=now + timedelta(minutes=5),
            )
        )
        statements_only.apply_async((i,), task_id=job_id)

    app.bench_enqueue_statements_only = enqueue_statements_only  # type: ignore[attr-defined]

    # Completions counted in Redis, as the plain tasks' are (polling a COUNT(*) of the
    # jobs table would load the PostgreSQL the durable jobs run on). task_success fires
    # once the task returned, i.e. after the job's finish committed.
    def counted(key: str) -> Any:
        def count(sender: Any = None, **_: Any) -> None:
            if getattr(sender, "name", None) == "bench.one_call" and sender.app is app:
                _redis(counter_url).incr(key)

        return count

    task_success.connect(counted(f"{counter_key}:durable"), weak=False)
    task_failure.connect(counted(f"{counter_key}:failed"), weak=False)

    return app


if os.environ.get("BENCH_BROKER_URL") and os.environ.get("BENCH_QUEUE"):
    app = create_app(
        broker=os.environ["BENCH_BROKER_URL"],
        queue=os.environ["BENCH_QUEUE"],
        store=os.environ["BENCH_DURABLE_DATABASE_URL"],
        prefix=os.environ["BENCH_DURABLE_TABLE_PREFIX"],
        counter_url=os.environ["BENCH_COUNTER_URL"],
        counter_key=os.environ["BENCH_COUNTER_KEY"],
        middleware=parse_kinds(os.environ.get("BENCH_MIDDLEWARE")),
        middleware_log=os.environ.get("BENCH_MIDDLEWARE_LOG") or "null",
        span_counter_key=os.environ.get("BENCH_SPAN_COUNTER_KEY") or None,
        synchronous_commit=os.environ.get("BENCH_SYNCHRONOUS_COMMIT") or None,
    )
