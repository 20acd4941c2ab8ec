#!/usr/bin/env python
"""What grows with what, on local PostgreSQL (or --url), in one run:

* a job's history: loading it (one SELECT) and replaying it (every call returned from
  the history, none run) for jobs of 10 / 100 / 1,000 / 10,000 calls;
* the recovery sweeper's tick with 0 / 10,000 / 100,000 finished jobs in the table (and
  nothing to recover): what every worker pays every ``durable_sweep_interval``.

Run:  .venv/bin/python benchmarks/bench_scaling.py [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_retention import fill  # noqa: E402
from celery import Celery  # noqa: E402

from celery_durable import Durable, call  # noqa: E402
from celery_durable.store.sql import SQLStorage  # noqa: E402

HISTORIES = (10, 100, 1_000, 10_000)
TABLE_SIZES = (0, 10_000, 100_000)


def median_ms(function: Any, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e3


def histories(url: str, repeat: int) -> list[dict[str, float]]:
    storage = SQLStorage(url, table_prefix=f"bench_{uuid.uuid4().hex[:6]}_")
    storage.migrate()
    app = Celery("bench_scaling", broker="memory://", set_as_current=False)
    app.conf.update(task_eager_propagates=True, task_store_eager_result=False)
    durable = Durable(app, storage=storage, lease_seconds=600)

    @app.task(name="bench_scaling.step", shared=False)
    def step(i: int) -> int:
        return i + 1

    @durable.task(name="bench_scaling.flow", shared=False)
    def flow(n: int) -> int:
        return sum(call(step, i) for i in range(n))

    jobs = storage.tables.jobs
    rows = []
    try:
        for w in range(3):  # warm-up: tracer, connections, prepared statements
            flow.apply(args=(10,), task_id=f"warm-{w}")
        for n in HISTORIES:
            job_id = f"history-{n}"
            flow.apply(args=(n,), task_id=job_id)  # the fresh run writes n checkpoints

            def replay(job_id: str = job_id, n: int = n) -> None:
                with storage.engine.connect() as conn:  # as if its worker had died
                    conn.execute(
                        jobs.update()
                        .where(jobs.c.id == job_id)
                        .values(state="pending", lease_owner=None, finished_at=None)
                    )
                flow.apply(args=(n,), task_id=job_id)

            load = median_ms(lambda job_id=job_id: storage.load_history(job_id), repeat)
            whole = median_ms(replay, repeat)
            rows.append(
                {
                    "calls": n,
                    "history_load_ms": load,
                    "replay_ms": whole,
                    "replay_us_per_call": whole * 1e3 / n,
                }
            )
            print(
                f"[bench] history {n}: load {load:.2f} ms, replay {whole:.1f} ms", file=sys.stderr
            )
    finally:
        storage.drop_tables()
        storage.dispose()
    return rows


def sweeps(url: str, repeat: int) -> list[dict[str, float]]:
    storage = SQLStorage(url, table_prefix=f"bench_{uuid.uuid4().hex[:6]}_")
    app = Celery("bench_scaling_sweep", broker="memory://", set_as_current=False)
    durable = Durable(app, storage=storage)
    rows = []
    try:
        for size in TABLE_SIZES:
            storage.drop_tables()
            storage.migrate()
            if size:
                fill(storage, size, 0, 0)
            durable.recover()  # warm-up: the connection, the plan
            tick = median_ms(durable.recover, repeat)
            rows.append({"finished_jobs": size, "sweep_ms": tick})
            print(f"[bench] sweeper tick with {size} finished: {tick:.2f} ms", file=sys.stderr)
    finally:
        storage.drop_tables()
        storage.dispose()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = {
        "histories": histories(args.url, args.repeat),
        "sweeps": sweeps(args.url, args.repeat),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("\n  calls in the job   history load (1 SELECT)   replay, whole job   per call")
    for row in result["histories"]:
        print(
            f"  {row['calls']:>15,}   {row['history_load_ms']:>20.2f} ms"
            f"   {row['replay_ms']:>14.1f} ms   {row['replay_us_per_call']:>6.1f} us"
        )
    print("\n  finished jobs in the table   sweeper tick")
    for row in result["sweeps"]:
        print(f"  {row['finished_jobs']:>26,}   {row['sweep_ms']:>9.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
