#!/usr/bin/env python
"""The embedded default, SQLite: a fresh durable call() against the same INSERT sent
with plain sqlite3 on the same file and settings, in one run.

Both write to one SQLite file in WAL mode with ``synchronous=NORMAL`` (the store's
pragmas). The fresh call is ``call(plain, i)`` in a durable task run in this process
with ``apply()`` (claim, checkpoints, finish), timed over its call loop; the raw side
sends the exact INSERT ... SELECT the store sent for a checkpoint, with sqlite3 in
autocommit mode, as many times, right after each fresh job (the ratio is the median of
the per-job ratios).

Run:  .venv/bin/python benchmarks/bench_sqlite.py [--calls 2000] [--reps 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celery import Celery

from celery_durable import Durable, call
from celery_durable.store.records import CallRecord, CallState, Lease, NewJob
from celery_durable.store.sql import SQLStorage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-sqlite-"))
    path = directory / "store.sqlite3"
    storage = SQLStorage(f"sqlite:///{path}", table_prefix="bench_")
    storage.migrate()
    app = Celery("bench_sqlite", broker="memory://", set_as_current=False)
    app.conf.update(task_eager_propagates=True, task_store_eager_result=False)
    durable = Durable(app, storage=storage, lease_seconds=600)
    loop: dict[str, float] = {}
    captured: list[tuple[str, Any]] = []

    @app.task(name="bench_sqlite.plain", shared=False)
    def plain(i: int) -> int:
        return i + 1

    @durable.task(name="bench_sqlite.flow", shared=False)
    def flow(n: int) -> int:
        started = time.perf_counter()
        total = sum(call(plain, i) for i in range(n))
        loop["seconds"] = time.perf_counter() - started
        return total

    flow.apply(args=(50,), task_id="warm")
    # A job leased for the raw side: its fenced INSERT must insert, as the store's does.
    now = datetime.now(timezone.utc)
    storage.create_job(
        NewJob(
            id="raw",
            task="bench_sqlite.flow",
            args="[]",
            kwargs="{}",
            queue=None,
            priority=None,
            created_at=now,
            deliver_by=now + timedelta(hours=1),
        )
    )
    assert storage.claim_job("raw", "bench", now, now + timedelta(hours=1)).attempts == 1
    stop = storage.observe_statements(lambda sql, params: captured.append((sql, params)))
    storage.record_call(
        CallRecord(
            job_id="raw",
            seq=777,
            root_id="raw",
            name="p",
            args_digest="0" * 16,
            state=CallState.SUCCEEDED,
            attempts=1,
            result="1",
            error=None,
            started_at=now,
            finished_at=now,
        ),
        Lease("raw", "bench"),
    )
    stop()
    [(sql, params)] = captured
    raw = sqlite3.connect(path, isolation_level=None, timeout=30)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=NORMAL")
    values = list(params)
    seq_at = values.index(777)  # the seq column
    # Interleaved, so each ratio compares the two under the same machine conditions.
    fresh, raw_us = [], []
    for rep in range(args.reps):
        flow.apply(args=(args.calls,), task_id=f"fresh-{uuid.uuid4().hex[:6]}-{rep}")
        fresh.append(loop["seconds"] / args.calls * 1e6)
        started = time.perf_counter()
        for n in range(args.calls):
            values[seq_at] = 1_000_000 * (rep + 1) + n
            if raw.execute(sql, values).rowcount != 1:
                raise RuntimeError("the raw fenced INSERT inserted nothing")
        raw_us.append((time.perf_counter() - started) / args.calls * 1e6)
    raw.close()
    storage.dispose()
    result = {
        "fresh_call_us": statistics.median(fresh),
        "raw_sqlite3_us": statistics.median(raw_us),
        "calls": args.calls,
        "reps": args.reps,
    }
    result["ratio"] = statistics.median(f / r for f, r in zip(fresh, raw_us, strict=True))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"SQLite fresh call {result['fresh_call_us']:.1f} us, the same INSERT with "
            f"sqlite3 {result['raw_sqlite3_us']:.1f} us: {result['ratio']:.2f}x "
            f"(budget <= 2x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
