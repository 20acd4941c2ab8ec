#!/usr/bin/env python
"""The dashboard's pages with 100,000 jobs in the table, on local PostgreSQL (or --url).

Fills a fresh set of tables (``bench_retention.fill``: one call per job, finished over
the last week and a day), turns 5% of them into dead letters and 3% into failed jobs,
then times each page and JSON endpoint in-process through the ASGI app (the HTTP server
is left out: this is what the page costs the database and the renderer). The budget in
DESIGN.md: every page under 200 ms there.

Run:  .venv/bin/python benchmarks/bench_web.py [--jobs 100000] [--repeat 15] [--json]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_retention import fill
from celery import Celery
from sqlalchemy import func, update
from starlette.testclient import TestClient

from celery_durable import Durable
from celery_durable.store.sql import SQLStorage
from celery_durable.web import create_app


def page_times(client: TestClient, path: str, repeat: int) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    samples.sort()
    return {"median_ms": statistics.median(samples), "max_ms": samples[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    prefix = f"bench_{uuid.uuid4().hex[:6]}_"
    app = Celery("bench_web", broker="memory://", set_as_current=False)
    storage = SQLStorage(args.url, table_prefix=prefix)
    durable = Durable(app, storage=storage)
    results: dict[str, Any] = {}
    try:
        storage.migrate()
        print(f"[bench] filling {args.jobs} jobs", file=sys.stderr)
        fill(storage, args.jobs, 0, args.jobs // 50)
        jobs = storage.tables.jobs
        with storage.engine.begin() as conn:
            for state, task, every in (("dead", "bench.dead", 20), ("failed", "bench.flaky", 33)):
                tail = func.substr(jobs.c.id, 2).cast(jobs.c.attempts.type)
                conn.execute(
                    update(jobs)
                    .where(jobs.c.state == "succeeded", tail % every == 0)
                    .values(state=state, task=task, error='{"type": "Boom", "message": "x"}')
                )
        a_job = f"j{args.jobs // 2:07d}"
        base = "http://127.0.0.1:5556"
        client = TestClient(create_app(durable), base_url=base, client=("127.0.0.1", 50000))
        pages = {
            "jobs list": "/jobs",
            "jobs list, state filter": "/jobs?state=dead",
            "jobs list, task filter": "/jobs?task=bench.flaky",
            "jobs list, id search": f"/jobs?q={a_job[:6]}",
            "jobs list, page 100": "/jobs?page=100",
            "jobs table (auto-refresh)": "/jobs/table",
            "job detail": f"/jobs/{a_job}",
            "dead letters": "/dead-letters",
            "queues + chart": "/queues",
            "JSON: jobs": "/api/jobs",
            "JSON: job": f"/api/jobs/{a_job}",
        }
        for name, path in pages.items():
            results[name] = page_times(client, path, args.repeat)
    finally:
        storage.drop_tables()
        storage.dispose()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{args.jobs:,} jobs in {storage.engine.dialect.name}, {args.repeat} requests each")
    print(f"{'page':<28}{'median ms':>10}{'max ms':>10}")
    for name, t in results.items():
        print(f"{name:<28}{t['median_ms']:>10.1f}{t['max_ms']:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
