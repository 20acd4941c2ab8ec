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
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

from celery_durable import Durable, call

_counter: dict[str, Any] = {}


def _redis(url: str) -> redis.Redis:
    client = _counter.get(url)
    if client is None or _counter.get("pid") != os.getpid():
        client = redis.Redis.from_url(url)
        _counter[url] = client
        _counter["pid"] = os.getpid()
    return client


def create_app(*, broker: str, queue: str, store: str, prefix: str,
               counter_url: str, counter_key: str) -> Celery:
    app = Celery("bench_app", broker=broker, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        durable_database_url=store,
        durable_table_prefix=prefix,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,  # no pidbox keys left in Redis
    )
    durable = Durable(app)

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

    return app


if os.environ.get("BENCH_BROKER_URL"):
    app = create_app(
        broker=os.environ["BENCH_BROKER_URL"],
        queue=os.environ["BENCH_QUEUE"],
        store=os.environ["BENCH_DURABLE_DATABASE_URL"],
        prefix=os.environ["BENCH_DURABLE_TABLE_PREFIX"],
        counter_url=os.environ["BENCH_COUNTER_URL"],
        counter_key=os.environ["BENCH_COUNTER_KEY"],
    )
