"""The Celery project the integration tests run real workers on.

`celery -A tests.integration.proj worker` builds the app from DURABLE_TEST_* environment
variables; the test process builds its own client app with ``create_app(...)``.
Side effects are appended to files in DURABLE_TEST_EFFECTS, one line per execution, so
tests count them from outside the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals

from celery_durable import (
    CallError,
    ConstantBackoff,
    Durable,
    ExponentialBackoff,
    NoRetry,
    RetryAfter,
    call,
    current_job_id,
    gather,
    receive,
    sleep,
)
from celery_durable.engine.recorded_values import now, patched, uuid4
from celery_durable.scheduling.kinds import every


def effect(name: str) -> int:
    """Append one line (pid, time) to the effect's file; returns how many lines it has."""
    directory = os.environ.get("DURABLE_TEST_EFFECTS")
    if not directory:
        return 0
    path = Path(directory) / name
    with open(path, "a") as f:
        f.write(f"{os.getpid()} {time.time():.6f}\n")
    return len(path.read_text().splitlines())


def flag(name: str) -> bool:
    """Whether the test process created this file in the effects directory."""
    directory = os.environ.get("DURABLE_TEST_EFFECTS")
    return bool(directory) and (Path(directory) / name).exists()


def create_app(
    *,
    broker: str,
    store: str,
    prefix: str,
    queue: str,
    lease_seconds: float = 2.0,
    sweep_interval: float = 0.5,
    delivery_timeout: float = 900.0,
    max_countdown: float = 60.0,
    priorities: bool = False,
    result_backend: str | None = None,
    visibility_timeout: float | None = None,
) -> Celery:
    app = Celery("proj", broker=broker, backend=result_backend or None, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        durable_database_url=store,
        durable_table_prefix=prefix,
        durable_lease_seconds=lease_seconds,
        durable_sweep_interval=sweep_interval,
        durable_delivery_timeout=delivery_timeout,
        durable_cancel_check_interval=0.3,
        durable_max_countdown=max_countdown,
        durable_determinism=os.environ.get("DURABLE_TEST_DETERMINISM", "explicit"),
        durable_shutdown_grace=float(os.environ.get("DURABLE_TEST_SHUTDOWN_GRACE", "25")),
        durable_synchronous_commit=os.environ.get("DURABLE_TEST_SYNCHRONOUS_COMMIT") or None,
        durable_relaxed_checkpoints=os.environ.get("DURABLE_TEST_RELAXED_CHECKPOINTS") == "1",
        durable_outbox_relay_after=1.0,
        # The core tests expect a failed call to reach the body at once; the retry tests
        # set their policies on the tasks below.
        durable_call_retries=0,
        durable_job_retries=0,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )
    _broker_options(app, priorities, visibility_timeout)
    durable = Durable(app)

    @app.task(name="proj.step", shared=False)
    def step(name: str, value: int) -> int:
        """A legacy, non-durable task: it knows nothing about celery-durable."""
        effect(name)
        time.sleep(float(os.environ.get("DURABLE_TEST_STEP_SECONDS", "0")))
        return value + 1

    @app.task(name="proj.fail", shared=False)
    def fail(reason: str) -> None:
        effect("fail")
        raise ValueError(reason)

    @app.task(name="proj.collect", shared=False)
    def collect(values: list[int]) -> None:
        effect("collected-" + "-".join(map(str, values)))

    @durable.task(name="proj.five_steps", shared=False)
    def five_steps(x: int) -> list[int]:
        effect("body")
        a = call(step, "s1", x)
        b = call(step, "s2", a)
        c = call(step, "s3", b)
        d = call("proj.step", "s4", c)
        e = call(step.s("s5", d))
        return [a, b, c, d, e]

    @durable.task(name="proj.refund_on_failure", shared=False)
    def refund_on_failure(x: int) -> Any:
        paid = call(step, "charge", x)
        try:
            call(fail, "out of stock")
        except CallError as exc:
            call(step, "refund", paid)
            return {"refunded": paid, "error": exc.error_type}
        return {"refunded": None}

    @durable.task(
        name="proj.retry_once",
        bind=True,
        shared=False,
        autoretry_for=(ConnectionError,),
        retry_kwargs={"countdown": 0.2},
    )
    def retry_once(self: Any, x: int) -> int:
        paid = call(step, "before-retry", x)
        effect("retry-body")
        if self.request.retries == 0:
            raise ConnectionError("flaky network")  # Celery's own autoretry
        return int(paid)

    @durable.task(name="proj.inner", shared=False)
    def inner(x: int) -> int:
        return int(call(step, "inner-step", x))

    @durable.task(name="proj.outer", shared=False)
    def outer(x: int) -> list[int]:
        # `inner` is Celery's lazy proxy here, as in most projects: it runs in-process
        # as a child scope of this job, not as a job of its own.
        return [call(inner, x), call(step, "outer-step", x)]

    _retry_callees(app)
    _retry_workflows(app, durable)
    _canvas(app, durable)
    _scheduled(app, durable)
    _suspending(app, durable)
    _flow_controlled(app, durable)
    _asynchronous(app, durable)
    return app


