#!/usr/bin/env python
"""What a one-call job's statements cost on PostgreSQL, and what the commit policy and
the indexes change, in one run (store level, no Celery; configurations interleaved).

A job's life in the store is four statements: the enqueue INSERT, the claim UPDATE, the
call's checkpoint INSERT and the finish UPDATE. For each configuration this times that
life (wall time per job, from this process) and the CPU PostgreSQL's processes spend on
it (from /proc), round-robin over the configurations so each sees the same machine:

* default: every statement waits for its WAL flush, every index in place;
* durable_synchronous_commit='off': claim and finish do not wait (opt-in);
* ... plus durable_relaxed_checkpoints: the checkpoint does not wait either (opt-in);
* without the event-stream indexes (jobs.started_at, jobs.finished_at, calls.finished_at):
  what the claim and finish UPDATEs pay for them (not a setting: a measurement).

Run:  .venv/bin/python benchmarks/bench_commit.py [--jobs 1000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from celery_durable.store.records import CallRecord, CallState, JobState, Lease, NewJob
from celery_durable.store.sql import SQLStorage

DEFAULT_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
EVENT_STREAM_INDEXES = ("jobs_started_at", "jobs_finished_at", "calls_finished_at")
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "synchronous_commit='off' (claim, finish)": {"synchronous_commit": "off"},
    "... and relaxed_checkpoints": {"synchronous_commit": "off", "relaxed_checkpoints": True},
    "default, without the event-stream indexes": {},
}


def postgres_cpu_seconds() -> float:
    """CPU time of PostgreSQL's processes, from /proc: each live one's own, plus what
    the postmaster has collected from the backends that exited (its cutime, cstime)."""
    ticks = 0
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            if (pid_dir / "comm").read_text().strip() != "postgres":
                continue
            fields = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def one_call_job(storage: SQLStorage, job_id: str) -> None:
    now = datetime.now(timezone.utc)
    storage.create_job(
        NewJob(
            id=job_id,
            task="bench.one_call",
            args="[1]",
            kwargs="{}",
            queue=None,
            priority=None,
            created_at=now,
            deliver_by=now + timedelta(minutes=15),
        )
    )
    lease = Lease(job_id, "bench-worker")
    storage.claim_job(job_id, lease.owner, now, now + timedelta(seconds=30))
    storage.record_call(
        CallRecord(
            job_id=job_id,
            seq=1,
            root_id=job_id,
            name="bench.noop",
            args_digest="0" * 16,
            state=CallState.SUCCEEDED,
            attempts=1,
            result="2",
            error=None,
            started_at=now,
            finished_at=now,
        ),
        lease,
    )
    storage.finish_job(lease, JobState.SUCCEEDED, "2", None, now)


def measure(storage: SQLStorage, jobs: int) -> tuple[float, float]:
    """(wall µs per job, PostgreSQL CPU µs per job)."""
    run = uuid.uuid4().hex[:8]
    c0, t0 = postgres_cpu_seconds(), time.perf_counter()
    for n in range(jobs):
        one_call_job(storage, f"{run}-{n}")
    return (time.perf_counter() - t0) / jobs * 1e6, (postgres_cpu_seconds() - c0) / jobs * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=DEFAULT_URL)
    p.add_argument("--jobs", type=int, default=1000, help="jobs per configuration and round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    run = uuid.uuid4().hex[:6]
    stores: dict[str, SQLStorage] = {}
    for i, (label, options) in enumerate(CONFIGS.items()):
        storage = SQLStorage(args.url, table_prefix=f"bench_{run}_{i}_", **options)
        storage.migrate()
        if "without" in label:
            with storage.engine.connect() as conn:
                for name in EVENT_STREAM_INDEXES:
                    conn.execute(text(f"DROP INDEX {storage.table_prefix}{name}"))
        stores[label] = storage
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label in stores}
    try:
        for storage in stores.values():  # warm-up: connections, prepared statements
            measure(storage, 100)
        for r in range(args.rounds):
            order = list(stores) if r % 2 == 0 else list(stores)[::-1]
            for label in order:
                samples[label].append(measure(stores[label], args.jobs))
    finally:
        for storage in stores.values():
            storage.drop_tables()
            storage.dispose()
    base_wall = statistics.median(s[0] for s in samples["default"])
    base_cpu = statistics.median(s[1] for s in samples["default"])
    result = {
        label: {
            "wall_us_per_job": statistics.median(s[0] for s in rows),
            "postgres_cpu_us_per_job": statistics.median(s[1] for s in rows),
        }
        for label, rows in samples.items()
    }
    for row in result.values():
        row["wall_vs_default"] = row["wall_us_per_job"] / base_wall
        row["cpu_vs_default"] = row["postgres_cpu_us_per_job"] / base_cpu
    if args.json:
        print(json.dumps({"jobs": args.jobs, "rounds": args.rounds, "configs": result}, indent=2))
        return 0
    print(
        f"\none-call job in the store (4 statements), {args.jobs} jobs x {args.rounds} rounds "
        f"per configuration, interleaved; medians\n"
    )
    print(f"  {'configuration':<44} {'wall/job':>10} {'':>7} {'PG CPU/job':>11} {'':>7}")
    for label, row in result.items():
        print(
            f"  {label:<44} {row['wall_us_per_job']:>8.0f}us {row['wall_vs_default']:>6.2f}x"
            f" {row['postgres_cpu_us_per_job']:>9.0f}us {row['cpu_vs_default']:>6.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
