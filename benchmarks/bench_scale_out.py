#!/usr/bin/env python
"""Many workers on one PostgreSQL: what the background traffic of a fleet costs.

Every Celery worker host runs one recovery sweeper (a query every
``durable_sweep_interval``, 10 s by default) and, in each process running jobs, a lease
keeper (one UPDATE per held lease every ``durable_lease_seconds / 3``, 10 s; one cancel
query per process every ``durable_cancel_check_interval``, 2 s). This runs ``--sweepers``
sweepers and ``--executions`` lease-holding executions spread over ``--processes``
processes (each with its own connections, as worker hosts have) against a jobs table of
``--finished`` finished jobs, at ``--speedup`` times the default cadence, for
``--seconds``; it reports statements per second and the latency of each kind (median,
p99, max) as the clients saw it, and PostgreSQL's CPU.

Run:  .venv/bin/python benchmarks/bench_scale_out.py [--speedup 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_commit import postgres_cpu_seconds  # noqa: E402
from bench_retention import fill  # noqa: E402

from celery_durable.store.records import Lease  # noqa: E402
from celery_durable.store.sql import SQLStorage  # noqa: E402

SWEEP_INTERVAL, LEASE_SECONDS, CANCEL_INTERVAL = 10.0, 30.0, 2.0


def _paced(interval: float, stop: float, work: Any, samples: list[float]) -> None:
    time.sleep(random.uniform(0, interval))  # hosts are not in phase
    while time.monotonic() < stop:
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
        time.sleep(max(0.0, interval - (time.perf_counter() - started)))


def worker_process(args: dict[str, Any], leases: list[str], sweepers: int, out: Any) -> None:
    storage = SQLStorage(args["url"], table_prefix=args["prefix"])
    speedup, stop = args["speedup"], time.monotonic() + args["seconds"]
    samples: dict[str, list[float]] = {"sweep": [], "renew": [], "cancel check": []}
    owned = [Lease(job_id, f"bench/{job_id}") for job_id in leases]

    def sweep() -> None:
        storage.expired_jobs(datetime.now(timezone.utc), 100)

    def renew() -> None:  # one keeper thread per process: each lease in turn
        until = datetime.now(timezone.utc) + timedelta(seconds=LEASE_SECONDS)
        for lease in owned:
            started = time.perf_counter()
            if not storage.renew_lease(lease, until):
                raise RuntimeError(f"lost the lease of {lease.job_id}")
            samples["renew"].append(time.perf_counter() - started)

    def cancels() -> None:
        storage.cancel_requested([lease.job_id for lease in owned])

    threads = [
        threading.Thread(
            target=_paced, args=(SWEEP_INTERVAL / speedup, stop, sweep, samples["sweep"])
        )
        for _ in range(sweepers)
    ]
    if owned:
        threads.append(
            threading.Thread(target=_paced, args=(LEASE_SECONDS / 3 / speedup, stop, renew, []))
        )
        threads.append(
            threading.Thread(
                target=_paced,
                args=(CANCEL_INTERVAL / speedup, stop, cancels, samples["cancel check"]),
            )
        )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    storage.dispose()
    out.put(samples)


def running_jobs(storage: SQLStorage, n: int) -> list[str]:
    jobs, now = storage.tables.jobs, datetime.now(timezone.utc)
    ids = [f"run-{i:05d}" for i in range(n)]
    with storage.engine.begin() as conn:
        conn.execute(
            jobs.insert(),
            [
                {
                    "id": job_id,
                    "task": "bench.flow",
                    "args": "[]",
                    "kwargs": "{}",
                    "options": "{}",
                    "state": "running",
                    "attempts": 1,
                    "recoveries": 0,
                    "failures": 0,
                    "requeues": 0,
                    "awaiting": 0,
                    "lease_owner": f"bench/{job_id}",
                    "lease_expires_at": now + timedelta(hours=1),
                    "created_at": now,
                    "started_at": now,
                }
                for job_id in ids
            ],
        )
    return ids


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--sweepers", type=int, default=50)
    p.add_argument("--executions", type=int, default=200)
    p.add_argument("--processes", type=int, default=10)
    p.add_argument("--finished", type=int, default=100_000)
    p.add_argument("--speedup", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    prefix = f"bench_{uuid.uuid4().hex[:6]}_"
    storage = SQLStorage(args.url, table_prefix=prefix)
    storage.migrate()
    try:
        print(f"[bench] filling {args.finished} finished jobs", file=sys.stderr)
        fill(storage, args.finished, 0, 0)
        ids = running_jobs(storage, args.executions)
        storage.dispose()
        shared = {
            "url": args.url,
            "prefix": prefix,
            "speedup": args.speedup,
            "seconds": args.seconds,
        }
        queue: Any = multiprocessing.get_context("fork").Queue()
        per = args.processes
        procs = [
            multiprocessing.get_context("fork").Process(
                target=worker_process,
                args=(shared, ids[i::per], args.sweepers // per + (i < args.sweepers % per), queue),
            )
            for i in range(per)
        ]
        print(f"[bench] {per} processes for {args.seconds:.0f} s", file=sys.stderr)
        cpu0, t0 = postgres_cpu_seconds(), time.perf_counter()
        for proc in procs:
            proc.start()
        gathered: dict[str, list[float]] = {}
        for _ in procs:
            for kind, values in queue.get().items():
                gathered.setdefault(kind, []).extend(values)
        for proc in procs:
            proc.join()
        elapsed, cpu = time.perf_counter() - t0, postgres_cpu_seconds() - cpu0
    finally:
        storage.drop_tables()
        storage.dispose()
    result: dict[str, Any] = {
        "sweepers": args.sweepers,
        "executions": args.executions,
        "processes": args.processes,
        "finished_jobs": args.finished,
        "speedup": args.speedup,
        "seconds": elapsed,
        "postgres_cpu_percent": cpu / elapsed * 100,
        "statements_per_s": sum(len(v) for v in gathered.values()) / elapsed,
        "kinds": {
            kind: {
                "per_s": len(values) / elapsed,
                "median_ms": statistics.median(values) * 1e3,
                "p99_ms": percentile(values, 0.99) * 1e3,
                "max_ms": max(values) * 1e3,
            }
            for kind, values in gathered.items()
            if values
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"\n{args.sweepers} sweepers and {args.executions} lease-holding executions in "
        f"{args.processes} processes, {args.finished:,} finished jobs in the table, "
        f"{args.speedup:g}x the default cadence, {elapsed:.0f} s"
    )
    print(f"  {'statement':<14} {'per s':>8} {'median':>9} {'p99':>9} {'max':>9}")
    for kind, row in result["kinds"].items():
        print(
            f"  {kind:<14} {row['per_s']:>8.1f} {row['median_ms']:>7.2f}ms"
            f" {row['p99_ms']:>7.2f}ms {row['max_ms']:>7.2f}ms"
        )
    print(
        f"  all: {result['statements_per_s']:.0f} statements/s; PostgreSQL CPU "
        f"{result['postgres_cpu_percent']:.0f}% of one core"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