def _asynchronous(app: Celery, durable: Durable) -> None:
    """async def bodies: concurrent calls, a mix of every kind of call."""

    @app.task(name="proj.timed", shared=False)
    def timed(name: str, seconds: float) -> str:
        note("timed-start", name)
        _hold(f"hold-{name}")
        time.sleep(seconds)
        note("timed-done", name)
        return name

    @app.task(name="proj.async_timed", shared=False)
    async def async_timed(name: str, seconds: float) -> str:
        note("timed-start", name)
        await asyncio.sleep(seconds)
        note("timed-done", name)
        return name

    @durable.task(name="proj.three_at_once", shared=False)
    async def three_at_once(seconds: list[float]) -> list[str]:
        calls = [call(timed, name, s) for name, s in zip("abc", seconds, strict=True)]
        return list(await asyncio.gather(*calls))

    @durable.task(name="proj.async_count", shared=False)
    async def async_count(names: list[str]) -> int:
        return len(await asyncio.gather(*(call(async_timed, n, 0) for n in names)))

    @durable.task(name="proj.async_rejected", shared=False)
    async def async_rejected() -> None:
        await call("proj.reject")

    @durable.task(name="proj.async_mix", shared=False)
    async def async_mix(payments: str) -> list[Any]:
        legacy = await call("proj.step", "mix-legacy", 1)
        on_loop = await call(async_timed, "mix-async", 0.1)
        receipt = await call(app.tasks["proj.charge"].s("mix", 5).set(queue=payments))
        await sleep(0.5)
        last = await call(timed, "mix-last", 0)
        return [legacy, on_loop, receipt, last]


def _broker_options(app: Celery, priorities: bool, visibility_timeout: float | None) -> None:
    if priorities:
        app.conf.task_queue_max_priority = 10  # RabbitMQ: declare the queue with it
        app.conf.broker_transport_options = {  # Redis: one list per priority
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
        }
    if visibility_timeout:  # Redis gives an unacked message back after this long
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options,
            "visibility_timeout": visibility_timeout,
            # kombu looks for such messages every 10th pass of a 10 s timer by default
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        }


