#!/usr/bin/env python
"""Retention and the sweeper at scale, on local PostgreSQL (or --url).

Fills a fresh set of tables with ``--finished`` finished jobs (one call each; 10% of
them past retention) and ``--active`` active ones, then measures, in one run:

* retention: deleting the expired jobs with their calls, errors and messages
  (``durable.apply_retention()``), in jobs per second;
* the recovery sweeper's tick (``durable.recover()``) with the table that full and
  nothing to recover, then with 0 rows, as the scaling row of the docs.

Run:  .venv/bin/python benchmarks/bench_retention.py [--finished 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celery import Celery

from celery_durable import Durable
from celery_durable.store.records import CallState, JobState
from celery_durable.store.sql import SQLStorage

NOW = datetime.now(timezone.utc)


def fill(storage: SQLStorage, finished: int, expired: int, active: int) -> None:
    """Bulk-insert the rows (multi-row INSERTs, 5,000 at a time)."""
    jobs, calls = storage.tables.jobs, storage.tables.calls
    rows, call_rows = [], []

    def flush() -> None:
        if rows:
            with storage.engine.begin() as conn:
                conn.execute(jobs.insert(), rows)
                if call_rows:
                    conn.execute(calls.insert(), call_rows)
            rows.clear()
            call_rows.clear()

    for n in range(finished + active):
        job_id = f"j{n:07d}"
        done = n < finished
        age = timedelta(days=8 if n < expired else 1, seconds=n)
        rows.append(
            {
                "id": job_id,
                "task": "bench.flow",
                "args": "[]",
                "kwargs": "{}",
                "queue": "q",
                "priority": None,
                "options": "{}",
                "state": (JobState.SUCCEEDED if done else JobState.PENDING).value,
                "attempts": 1 if done else 0,
                "recoveries": 0,
                "failures": 0,
                "requeues": 0,
                "awaiting": 0,
                "result": "1" if done else None,
                "lease_expires_at": None if done else NOW + timedelta(hours=1),
                "created_at": NOW - age,
                "started_at": NOW - age if done else None,
                "finished_at": NOW - age if done else None,
            }
        )
        if done:
            call_rows.append(
                {
                    "root_id": job_id,
                    "job_id": job_id,
                    "seq": 1,
                    "name": "bench.step",
                    "args_digest": "0" * 16,
                    "state": CallState.SUCCEEDED.value,
                    "attempts": 1,
                    "result": "1",
                    "error": None,
                    "started_at": NOW - age,
                    "finished_at": NOW - age,
                }
            )
        if len(rows) >= 5000:
            flush()
    flush()
    analyze = "ANALYZE TABLE" if storage.engine.dialect.name in ("mysql", "mariadb") else "ANALYZE"
    with storage.engine.connect() as conn:
        conn.exec_driver_sql(f"{analyze} {jobs.name}")
        conn.exec_driver_sql(f"{analyze} {calls.name}")


def timed(function: Any, repeat: int = 1) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--active", type=int, default=2_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    expired = args.finished // 10
    prefix = f"bench_{uuid.uuid4().hex[:6]}_"
    app = Celery("bench_retention", broker="memory://", set_as_current=False)
    durable = Durable(
        app, storage=SQLStorage(args.url, table_prefix=prefix), retention={"succeeded": 7 * 86400}
    )
    storage = durable.storage
    assert isinstance(storage, SQLStorage)
    results: dict[str, Any] = {}
    try:
        storage.migrate()
        print(
            f"[bench] filling {args.finished} finished + {args.active} active jobs", file=sys.stderr
        )
        fill(storage, args.finished, expired, args.active)
        results["sweep_full_ms"] = timed(durable.recover, repeat=5) * 1000
        seconds = timed(durable.apply_retention)
        results["retention"] = {
            "deleted": expired,
            "seconds": seconds,
            "jobs_per_second": expired / seconds,
        }
        left = durable.apply_retention(dry_run=True)["succeeded"]
        assert left == 0, f"{left} expired jobs left"
        storage.drop_tables()
        storage.migrate()
        results["sweep_empty_ms"] = timed(durable.recover, repeat=5) * 1000
    finally:
        storage.drop_tables()
        storage.dispose()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    r = results["retention"]
    print(
        f"retention: {r['deleted']} of {args.finished} finished jobs deleted in "
        f"{r['seconds']:.2f} s = {r['jobs_per_second']:,.0f} jobs/s (budget >= 10,000)"
    )
    print(
        f"sweeper tick: {results['sweep_empty_ms']:.2f} ms with 0 rows, "
        f"{results['sweep_full_ms']:.2f} ms with {args.finished + args.active} rows"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
