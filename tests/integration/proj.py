"""The Celery project the integration tests run real workers on.

`celery -A tests.integration.proj worker` builds the app from DURABLE_TEST_* environment
variables; the test process builds its own client app with ``create_app(...)``.
Side effects are appended to files in DURABLE_TEST_EFFECTS, one line per execution, so
tests count them from outside the worker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery

from celery_durable import CallError, Durable, call


def effect(name: str) -> None:
    directory = os.environ.get("DURABLE_TEST_EFFECTS")
    if directory:
        with open(Path(directory) / name, "a") as f:
            f.write(f"{os.getpid()}\n")


def create_app(*, broker: str, store: str, prefix: str, queue: str,
               lease_seconds: float = 2.0, sweep_interval: float = 0.5) -> Celery:
    app = Celery("proj", broker=broker, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        durable_database_url=store,
        durable_table_prefix=prefix,
        durable_lease_seconds=lease_seconds,
        durable_sweep_interval=sweep_interval,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )
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

    @durable.task(name="proj.retry_once", bind=True, shared=False,
                  autoretry_for=(ConnectionError,), retry_kwargs={"countdown": 0.2})
    def retry_once(self: Any, x: int) -> int:
        paid = call(step, "before-retry", x)
        effect("retry-body")
        if self.request.retries == 0:
            raise ConnectionError("flaky network")  # Celery's own autoretry
        return int(paid)

    return app


if os.environ.get("DURABLE_TEST_BROKER"):
    app = create_app(
        broker=os.environ["DURABLE_TEST_BROKER"],
        store=os.environ["DURABLE_TEST_STORE"],
        prefix=os.environ["DURABLE_TEST_PREFIX"],
        queue=os.environ["DURABLE_TEST_QUEUE"],
        lease_seconds=float(os.environ.get("DURABLE_TEST_LEASE", "2")),
        sweep_interval=float(os.environ.get("DURABLE_TEST_SWEEP", "0.5")),
    )