def _canvas(app: Celery, durable: Durable) -> None:
    """Durable tasks inside a Celery chain, around a plain one."""
    step = app.tasks["proj.step"]

    @durable.task(name="proj.chain_a", shared=False)
    def chain_a(x: int) -> int:
        value = int(call(step, "chain-a", x))
        _hold("hold-chain-a")  # the test kills the worker here
        return value

    @app.task(name="proj.chain_b", shared=False)
    def chain_b(x: int) -> int:
        effect("chain-b")  # a legacy task: it runs once per message it gets
        return x + 1

    @durable.task(name="proj.chain_c", shared=False)
    def chain_c(x: int) -> int:
        return int(call(step, "chain-c", x))

    @app.task(name="proj.pid_of", shared=False)
    def pid_of(name: str) -> int:
        """Holds while the flag ``hold-<name>`` exists; returns the pid that ran it."""
        effect(f"{name}-start")
        _hold(f"hold-{name}")
        effect(f"{name}-done")
        return os.getpid()

    @durable.task(name="proj.fenced", shared=False)
    def fenced() -> list[int]:
        return [call(step, "f-a", 0), call(pid_of, "f-hold"), call(step, "f-c", 0)]

    @durable.task(name="proj.fenced_finish", shared=False)
    def fenced_finish() -> list[int]:
        """Frozen after its last checkpoint: what a zombie could still write is the finish."""
        done = [call(step, "ff-a", 0)]
        effect("ff-hold-start")
        _hold("hold-ff")
        return [*done, os.getpid()]


def _flow_controlled(app: Celery, durable: Durable) -> None:
    """Tasks under flow control: per-key concurrency, a rate limit, pauses, debounce."""

    @durable.task(
        name="proj.one_per_customer",
        shared=False,
        concurrency=1,
        concurrency_key=lambda order: order["customer"],
    )
    def one_per_customer(order: dict[str, Any]) -> int:
        note("slots", f"{order['customer']} start {current_job_id()}")
        if order.get("hang"):
            _hold("hold-slot")  # the test kills the worker here
        time.sleep(order.get("seconds", 0.2))
        note("slots", f"{order['customer']} end {current_job_id()}")
        return int(order["n"])

    @durable.task(name="proj.ten_per_second", shared=False, rate_limit="10/s")
    def ten_per_second(n: int) -> int:
        note("rated", str(n))
        return n

    @durable.task(name="proj.pausable", shared=False)
    def pausable(n: int) -> int:
        note("pausable", str(n))
        return n

    @durable.task(name="proj.ordered", shared=False)
    def ordered(order: str) -> str:
        note("ordered", order)
        return order

    @durable.task(name="proj.debounced", shared=False)
    def debounced(value: int) -> int:
        note("debounced", str(value))
        return value


def _hold(name: str) -> None:
    """Wait while the test process keeps the flag file ``name`` in place."""
    while flag(name):
        time.sleep(0.05)


def _suspending(app: Celery, durable: Durable) -> None:
    """Calls that suspend: dispatched to another queue, gather, durable sleep."""

    @app.task(name="proj.charge", shared=False)
    def charge(order: str, amount: int) -> str:
        """A legacy task on the payments queue. Effects: charge-start (every run that
        began), charge-done (every run that completed)."""
        effect("charge-start")
        _hold("hold-charge")
        if amount < 0:
            raise ValueError(f"card declined for {order}")
        effect("charge-done")
        return f"receipt-{order}-{amount}"

    @durable.task(name="proj.checkout", shared=False)
    def checkout(order: str, amount: int, payments: str) -> Any:
        _hold("hold-checkout")
        try:
            receipt = call(charge.s(order, amount).set(queue=payments))
        except CallError as exc:
            call("proj.step", "compensate", 0)
            return {"compensated": f"{exc.error_type}: {exc.error_message}"}
        effect("after-charge")
        return {"receipt": receipt}

    @durable.task(name="proj.quick", shared=False)
    def quick(x: int) -> int:
        return int(call("proj.step", "quick", x))

    @durable.task(name="proj.fan_out", shared=False)
    def fan_out(n: int, fail_at: int, payments: str) -> list[Any]:
        results = gather(
            *[charge.s(f"o{i}", -1 if i == fail_at else i).set(queue=payments) for i in range(n)],
            return_exceptions=True,
        )
        return [r if isinstance(r, str) else f"error: {r.error_message}" for r in results]

    @durable.task(name="proj.settle_order", shared=False)
    def settle_order(order: str) -> list[Any]:
        """A durable child: its calls are checkpointed in a history of its own."""
        return [call("proj.step", "settle-a", 1), current_job_id()]

    @durable.task(name="proj.parent_of_durable", shared=False)
    def parent_of_durable(order: str, payments: str) -> Any:
        return call(settle_order.s(order).set(queue=payments))

    @durable.task(name="proj.await_approval", shared=False)
    def await_approval(order: str, timeout: float | None = None) -> Any:
        call("proj.step", "asked", 0)
        answer = receive("approval", timeout=timeout)
        call("proj.step", "answered", 0)
        return {"order": order, "answer": answer}

    @durable.task(name="proj.napper", shared=False)
    def napper(seconds: float) -> list[float]:
        call("proj.step", "before-nap", 0)
        started = now()
        sleep(seconds)
        call("proj.step", "after-nap", 0)
        return [started.timestamp(), now().timestamp()]


