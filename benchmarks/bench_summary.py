#!/usr/bin/env python
"""`make bench`: every benchmark, one after another (never two at once on a small
machine), and one table of the project's budgets, each ratio taken within one run.

Needs PostgreSQL and Redis on localhost (see benchmarks/README.md). Writes the raw
results to ``bench-results.json`` (or --out) next to the table.

Run:  .venv/bin/python benchmarks/bench_summary.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> dict[str, Any]:
    print(f"[bench] {script} {' '.join(args)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(HERE / script), "--json", *args],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    result["_seconds"] = time.perf_counter() - started
    return result


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    p.add_argument("--out", default="bench-results.json")
    args = p.parse_args(argv)
    quick = ["--reps", "2", "--calls", "100", "--throughput-n", "500"] if args.quick else []
    results = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "core": run("bench_core.py", "--skip-middleware", *quick),
        "sqlite": run("bench_sqlite.py", *(["--reps", "3"] if args.quick else [])),
        "retention": run("bench_retention.py", *(["--finished", "20000"] if args.quick else [])),
        "scaling": run("bench_scaling.py", *(["--repeat", "2"] if args.quick else [])),
        "commit": run(
            "bench_commit.py", *(["--rounds", "2", "--jobs", "300"] if args.quick else [])
        ),
        "scale_out": run("bench_scale_out.py", "--seconds", "10" if args.quick else "30"),
        "web": run("bench_web.py", *(["--jobs", "20000", "--repeat", "5"] if args.quick else [])),
    }
    Path(args.out).write_text(json.dumps(results, indent=2))
    core, t, d = results["core"], results["core"]["throughput"], results["core"]["dbos"]
    fresh = core["fresh"]
    budgets = core["budgets"]
    rows = [
        (
            "commit floor (prepared INSERT, autocommit, WAL-logged)",
            f"{fresh['floor_interleaved_us']:.0f} us",
            "",
        ),
        (
            "fresh durable call() / the floor",
            f"{fresh['fresh_call_us']:.0f} us = {fresh['fresh_vs_floor']:.2f}x",
            f"<= {budgets['fresh_call_vs_logged_floor_max']}x: "
            f"{verdict(fresh['fresh_vs_floor'] <= budgets['fresh_call_vs_logged_floor_max'])}",
        ),
    ]
    if d.get("ok"):
        rows.append(
            (
                f"DBOS {d.get('version')} step / our call",
                f"{d['ms_per_step']:.2f} ms = {d['speedup']:.1f}x",
                f">= {budgets['speedup_vs_dbos_min']:.0f}x: "
                f"{verdict(d['speedup'] >= budgets['speedup_vs_dbos_min'])}",
            )
        )
    if t.get("ok"):
        rows.append(
            (
                "durable one-call jobs / plain tasks (prefork -c 2)",
                f"{t['durable_per_s']:.0f} / {t['plain_per_s']:.0f} /s = {t['ratio']:.2f}x",
                f">= {budgets['throughput_ratio_min']}x: "
                f"{verdict(t['ratio'] >= budgets['throughput_ratio_min'])}",
            )
        )
        rows.append(
            (
                "  plain tasks sending the same 4 statements / plain tasks",
                f"{t['floor_per_s']:.0f} /s = {t['floor_ratio']:.2f}x",
                f"(durable = {t['durable_vs_floor']:.2f}x this floor)",
            )
        )
    r = results["retention"]["retention"]
    rows.append(
        (
            f"retention, {r['deleted']:,} expired of {r['deleted'] * 10:,} finished",
            f"{r['jobs_per_second']:,.0f} jobs/s",
            f">= 10,000: {verdict(r['jobs_per_second'] >= 10_000)}",
        )
    )
    pages = {k: v for k, v in results["web"].items() if not k.startswith("_")}
    slowest = max(pages, key=lambda k: pages[k]["median_ms"])
    rows.append(
        (
            f"dashboard, slowest page ({slowest})",
            f"{pages[slowest]['median_ms']:.0f} ms",
            f"<= 200 ms: {verdict(pages[slowest]['median_ms'] <= 200)}",
        )
    )
    s = results["sqlite"]
    rows.append(
        (
            "SQLite fresh call / the same INSERT with sqlite3",
            f"{s['fresh_call_us']:.0f} / {s['raw_sqlite3_us']:.0f} us = {s['ratio']:.2f}x",
            f"<= 2x: {verdict(s['ratio'] <= 2)}",
        )
    )
    print(
        f"\ncelery-durable benchmarks: python {results['machine']['python']}, "
        f"{results['machine']['cpus']} CPUs, {results['machine']['platform']}\n"
    )
    for label, value, budget in rows:
        print(f"  {label:<54} {value:>26}   {budget}")
    print("\n  history of a job          load (1 SELECT)   replay (whole job)   per call")
    for h in results["scaling"]["histories"]:
        print(
            f"  {h['calls']:>10,} calls     {h['history_load_ms']:>12.2f} ms"
            f"   {h['replay_ms']:>15.1f} ms   {h['replay_us_per_call']:>6.1f} us"
        )
    print("\n  sweeper tick, finished jobs in the table")
    for w in results["scaling"]["sweeps"]:
        print(f"  {w['finished_jobs']:>10,}                {w['sweep_ms']:>9.2f} ms")
    print("\n  commit policy and indexes (store level, one-call job: 4 statements)")
    for label, c in results["commit"]["configs"].items():
        print(
            f"  {label:<44} {c['wall_us_per_job']:>6.0f} us ({c['wall_vs_default']:.2f}x), "
            f"PostgreSQL CPU {c['postgres_cpu_us_per_job']:.0f} us ({c['cpu_vs_default']:.2f}x)"
        )
    o = results["scale_out"]
    print(
        f"\n  scale-out: {o['sweepers']} sweepers + {o['executions']} lease-holding executions "
        f"at {o['speedup']:g}x the default cadence: {o['statements_per_s']:.0f} statements/s, "
        f"PostgreSQL {o['postgres_cpu_percent']:.0f}% of a core"
    )
    for kind, k in o["kinds"].items():
        print(
            f"    {kind:<13} {k['per_s']:>6.1f}/s  median {k['median_ms']:.2f} ms  "
            f"p99 {k['p99_ms']:.2f} ms"
        )
    if t.get("ok"):
        print(
            f"\n  enqueue: delay() {t['durable_enqueue_per_s']:.0f}/s, enqueue_many() "
            f"{t['batch_enqueue_per_s']:.0f}/s, plain Celery {t['plain_enqueue_per_s']:.0f}/s; "
            f"durable_synchronous_commit='off': {t.get('async_vs_bare', float('nan')):.2f}x "
            f"the default's jobs/s"
        )
    print(f"\n  raw results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