def _scheduled(app: Celery, durable: Durable) -> None:
    @durable.task(name="proj.ticked", shared=False)
    def ticked() -> str:
        job_id = current_job_id() or "?"
        directory = os.environ.get("DURABLE_TEST_EFFECTS")
        if directory:
            with open(Path(directory) / "ticked", "a") as f:
                f.write(f"{job_id}\n")
        return job_id

    @durable.task(name="proj.prio", shared=False)
    def prio(priority: int) -> int:
        directory = os.environ.get("DURABLE_TEST_EFFECTS")
        if directory:
            with open(Path(directory) / "prio-order", "a") as f:
                f.write(f"{priority}\n")
        return priority

    _versioned(app, durable)
    if os.environ.get("DURABLE_TEST_HOOKS"):
        _hooks(durable)
    if os.environ.get("DURABLE_TEST_OTEL"):
        _tracing(durable)
    if os.environ.get("DURABLE_TEST_METRICS_PORT"):
        from celery_durable import PrometheusMetrics

        app.conf.durable_metrics_port = int(os.environ["DURABLE_TEST_METRICS_PORT"])
        durable.settings = dataclasses.replace(
            durable.settings, metrics_port=app.conf.durable_metrics_port
        )
        durable.use(PrometheusMetrics())

    if os.environ.get("DURABLE_TEST_SCHEDULE"):
        # missed="all": a beat slowed down by a loaded machine still fires every tick
        durable.schedule("every-second", ticked, every(1), missed="all")


@signals.task_retry.connect
def _count_celery_retries(**_: Any) -> None:
    effect("celery-task-retry")  # runs in the worker: Celery itself saw the retry


def note(name: str, text: str) -> None:
    """Append ``pid time text`` to the effect file ``name`` (from any worker process)."""
    directory = os.environ.get("DURABLE_TEST_EFFECTS")
    if directory:
        with open(Path(directory) / name, "a") as f:
            f.write(f"{os.getpid()} {time.time():.6f} {text}\n")


@signals.task_prerun.connect
def _count_deliveries(task_id: str | None = None, **_: Any) -> None:
    note("deliveries", str(task_id))  # every delivery Celery hands to a task


@signals.task_postrun.connect
def _count_ends(task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    note("postrun", f"{task_id} {state}")  # ... and how Celery saw it end


@signals.task_failure.connect
def _count_failures(task_id: str | None = None, exception: Any = None, **_: Any) -> None:
    note("celery-failures", f"{task_id} {type(exception).__name__}")


@signals.task_received.connect
def _count_received(request: Any = None, **_: Any) -> None:
    note("received", str(getattr(request, "id", None)))  # in the worker's main process


def _retry_callees(app: Celery) -> None:
    @app.task(name="proj.flaky", shared=False)
    def flaky(name: str, failures: int) -> str:
        """Fails the first ``failures`` times it runs (counted in its effect file)."""
        if effect(name) <= failures:
            raise TimeoutError(f"{name}: upstream timed out")
        return f"{name}-ok"

    @app.task(name="proj.gate", shared=False)
    def gate() -> str:
        effect("gate")
        if not flag("gate-open"):
            raise ConnectionError("gate closed")
        return "open"

    @app.task(name="proj.reject", shared=False)
    def reject() -> None:
        effect("reject")
        raise NoRetry(ValueError("invalid card number"))

    @app.task(name="proj.rate_limited", shared=False)
    def rate_limited() -> str:
        if effect("rate-limited") == 1:
            raise RetryAfter(2, ConnectionError("429 Too Many Requests"))
        return "served"

    @app.task(name="proj.slow_once", shared=False)
    def slow_once(seconds: float) -> str:
        if effect("slow-once") == 1:
            time.sleep(seconds)
        return "fast"


def _retry_workflows(app: Celery, durable: Durable) -> None:
    step, flaky, gate = (app.tasks[f"proj.{n}"] for n in ("step", "flaky", "gate"))
    reject, rate_limited, slow_once = (
        app.tasks[f"proj.{n}"] for n in ("reject", "rate_limited", "slow_once")
    )

    @durable.task(name="proj.flaky_order", shared=False)
    def flaky_order(failures: int, backoff: float) -> list[Any]:
        a = call(step, "r-a", 0)
        b = call(
            flaky, "r-flaky", failures, retries=3, backoff=ExponentialBackoff(backoff, backoff * 8)
        )
        c = call(step, "r-c", a)
        return [a, b, c]

    @durable.task(
        name="proj.to_dead_letter", shared=False, retries=1, backoff=0.3, on_exhausted="dead_letter"
    )
    def to_dead_letter() -> list[Any]:
        a = call(step, "d-a", 0)
        return [a, call(gate, retries=1, backoff=ConstantBackoff(0.2))]

    @durable.task(name="proj.no_retry_call", shared=False, retries=3)
    def no_retry_call() -> None:
        effect("nr-call-body")
        call(reject, retries=5)

    @durable.task(name="proj.no_retry_body", shared=False, retries=3)
    def no_retry_body(order_id: int) -> None:
        effect("nr-body")
        raise NoRetry(f"order {order_id} has no items")

    @durable.task(name="proj.retry_after", shared=False, call_retries=1)
    def retry_after() -> str:
        return str(call(rate_limited))

    @durable.task(
        name="proj.soft_limited",
        shared=False,
        soft_time_limit=1.5,
        call_retries=2,
        call_backoff=0.2,
    )
    def soft_limited() -> list[Any]:
        return [call(step, "soft-a", 0), call(slow_once, 4)]

    @durable.task(name="proj.hard_limited", shared=False, time_limit=2, call_retries=2)
    def hard_limited() -> list[Any]:
        return [call(step, "hard-a", 0), call(slow_once, 6)]


def _tracing(durable: Durable) -> None:
    """Spans go to a JSON-lines file the test reads (each pool process appends)."""
    import json

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from celery_durable import OTelTracing

    class FileExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            path = Path(os.environ["DURABLE_TEST_EFFECTS"]) / "spans.jsonl"
            with open(path, "a") as f:
                for s in spans:
                    f.write(
                        json.dumps(
                            {
                                "name": s.name,
                                "trace": f"{s.context.trace_id:032x}",
                                "span": f"{s.context.span_id:016x}",
                                "parent": f"{s.parent.span_id:016x}" if s.parent else None,
                                "outcome": (s.attributes or {}).get("durable.outcome"),
                            }
                        )
                        + "\n"
                    )
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
    durable.use(OTelTracing(provider))
    if os.environ["DURABLE_TEST_OTEL"] == "celery":  # opentelemetry-instrumentation-celery
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        @signals.worker_process_init.connect(weak=False)
        def instrument(**_: Any) -> None:  # per pool process, as its docs ask
            CeleryInstrumentor().instrument(tracer_provider=provider)


def _code_version() -> str:
    """Which deploy this worker runs: the tests start workers with different values."""
    return os.environ.get("DURABLE_TEST_CODE_VERSION", "1")


def _versioned(app: Celery, durable: Durable) -> None:
    step = app.tasks["proj.step"]

    @app.task(name="proj.echo", shared=False)
    def echo(name: str) -> str:
        effect(name)
        time.sleep(float(os.environ.get("DURABLE_TEST_STEP_SECONDS", "0")))
        return name

    @durable.task(name="proj.versioned", shared=False)
    def versioned(change: str) -> list[Any]:
        """Version 1 calls a, b, c; version 2 changes the path as ``change`` says."""
        a, b, c, x = (f"{change}-{n}" for n in "abcx")
        if _code_version() == "1" or change == "none":
            return [call(step, a, 0), call(echo, b), call(step, c, 0)]
        if change == "order":
            return [call(echo, b), call(step, a, 0), call(step, c, 0)]
        if change == "argument":
            return [call(step, a, 1), call(echo, b), call(step, c, 0)]
        if change == "removed":
            return [call(step, a, 0), call(step, c, 0)]
        if change == "added":
            return [call(step, a, 0), call(echo, x), call(echo, b), call(step, c, 0)]
        raise ValueError(change)

    @durable.task(name="proj.stamped", shared=False)
    def stamped() -> list[str]:
        stamp, key = now(), uuid4()
        effect(f"stamp {stamp.isoformat()} {key}")  # outside any call: every replay
        call(step, "stamp-slow", 0)
        return [stamp.isoformat(), str(key)]

    @durable.task(name="proj.patched_flow", shared=False)
    def patched_flow() -> list[Any]:
        out = [call(step, "p-a", 0)]
        if _code_version() == "2" and patched("new-b"):
            out.append(call(echo, "p-new"))
        else:
            out.append(call(echo, "p-old"))
        out.append(call(step, "p-c", 0))
        return out


def _hooks(durable: Durable) -> None:
    """Every hook writes a row into a SQLite file the test reads (from any process)."""
    import sqlite3

    def write(hook: str, job_id: str, detail: str = "") -> None:
        path = Path(os.environ["DURABLE_TEST_EFFECTS"]) / "hooks.sqlite3"
        with sqlite3.connect(path, timeout=30) as db:
            db.execute("CREATE TABLE IF NOT EXISTS hooks (hook, job_id, detail, pid)")
            db.execute("INSERT INTO hooks VALUES (?, ?, ?, ?)", (hook, job_id, detail, os.getpid()))

    durable.on_job_start(lambda job: write("start", job.id))
    durable.on_job_complete(lambda job, duration: write("complete", job.id))
    durable.on_job_fail(lambda job, error: write("fail", job.id, type(error).__name__))
    durable.on_retry(lambda job, attempt, error: write("retry", job.id, str(attempt)))
    durable.on_checkpoint(lambda job, c: write("checkpoint", job.id, c.name))

    class Broken:
        def before_job(self, job: Any) -> None:
            raise RuntimeError("a broken middleware")

    durable.use(Broken())


if os.environ.get("DURABLE_TEST_BROKER"):
    app = create_app(
        broker=os.environ["DURABLE_TEST_BROKER"],
        store=os.environ["DURABLE_TEST_STORE"],
        prefix=os.environ["DURABLE_TEST_PREFIX"],
        queue=os.environ["DURABLE_TEST_QUEUE"],
        lease_seconds=float(os.environ.get("DURABLE_TEST_LEASE", "2")),
        sweep_interval=float(os.environ.get("DURABLE_TEST_SWEEP", "0.5")),
        delivery_timeout=float(os.environ.get("DURABLE_TEST_DELIVERY_TIMEOUT", "900")),
        max_countdown=float(os.environ.get("DURABLE_TEST_MAX_COUNTDOWN", "60")),
        priorities=bool(os.environ.get("DURABLE_TEST_PRIORITIES")),
        result_backend=os.environ.get("DURABLE_TEST_RESULT_BACKEND") or None,
        visibility_timeout=float(os.environ.get("DURABLE_TEST_VISIBILITY_TIMEOUT") or 0) or None,
    )
