#!/usr/bin/env python
"""Core benchmark of celery-durable on local PostgreSQL: one run, one table.

Measures (see benchmarks/README.md for what each number means):

1. the commit floor: one single-row INSERT + COMMIT with plain psycopg (autocommit);
2. the per-call overhead of a fresh ``call()`` inside a durable task run with apply();
3. replaying a job of 1,000 completed calls;
4. SQL statements per fresh call / replayed call / history load / one-call job,
   counted with SQLAlchemy engine events;
5. DBOS (same PostgreSQL): ms per @DBOS.step in a workflow;
6. end-to-end throughput of real ``celery worker`` processes: plain tasks vs one-call
   durable jobs;
7. the overhead of the observability middleware (no-op hooks, PrometheusMetrics,
   LoggingMiddleware, OTelTracing with a BatchSpanProcessor), measured in the same run
   as an extra column: fresh call() in-process (bare, each middleware alone, all) and
   a second real worker with all of them on, interleaved with the bare one.

Run:  .venv/bin/python benchmarks/bench_core.py [--json] [--skip-dbos] [--skip-throughput]
                                                 [--skip-middleware]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import psycopg  # noqa: E402
from bench_app import (  # noqa: E402
    MIDDLEWARE_KINDS,
    DiscardSpanExporter,
    Observability,
    create_app,
    install_observability,
    make_tracer_provider,
    parse_kinds,
)
from bench_commit import postgres_cpu_seconds  # noqa: E402
from celery import Celery  # noqa: E402
from sqlalchemy import Column, Integer, MetaData, Table, event, func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from celery_durable import Durable, call  # noqa: E402
from celery_durable.store.records import (  # noqa: E402
    CallRecord,
    CallState,
    ClaimOutcome,
    Lease,
    NewJob,
)
from celery_durable.store.sql import SQLStorage  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_BROKER = "redis://127.0.0.1:6379/13"

# Budgets the numbers are checked against (reported, never enforced with an exit code).
BUDGET_CALL_VS_FLOOR = 1.5  # a fresh call() within 1.5x of the logged-table commit floor
BUDGET_VS_DBOS = 8.0  # per fresh call at least 8x faster than a DBOS step
BUDGET_THROUGHPUT = 0.6  # durable jobs/s >= 0.6x plain tasks/s (0.7x is the aim)
AIM_THROUGHPUT = 0.7


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def psycopg_dsn(sqlalchemy_url: str, database: str | None = None) -> str:
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- statement counting -----------------------------------------------------------------


class SQLCounter:
    """Counts what a store sends while recording: every statement (on its hot path and
    through SQLAlchemy, via ``SQLStorage.observe_statements``) and the commit/rollback
    events of its SQLAlchemy connections. Nothing is attached outside ``recording()``,
    so timed runs carry no listener overhead.

    A COMMIT/ROLLBACK event on an idle psycopg connection in autocommit mode sends
    nothing to the server (psycopg returns early); only the others count as "sent".
    """

    def __init__(self, storage: SQLStorage) -> None:
        self.storage = storage
        self.engine = storage.engine
        self.statements: list[str] = []
        self.params: list[Any] = []
        self.commits = self.rollbacks = self.commits_sent = self.rollbacks_sent = 0

    def _on_statement(self, statement: str, parameters: Any) -> None:
        self.statements.append(statement)
        self.params.append(parameters)

    def _on_commit(self, conn: Any) -> None:
        self.commits += 1
        self.commits_sent += not _idle(conn)

    def _on_rollback(self, conn: Any) -> None:
        self.rollbacks += 1
        self.rollbacks_sent += not _idle(conn)

    @property
    def mark(self) -> int:
        return len(self.statements)

    @contextmanager
    def recording(self) -> Iterator[SQLCounter]:
        self.statements, self.params = [], []
        self.commits = self.rollbacks = self.commits_sent = self.rollbacks_sent = 0
        hooks = [("commit", self._on_commit), ("rollback", self._on_rollback)]
        for name, fn in hooks:
            event.listen(self.engine, name, fn)
        stop = self.storage.observe_statements(self._on_statement)
        try:
            yield self
        finally:
            stop()
            for name, fn in hooks:
                event.remove(self.engine, name, fn)

    def events(self) -> dict[str, int]:
        return {
            "commits": self.commits,
            "rollbacks": self.rollbacks,
            "commits_sent": self.commits_sent,
            "rollbacks_sent": self.rollbacks_sent,
        }


def _idle(conn: Any) -> bool:
    try:
        dbapi = conn.connection.dbapi_connection
        return bool(
            dbapi.autocommit and dbapi.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
    except Exception:
        return False


_VERB = re.compile(r"^\s*(INSERT INTO|UPDATE|DELETE FROM|SELECT)\b", re.I)
_FROM = re.compile(r"\bFROM\s+([\w.\"]+)", re.I)
_TARGET = re.compile(r"^\s*(?:INSERT INTO|UPDATE|DELETE FROM)\s+([\w.\"]+)", re.I)


def describe(statement: str, prefix: str) -> str:
    """``UPDATE <p>jobs`` / ``SELECT FROM <p>calls`` / ``INSERT INTO <p>calls (SELECT)``."""
    text = " ".join(statement.split())
    verb = _VERB.match(text)
    if verb is None:
        return text[:60]
    target = _TARGET.match(text) or _FROM.search(text)
    table = (target.group(1) if target else "?").strip('"').replace(prefix, "<p>")
    kind = verb.group(1).upper()
    if kind == "SELECT":
        return f"SELECT FROM {table}"
    if kind == "INSERT INTO" and re.search(r"\)\s*SELECT\b", text, re.I):
        return f"INSERT INTO {table} ... SELECT (fenced on lease)"
    if kind == "UPDATE":
        where = text.split(" WHERE ", 1)[1] if " WHERE " in text else ""
        if "lease_owner IS NULL" in where:
            return f"UPDATE {table} (claim)"
        if "lease_owner =" in where:
            return f"UPDATE {table} (fenced on lease)"
    return f"{kind} {table}"


# -- 1. commit floor ----------------------------------------------------------------------


def bench_commit_floor(url: str, prefix: str, n: int, storage: SQLStorage) -> dict[str, Any]:
    """Single-row INSERT round trips: psycopg autocommit (temp + logged table), SQLAlchemy."""
    out: dict[str, Any] = {"n": n}
    logged = f"{prefix}floor"
    with psycopg.connect(psycopg_dsn(url), autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE bench_floor (id serial PRIMARY KEY, v integer)")
        conn.execute(f"CREATE TABLE {logged} (id serial PRIMARY KEY, v integer)")
        for key, table in (("temp", "bench_floor"), ("logged", logged)):
            sql = f"INSERT INTO {table} (v) VALUES (%s)"
            for i in range(max(200, n // 10)):  # warm-up (also prepares the statement)
                conn.execute(sql, (i,))
            t0 = time.perf_counter()
            for i in range(n):
                conn.execute(sql, (i,))
            out[f"psycopg_{key}_us"] = (time.perf_counter() - t0) / n * 1e6
        out["synchronous_commit"] = conn.execute("SHOW synchronous_commit").fetchone()[0]
        out["server_version"] = conn.execute("SHOW server_version").fetchone()[0]

    # The same INSERT through SQLAlchemy Core on the store's own engine (AUTOCOMMIT,
    # connection checked out of the pool per statement, exactly like SQLStorage does).
    table = Table(logged, MetaData(), Column("id", Integer, primary_key=True), Column("v", Integer))
    engine = storage.engine
    for i in range(max(200, n // 10)):
        with engine.connect() as c:
            c.execute(table.insert().values(v=i))
    t0 = time.perf_counter()
    for i in range(n):
        with engine.connect() as c:
            c.execute(table.insert().values(v=i))
    out["sqlalchemy_logged_us"] = (time.perf_counter() - t0) / n * 1e6
    with engine.connect() as c:
        table.drop(c)
    return out


# -- in-process app (sections 2-4) ----------------------------------------------------------


class InProcess:
    def __init__(
        self,
        storage: SQLStorage,
        name: str = "bench_core",
        middleware: Sequence[str] = (),
        log: str = "null",
        provider: Any = None,
        exporter: DiscardSpanExporter | None = None,
    ) -> None:
        self.storage = storage
        # memory:// so that the eager apply_async() path needs no broker.
        self.app = Celery(name, broker="memory://", set_as_current=False)
        self.app.conf.update(task_eager_propagates=True, task_store_eager_result=False)
        # A long lease so the lease keeper (renews every lease/3) never adds a statement
        # to a counted job; renewal frequency is not what is measured here.
        self.durable = Durable(self.app, storage=storage, lease_seconds=600)
        # Observability (section 7 only); the app's own name keeps its logger apart.
        self.obs: Observability = install_observability(
            self.durable,
            middleware,
            log=log,
            logger_name=f"{name}.durable_jobs",
            provider=provider,
            exporter=exporter,
        )
        self.counter = SQLCounter(storage)
        self.loop: dict[str, Any] = {}
        loop, counter = self.loop, self.counter

        @self.app.task(name="bench_core.plain", shared=False)
        def plain(i: int) -> int:
            return i + 1

        @self.durable.task(name="bench_core.flow", shared=False)
        def flow(n: int) -> int:
            total = 0
            m0, t0, c0 = counter.mark, time.perf_counter(), time.process_time()
            for i in range(n):
                total += call(plain, i)
            loop["seconds"] = time.perf_counter() - t0
            # CPU of the whole process (all threads, so the span processor's too)
            loop["cpu_seconds"] = time.process_time() - c0
            loop["statements"] = counter.statements[m0 : counter.mark]
            return total

        @self.durable.task(name="bench_core.one_call", shared=False)
        def one_call(i: int) -> int:
            return call(plain, i)  # type: ignore[no-any-return]

        self.plain, self.flow, self.one_call = plain, flow, one_call

    def run_flow(
        self,
        n: int,
        task_id: str,
        *,
        count: bool = False,
    ) -> tuple[float, float, list[str], list[str]]:
        """apply() the n-call flow; (total s, loop s, loop statements, all statements).

        Statements are only collected (and engine listeners only attached) with count.
        """
        self.loop.clear()
        with self.counter.recording() if count else nullcontext(self.counter) as rec:
            t0 = time.perf_counter()
            result = self.flow.apply(args=(n,), task_id=task_id)
            total = time.perf_counter() - t0
        expected = sum(i + 1 for i in range(n))
        if result.result != expected:
            raise RuntimeError(f"flow({n}) returned {result.result!r}, expected {expected}")
        if not count:
            return total, self.loop["seconds"], [], []
        return total, self.loop["seconds"], list(self.loop["statements"]), list(rec.statements)

    def reset_job(self, job_id: str) -> None:
        """Make a finished job claimable again, as if its worker had died mid-run."""
        jobs = self.storage.tables.jobs
        with self.storage.engine.connect() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(
                    state="pending",
                    lease_owner=None,
                    lease_expires_at=None,
                    result=None,
                    error=None,
                    finished_at=None,
                )
            )

    def count_calls(self, root_id: str) -> int:
        calls = self.storage.tables.calls
        with self.storage.engine.connect() as conn:
            return int(
                conn.scalar(
                    select(func.count()).select_from(calls).where(calls.c.root_id == root_id)
                )
            )


class RecordCallProbe:
    """Times the store's record_call() alone on a leased job, and the exact statement it
    sends replayed raw with psycopg (server + wire cost only)."""

    def __init__(self, ip: InProcess, run: str) -> None:
        storage = self.storage = ip.storage
        self.now = now = datetime.now(timezone.utc)
        self.job_id, owner = f"{run}-breakdown", "bench-breakdown"
        storage.create_job(
            NewJob(
                id=self.job_id,
                task="bench_core.flow",
                args="[]",
                kwargs="{}",
                queue=None,
                priority=None,
                created_at=now,
                deliver_by=now + timedelta(hours=1),
            )
        )
        claim = storage.claim_job(self.job_id, owner, now, now + timedelta(hours=1))
        if claim.outcome is not ClaimOutcome.CLAIMED:
            raise RuntimeError("could not claim the breakdown job")
        self.lease = Lease(self.job_id, owner)
        self.seq = 0
        for _ in range(200):  # warm-up
            self.record()
        with ip.counter.recording() as rec:
            self.record()
        self.statement, sent = rec.statements[0], rec.params[0]
        # as the driver got them: a mapping (named paramstyle) or a sequence (positional)
        self.params: Any = dict(sent) if isinstance(sent, dict) else list(sent)
        keys = self.params.keys() if isinstance(self.params, dict) else range(len(self.params))
        self.seq_key = next(k for k in keys if self.params[k] == self.seq)
        self.conn = psycopg.connect(psycopg_dsn(storage._url), autocommit=True)
        for _ in range(200):  # warm-up (psycopg prepares the statement after 5 runs)
            self.raw()
        # The commit floor again, interleaved with the fresh jobs: the ratio of the two
        # is then taken under the same machine conditions.
        self.floor_table = f"{storage.tables.jobs.name}_floor_probe"
        self.conn.execute(f"DROP TABLE IF EXISTS {self.floor_table}")
        self.conn.execute(f"CREATE TABLE {self.floor_table} (id serial PRIMARY KEY, v integer)")
        self.floor_sql = f"INSERT INTO {self.floor_table} (v) VALUES (%s)"
        for _ in range(200):
            self.floor()

    def record(self) -> None:
        self.seq += 1
        self.storage.record_call(
            CallRecord(
                job_id=self.job_id,
                seq=self.seq,
                root_id=self.job_id,
                name="bench_core.plain",
                args_digest="0" * 64,
                state=CallState.SUCCEEDED,
                attempts=1,
                result="1",
                error=None,
                started_at=self.now,
                finished_at=self.now,
            ),
            self.lease,
        )

    def raw(self) -> None:
        self.seq += 1
        self.params[self.seq_key] = self.seq
        if self.conn.execute(self.statement, self.params).rowcount != 1:
            raise RuntimeError("the raw fenced INSERT inserted nothing")

    def floor(self) -> None:
        self.conn.execute(self.floor_sql, (self.seq,))

    def time_us(self, fn: Callable[[], None], n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e6

    def close(self) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {self.floor_table}")
        self.conn.close()


def bench_fresh_calls(ip: InProcess, run: str, n: int, reps: int) -> dict[str, Any]:
    for w in range(3):  # warm-up: engine, pool, compiled-statement cache, tracer
        ip.run_flow(min(n, 50), f"{run}-warm-{w}")
    probe = RecordCallProbe(ip, run)
    # Interleaved so that the breakdown rows see the same machine conditions as the
    # fresh calls: each rep = one fresh job, n record_call(), n raw statements.
    totals, loops, record_us, raw_us, floor_us = [], [], [], [], []
    try:
        for r in range(reps):
            floor_us.append(probe.time_us(probe.floor, n))
            total, loop_s, _, _ = ip.run_flow(n, f"{run}-fresh-{r}")
            totals.append(total)
            loops.append(loop_s)
            record_us.append(probe.time_us(probe.record, n))
            raw_us.append(probe.time_us(probe.raw, n))
    finally:
        probe.close()
    # one more job, with the statement counter attached (not part of the timings)
    _, _, loop_stmts, job_stmts = ip.run_flow(n, f"{run}-fresh-counted", count=True)
    # The same function called plainly, two ways.
    plain = ip.plain
    run_s, call_s = [], []
    for _ in range(max(reps, 5)):
        t0 = time.perf_counter()
        for i in range(n):
            plain.run(i)
        run_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(n):
            plain(i)
        call_s.append(time.perf_counter() - t0)
    fresh = [lp / n * 1e6 for lp in loops]
    fresh_us = median(fresh)
    plain_us = median(run_s) / n * 1e6
    return {
        "n": n,
        "reps": reps,
        "fresh_call_us": fresh_us,
        "fresh_call_us_min": min(fresh),
        "floor_interleaved_us": median(floor_us),
        "fresh_vs_floor": median(f / fl for f, fl in zip(fresh, floor_us, strict=True)),
        "plain_run_us": plain_us,
        "plain_task_call_us": median(call_s) / n * 1e6,
        "overhead_us": fresh_us - plain_us,
        "job_total_ms": median(totals) * 1e3,
        "job_fixed_ms": median(t - lp for t, lp in zip(totals, loops, strict=True)) * 1e3,
        "statements_per_fresh_call": len(loop_stmts) / n,
        "statements_per_fresh_job": len(job_stmts),
        "breakdown": {
            "record_call_us": median(record_us),
            "raw_statement_us": median(raw_us),
            "sqlalchemy_us": median(a - b for a, b in zip(record_us, raw_us, strict=True)),
            "call_bookkeeping_us": median(
                f - rc - plain_us for f, rc in zip(fresh, record_us, strict=True)
            ),
            "statement": " ".join(probe.statement.split()),
        },
    }


def bench_replay(ip: InProcess, run: str, n: int, reps: int) -> dict[str, Any]:
    job_id = f"{run}-replay"
    fresh_total, fresh_loop, _, _ = ip.run_flow(n, job_id)
    recorded = ip.count_calls(job_id)
    totals, loops = [], []
    for _ in range(reps):
        ip.reset_job(job_id)
        total, loop_s, _, _ = ip.run_flow(n, job_id)
        totals.append(total)
        loops.append(loop_s)
    # one more replay, with the statement counter attached (not part of the timings)
    ip.reset_job(job_id)
    _, _, in_loop, all_stmts = ip.run_flow(n, job_id, count=True)
    after = ip.count_calls(job_id)
    return {
        "n": n,
        "reps": reps,
        "fresh_run_ms": fresh_total * 1e3,
        "fresh_loop_us_per_call": fresh_loop / n * 1e6,
        "replay_total_ms": median(totals) * 1e3,
        "replay_us_per_call": median(totals) / n * 1e6,
        "replay_loop_us_per_call": median(loops) / n * 1e6,
        "statements_in_replay_loop": len(in_loop),
        "statements_per_replayed_call": len(in_loop) / n,
        "statements_per_replay_job": len(all_stmts),
        "replay_job_statements": [describe(s, ip.storage.tables.jobs.name[:-4]) for s in all_stmts],
        "calls_recorded_before": recorded,
        "calls_recorded_after": after,
    }


def bench_statements(ip: InProcess, run: str) -> dict[str, Any]:
    prefix = ip.storage.tables.jobs.name[: -len("jobs")]
    counter = ip.counter
    with ip.storage.engine.connect() as conn:
        autocommit = conn.connection.dbapi_connection.autocommit  # type: ignore[union-attr]
    out: dict[str, Any] = {
        "engine_isolation_level": "AUTOCOMMIT" if autocommit else "transactional (autocommit off!)"
    }

    # history load of a job that has 1,000 calls: one SELECT
    with counter.recording() as rec:
        history = ip.storage.load_history(f"{run}-replay")
    out["history_load"] = {"statements": len(rec.statements), "rows": len(history), **rec.events()}

    # a one-call job the normal way: enqueue writes the job row, the worker claims it.
    # Eager apply_async() = DurableTask.apply_async (INSERT job) + apply() in-process.
    ip.app.conf.task_always_eager = True
    try:
        ip.one_call.apply_async((1,), task_id=f"{run}-eager-warm")
        with counter.recording() as rec:
            result = ip.one_call.apply_async((1,), task_id=f"{run}-eager")
        assert result.result == 2, result.result
    finally:
        ip.app.conf.task_always_eager = False
    stmts = [describe(s, prefix) for s in rec.statements]
    enqueue = 1 if stmts and stmts[0] == "INSERT INTO <p>jobs" else 0
    out["one_call_job_enqueued"] = {
        "statements": len(stmts),
        "statements_excluding_enqueue": len(stmts) - enqueue,
        "sequence": stmts,
        **rec.events(),
    }

    # the same job with bare apply() on an id that was never enqueued (no job row yet)
    ip.one_call.apply(args=(1,), task_id=f"{run}-apply-warm")
    with counter.recording() as rec:
        result = ip.one_call.apply(args=(1,), task_id=f"{run}-apply")
    assert result.result == 2, result.result
    stmts = [describe(s, prefix) for s in rec.statements]
    out["one_call_job_bare_apply"] = {"statements": len(stmts), "sequence": stmts, **rec.events()}
    return out


# -- 7a. observability middleware, in-process -------------------------------------------


def middleware_configs(kinds: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """bare, each kind alone (when there is more than one), all of them."""
    configs: list[tuple[str, tuple[str, ...]]] = [("bare", ())]
    if len(kinds) > 1:
        configs += [(kind, (kind,)) for kind in kinds]
    configs.append(("all", tuple(kinds)))
    return configs


def count_lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def bench_middleware_calls_logged(
    args: argparse.Namespace, run: str, storage: SQLStorage
) -> dict[str, Any]:
    """7a with the LoggingMiddleware file made (and removed) here."""
    log = "null"
    if "logging" in args.middleware_kinds and args.middleware_log == "file":
        log = tempfile.mkstemp(prefix="bench_jobs_", suffix=".log")[1]
    try:
        return bench_middleware_calls(
            storage, run, args.middleware_kinds, args.calls, args.middleware_reps, log
        )
    finally:
        if log != "null":
            Path(log).unlink(missing_ok=True)


def bench_middleware_calls(
    storage: SQLStorage, run: str, kinds: Sequence[str], n: int, reps: int, log: str
) -> dict[str, Any]:
    """Fresh call() per config (bare, each middleware alone, all), one app per config on
    the same store, jobs interleaved: rep r runs every config once, the order reversed
    on odd reps (ABC CBA ...), so drift of the machine hits every config alike."""
    exporter = DiscardSpanExporter()
    provider = make_tracer_provider(exporter)  # one BatchSpanProcessor for all configs
    configs = middleware_configs(kinds)
    ips = {
        label: InProcess(
            storage,
            name=f"bench_core_{label}",
            middleware=ks,
            log=log,
            provider=provider,
            exporter=exporter,
        )
        for label, ks in configs
    }
    expected = {"spans": 0, "log_lines": 0}

    def job(
        label: str,
        calls: int,
        task_id: str,
        count: bool = False,
    ) -> tuple[float, float, list[str], list[str]]:
        out = ips[label].run_flow(calls, task_id, count=count)
        ks = dict(configs)[label]
        expected["spans"] += (1 + calls) if "otel" in ks else 0  # job span + call spans
        expected["log_lines"] += (2 + calls) if "logging" in ks else 0  # start, calls, end
        return out

    try:
        for label in ips:
            for w in range(3):
                job(label, min(n, 50), f"{run}-mw-{label}-warm-{w}")
        loops: dict[str, list[float]] = {label: [] for label in ips}
        totals: dict[str, list[float]] = {label: [] for label in ips}
        cpus: dict[str, list[float]] = {label: [] for label in ips}
        labels = list(ips)
        for r in range(reps):
            for label in labels if r % 2 == 0 else labels[::-1]:
                total, loop_s, _, _ = job(label, n, f"{run}-mw-{label}-{r}")
                totals[label].append(total)
                loops[label].append(loop_s)
                cpus[label].append(ips[label].loop["cpu_seconds"])
        # one more job of "all", with the statement counter attached (not timed)
        _, _, loop_stmts, _ = job("all", n, f"{run}-mw-all-counted", count=True)
        provider.force_flush()
        base, base_cpu = loops["bare"], cpus["bare"]
        per: dict[str, Any] = {}
        for label, ks in configs:
            lp, tt, cp = loops[label], totals[label], cpus[label]
            per[label] = {
                "middleware": list(ks),
                "fresh_call_us": median(lp) / n * 1e6,
                "fresh_call_us_min": min(lp) / n * 1e6,
                # paired with the bare job of the same rep
                "added_us": median([a - b for a, b in zip(lp, base, strict=True)]) / n * 1e6,
                "ratio": median([a / b for a, b in zip(lp, base, strict=True)]),
                # CPU time of this process during the call loop: the DB wait excluded,
                # so far less noisy than the wall clock on a shared machine
                "cpu_us": median(cp) / n * 1e6,
                "cpu_added_us": median([a - b for a, b in zip(cp, base_cpu, strict=True)])
                / n
                * 1e6,
                "cpu_ratio": median([a / b for a, b in zip(cp, base_cpu, strict=True)]),
                "job_total_ms": median(tt) * 1e3,
                "job_fixed_ms": median([t - x for t, x in zip(tt, lp, strict=True)]) * 1e3,
            }
        all_obs = ips["all"].obs
        checks: dict[str, Any] = {
            "statements_per_fresh_call_all": len(loop_stmts) / n,
            "spans_exported": exporter.spans,
            "spans_expected": expected["spans"],
            "prometheus_calls_all": all_obs.calls_counted("bench_core.flow"),
            "prometheus_calls_expected": (
                3 * min(n, 50) + (reps + 1) * n if "prometheus" in kinds else 0
            ),
        }
        if log != "null":
            checks.update(log_lines=count_lines(log), log_lines_expected=expected["log_lines"])
        return {
            "n": n,
            "reps": reps,
            "middleware": list(kinds),
            "log": log,
            "configs": per,
            "checks": checks,
        }
    finally:
        provider.shutdown()


# -- 5. DBOS ------------------------------------------------------------------------------


def dbos_child(args: argparse.Namespace) -> int:
    """Runs in a subprocess (its own interpreter, DBOS's threads and logging stay there)."""
    result: dict[str, Any] = {}
    try:
        import dbos
        from dbos import DBOS, SetWorkflowID

        result["version"] = getattr(dbos, "__version__", None) or _dist_version("dbos")
        sys_url = make_url(args.postgres_url).set(database=args.dbos_db)
        instance = DBOS(
            config={
                "name": "celery-durable-bench",
                "system_database_url": sys_url.render_as_string(hide_password=False),
                "log_level": "WARNING",
            }
        )
        loop: dict[str, Any] = {}
        statements: list[str] = []
        tally = {"commits": 0, "rollbacks": 0, "active": False}

        @DBOS.step()
        def step(i: int) -> int:
            return i + 1

        @DBOS.workflow()
        def workflow(n: int) -> int:
            total = 0
            m0, t0 = len(statements), time.perf_counter()
            for i in range(n):
                total += step(i)
            loop["seconds"] = time.perf_counter() - t0
            loop["statements"] = len(statements) - m0
            return total

        DBOS.launch()
        engine = instance._sys_db.engine
        event.listen(
            engine,
            "before_cursor_execute",
            lambda c, cur, s, *a: statements.append(s) if tally["active"] else None,
        )
        event.listen(
            engine,
            "commit",
            lambda c: tally.__setitem__(
                "commits", tally["commits"] + (1 if tally["active"] else 0)
            ),
        )
        event.listen(
            engine,
            "rollback",
            lambda c: tally.__setitem__(
                "rollbacks", tally["rollbacks"] + (1 if tally["active"] else 0)
            ),
        )

        n = args.dbos_steps
        for w in range(3):
            with SetWorkflowID(f"warm-{w}-{uuid.uuid4().hex}"):
                workflow(min(n, 50))
        totals, loops, stmts, commits = [], [], [], []
        for _ in range(args.reps):
            statements.clear()
            tally.update(commits=0, rollbacks=0, active=True)
            t0 = time.perf_counter()
            with SetWorkflowID(uuid.uuid4().hex):
                value = workflow(n)
            totals.append(time.perf_counter() - t0)
            tally["active"] = False
            assert value == sum(i + 1 for i in range(n)), value
            loops.append(loop["seconds"])
            stmts.append(loop["statements"])
            commits.append(tally["commits"])
        result.update(
            ok=True,
            n=n,
            reps=args.reps,
            ms_per_step=median(loops) / n * 1e3,
            ms_per_step_min=min(loops) / n * 1e3,
            workflow_total_ms=median(totals) * 1e3,
            statements_per_step=median(stmts) / n,
            commits_per_step=median(commits) / n,
            # psycopg sends BEGIN as its own command when a transaction starts, so each
            # committed transaction costs statements + BEGIN + COMMIT round trips.
            round_trips_per_step=(median(stmts) + 2 * median(commits)) / n,
        )
        DBOS.destroy()
    except BaseException as exc:  # report, never crash the parent
        result.update(
            ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
        )
    Path(args.dbos_out).write_text(json.dumps(result))
    return 0


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def bench_dbos(args: argparse.Namespace, run: str) -> dict[str, Any]:
    db = f"bench_dbos_{run}"
    out_file = Path(tempfile.mkstemp(prefix="bench_dbos_", suffix=".json")[1])
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--dbos-child",
        "--postgres-url",
        args.postgres_url,
        "--dbos-db",
        db,
        "--dbos-steps",
        str(args.dbos_steps),
        "--reps",
        str(args.reps),
        "--dbos-out",
        str(out_file),
    ]
    result: dict[str, Any] = {"system_database": db}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.dbos_timeout)
        text = out_file.read_text()
        if text:
            result.update(json.loads(text))
        else:
            result.update(
                ok=False,
                error=f"DBOS child exited {proc.returncode} without a "
                f"result; stderr tail: {proc.stderr[-2000:]}",
            )
    except subprocess.TimeoutExpired:
        result.update(ok=False, error=f"DBOS child did not finish in {args.dbos_timeout}s")
    except Exception as exc:
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        out_file.unlink(missing_ok=True)
        try:
            with psycopg.connect(
                psycopg_dsn(args.postgres_url, "postgres"), autocommit=True
            ) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        except Exception as exc:
            result["cleanup_error"] = f"could not drop database {db}: {exc}"
    return result


# -- 6. throughput with real workers ------------------------------------------------------


class Workers:
    def __init__(self, env: dict[str, str], concurrency: int, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench_app",
            "worker",
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "-Q",
            env["BENCH_QUEUE"],
            "-n",
            f"{env['BENCH_QUEUE']}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=HERE,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the worker's main process and its pool processes,
        plus that of pool processes already reaped; from /proc (Linux)."""
        ticks = 0
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                fields = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            pid, ppid = int(pid_dir.name), int(fields[1])
            if pid == self.proc.pid:
                ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            elif ppid == self.proc.pid:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def tail(self, chars: int = 3000) -> str:
        with suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        # prefork children left behind by a parent that died first
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def wait_until(
    done: Callable[[], int],
    target: int,
    timeout: float,
    workers: Sequence[Workers],
    failed: Callable[[], int] | None = None,
) -> float:
    deadline = time.perf_counter() + timeout
    while True:
        if done() >= target:
            return time.perf_counter()
        if failed is not None and failed():
            raise RuntimeError(
                f"{failed()} durable job(s) failed; worker log:\n{workers[-1].tail()}"
            )
        for w in workers:
            if not w.alive():
                raise RuntimeError(f"a worker exited; log:\n{w.tail()}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"only {done()}/{target} finished after {timeout}s")
        time.sleep(0.05)


class WorkerSetup:
    """One worker (its own queue) and the producer-side app that sends to it."""

    def __init__(
        self,
        label: str,
        kinds: Sequence[str],
        args: argparse.Namespace,
        run: str,
        prefix: str,
        counter_key: str,
        span_key: str,
        log: str,
        synchronous_commit: str | None = None,
    ) -> None:
        self.label, self.kinds, self.log = label, tuple(kinds), log
        self.queue = f"bench_{run}" if label == "bare" else f"bench_{run}_{label}"
        env = {
            **os.environ,
            "BENCH_BROKER_URL": args.broker_url,
            "BENCH_QUEUE": self.queue,
            "BENCH_DURABLE_DATABASE_URL": args.postgres_url,
            "BENCH_DURABLE_TABLE_PREFIX": prefix,
            "BENCH_COUNTER_URL": args.broker_url,
            "BENCH_COUNTER_KEY": counter_key,
            "BENCH_MIDDLEWARE": ",".join(kinds),
            "BENCH_MIDDLEWARE_LOG": log,
            "BENCH_SPAN_COUNTER_KEY": span_key if "otel" in kinds else "",
            "BENCH_SYNCHRONOUS_COMMIT": synchronous_commit or "",
            "PYTHONPATH": os.pathsep.join(
                [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]
            ),
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # single-process metrics, as in 7a
        self.env = env
        # The producer gets the same middleware: on_enqueue (Prometheus' enqueued
        # counter) and OTel's message header run where jobs are enqueued.
        self.app = create_app(
            broker=args.broker_url,
            queue=self.queue,
            store=args.postgres_url,
            prefix=prefix,
            counter_url=args.broker_url,
            counter_key=counter_key,
            middleware=kinds,
            middleware_log="null",
            name=f"bench_app_{label}",
        )
        self.obs: Observability = self.app.bench_observability  # type: ignore[attr-defined]
        self.plain = self.app.tasks["bench.plain"]
        self.one_call = self.app.tasks["bench.one_call"]
        self.workers: Workers | None = None

    def start(self, concurrency: int) -> None:
        log_path = Path(tempfile.mkstemp(prefix=f"bench_worker_{self.label}_", suffix=".log")[1])
        self.workers = Workers(self.env, concurrency, log_path)

    def enqueue_span(self) -> Any:
        """With OTel on, the producer enqueues inside a span (one per batch), so every
        job carries a traceparent and the workers continue the trace from the header."""
        if self.obs.provider is None:
            return nullcontext()
        tracer = self.obs.provider.get_tracer("bench_core")
        return tracer.start_as_current_span("bench.enqueue")

    def warm_up(self, n: int) -> None:
        with self.enqueue_span():
            for i in range(n):
                self.plain.delay(i)
                self.one_call.delay(i)

    def stop(self) -> None:
        if self.workers is not None:
            self.workers.stop()
            self.workers.log_path.unlink(missing_ok=True)
        with suppress(Exception):
            if self.obs.provider is not None:
                self.obs.provider.shutdown()
        with suppress(Exception):
            self.app.close()


def _rounds(
    args: argparse.Namespace,
    setups: list[WorkerSetup],
    workers: list[Workers],
    plain_done: Callable[[], int],
    durable_done: Callable[[], int],
    durable_failed: Callable[[], int],
    floor_done: Callable[[], int],
) -> list[dict[str, float]]:
    """Round k: each setup in turn (order reversed on odd k), N plain tasks then N
    durable jobs (then, on the bare setup, N statements-only tasks); keys of the bare
    setup unprefixed, the others' prefixed by label."""
    rounds: list[dict[str, float]] = []
    n = args.throughput_n
    for k in range(args.rounds):
        row: dict[str, float] = {}
        for setup in setups if k % 2 == 0 else setups[::-1]:
            key = "" if setup.label == "bare" else f"{setup.label}_"
            assert setup.workers is not None
            cpu = setup.workers.cpu_seconds
            base, w0, p0 = plain_done(), cpu(), postgres_cpu_seconds()
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                setup.plain.delay(i)
            t_enq, c_enq = time.perf_counter(), time.process_time()
            t1 = wait_until(plain_done, base + n, args.throughput_timeout, workers)
            row.update(
                {
                    f"{key}plain_per_s": n / (t1 - t0),
                    f"{key}plain_enqueue_per_s": n / (t_enq - t0),
                    f"{key}plain_enqueue_cpu_us": (c_enq - c0) / n * 1e6,
                    f"{key}plain_worker_cpu_ms": (cpu() - w0) / n * 1e3,
                    f"{key}plain_postgres_cpu_ms": (postgres_cpu_seconds() - p0) / n * 1e3,
                }
            )
            base, w0, p0 = durable_done(), cpu(), postgres_cpu_seconds()
            t0, c0 = time.perf_counter(), time.process_time()
            with setup.enqueue_span():
                for i in range(n):
                    setup.one_call.delay(i)
            t_enq, c_enq = time.perf_counter(), time.process_time()
            t1 = wait_until(
                durable_done, base + n, args.throughput_timeout, workers, durable_failed
            )
            row.update(
                {
                    f"{key}durable_per_s": n / (t1 - t0),
                    f"{key}durable_enqueue_per_s": n / (t_enq - t0),
                    f"{key}durable_enqueue_cpu_us": (c_enq - c0) / n * 1e6,
                    f"{key}durable_worker_cpu_ms": (cpu() - w0) / n * 1e3,
                    f"{key}durable_postgres_cpu_ms": (postgres_cpu_seconds() - p0) / n * 1e3,
                }
            )
            if setup.label == "bare":
                row.update(_statements_only(args, setup, workers, floor_done))
            log(
                f"  round {k + 1} {setup.label:>4}: plain {row[f'{key}plain_per_s']:.0f}/s,"
                f" durable {row[f'{key}durable_per_s']:.0f}/s"
                + (f", statements only {row['floor_per_s']:.0f}/s" if setup.label == "bare" else "")
            )
        rounds.append(row)
    return rounds


def _statements_only(
    args: argparse.Namespace,
    setup: WorkerSetup,
    workers: list[Workers],
    floor_done: Callable[[], int],
) -> dict[str, float]:
    """The statement floor: N plain tasks that each send a one-call job's four
    statements through the store (the producer writes the row, the task claims,
    checkpoints and finishes) with none of the engine around them."""
    n = args.throughput_n
    assert setup.workers is not None
    cpu, enqueue = setup.workers.cpu_seconds, setup.app.bench_enqueue_statements_only  # type: ignore[attr-defined]
    base, w0, p0 = floor_done(), cpu(), postgres_cpu_seconds()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        enqueue(i)
    t_enq, c_enq = time.perf_counter(), time.process_time()
    t1 = wait_until(floor_done, base + n, args.throughput_timeout, workers)
    return {
        "floor_per_s": n / (t1 - t0),
        "floor_enqueue_per_s": n / (t_enq - t0),
        "floor_enqueue_cpu_us": (c_enq - c0) / n * 1e6,
        "floor_worker_cpu_ms": (cpu() - w0) / n * 1e3,
        "floor_postgres_cpu_ms": (postgres_cpu_seconds() - p0) / n * 1e3,
    }


def _middleware_throughput(
    args: argparse.Namespace,
    kinds: Sequence[str],
    result: dict[str, Any],
    rounds: list[dict[str, float]],
    warm: int,
    spans: Callable[[], int],
    log_file: str | None,
) -> dict[str, Any]:
    """Section 7b: the middleware worker against the bare one, plus the checks that the
    middleware did run in the workers (spans exported, log lines written)."""
    mw_jobs = warm + args.rounds * args.throughput_n
    spans_expected = 2 * mw_jobs if "otel" in kinds else 0  # job span + call span
    # the BatchSpanProcessor exports every 5 s or per 512 spans: wait for the rest
    deadline = time.perf_counter() + 8
    while spans() < spans_expected and time.perf_counter() < deadline:
        time.sleep(0.2)
    mw: dict[str, Any] = {
        "middleware": list(kinds),
        "log": args.middleware_log,
        "durable_ratio": result["mw_durable_per_s"] / result["durable_per_s"],
        "durable_ratio_paired_median": median(
            [row["mw_durable_per_s"] / row["durable_per_s"] for row in rounds]
        ),
        "plain_ratio": result["mw_plain_per_s"] / result["plain_per_s"],
        "plain_ratio_paired_median": median(
            [row["mw_plain_per_s"] / row["plain_per_s"] for row in rounds]
        ),
        "ratio_vs_plain": result["mw_durable_per_s"] / result["mw_plain_per_s"],
        "durable_worker_cpu_ratio": (
            result["mw_durable_worker_cpu_ms"] / result["durable_worker_cpu_ms"]
        ),
        "durable_worker_cpu_added_ms": (
            result["mw_durable_worker_cpu_ms"] - result["durable_worker_cpu_ms"]
        ),
        "durable_enqueue_cpu_ratio": (
            result["mw_durable_enqueue_cpu_us"] / result["durable_enqueue_cpu_us"]
        ),
        "plain_worker_cpu_ratio": (
            result["mw_plain_worker_cpu_ms"] / result["plain_worker_cpu_ms"]
        ),
        "spans_exported": spans(),
        "spans_expected": spans_expected,
    }
    if log_file is not None:
        mw.update(log_lines=count_lines(log_file), log_lines_expected=3 * mw_jobs)
    return mw


def _setups(
    args: argparse.Namespace,
    kinds: Sequence[str],
    run: str,
    prefix: str,
    counter_key: str,
    span_key: str,
    log: str,
) -> list[WorkerSetup]:
    """The bare worker; the middleware one (unless --skip-middleware); the one with the
    opt-in commit policy, durable_synchronous_commit='off' (unless --skip-commit-policy)."""
    setups = [WorkerSetup("bare", (), args, run, prefix, counter_key, span_key, log)]
    if kinds:
        setups.append(WorkerSetup("mw", kinds, args, run, prefix, counter_key, span_key, log))
    if not args.skip_commit_policy:
        setups.append(
            WorkerSetup("async", (), args, run, prefix, counter_key, span_key, "null", "off")
        )
    return setups


def _batched(
    args: argparse.Namespace,
    setup: WorkerSetup,
    workers: list[Workers],
    durable_done: Callable[[], int],
    durable_failed: Callable[[], int],
) -> dict[str, float]:
    """The same N one-call jobs enqueued with one durable.enqueue_many() on the bare
    worker: enqueue rate and end-to-end rate."""
    n, durable = args.throughput_n, Durable.of(setup.app)
    base = durable_done()
    t0 = time.perf_counter()
    durable.enqueue_many([setup.one_call.s(i) for i in range(n)])
    t_enq = time.perf_counter()
    t1 = wait_until(durable_done, base + n, args.throughput_timeout, workers, durable_failed)
    return {"batch_enqueue_per_s": n / (t_enq - t0), "batch_per_s": n / (t1 - t0)}


def _ratios(result: dict[str, Any]) -> dict[str, float]:
    ratios = {
        "ratio": result["durable_per_s"] / result["plain_per_s"],
        "floor_ratio": result["floor_per_s"] / result["plain_per_s"],
        "durable_vs_floor": result["durable_per_s"] / result["floor_per_s"],
    }
    if "async_durable_per_s" in result:
        ratios["async_ratio"] = result["async_durable_per_s"] / result["async_plain_per_s"]
        ratios["async_vs_bare"] = result["async_durable_per_s"] / result["durable_per_s"]
    return ratios


def bench_throughput(
    args: argparse.Namespace, run: str, storage: SQLStorage, prefix: str
) -> dict[str, Any]:
    """Bare worker (section 6) and, unless --skip-middleware, a second worker with all
    the middleware on (section 7b). Both run for the whole test, each on its own queue;
    round k measures the configs in the order bare, middleware (k even) or reversed (k
    odd), plain tasks then durable jobs on each, so only one worker is busy at a time."""
    import redis

    counter_key = f"bench:{run}:plain_done"
    span_key = f"bench:{run}:spans"
    r = redis.Redis.from_url(args.broker_url)
    kinds = () if args.skip_middleware else args.middleware_kinds
    log_file = (
        tempfile.mkstemp(prefix="bench_worker_jobs_", suffix=".log")[1]
        if "logging" in kinds and args.middleware_log == "file"
        else None
    )
    setups = _setups(args, kinds, run, prefix, counter_key, span_key, log_file or "null")
    Durable.of(setups[0].app).migrate()  # already migrated by this run; idempotent

    def plain_done() -> int:
        return int(r.get(counter_key) or 0)

    def durable_done() -> int:
        return int(r.get(f"{counter_key}:durable") or 0)

    def durable_failed() -> int:
        return int(r.get(f"{counter_key}:failed") or 0)

    def floor_done() -> int:
        return int(r.get(f"{counter_key}:floor") or 0)

    result: dict[str, Any] = {
        "n": args.throughput_n,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "broker": args.broker_url,
        "queue": setups[0].queue,
        "workers": len(setups),
    }
    try:
        for setup in setups:
            setup.start(args.concurrency)
        workers = [s.workers for s in setups if s.workers is not None]
        # warm-up: every pool child imports, connects to Redis and PostgreSQL
        warm = 50
        for setup in setups:
            setup.warm_up(warm)
        wait_until(plain_done, warm * len(setups), 60, workers)
        wait_until(durable_done, warm * len(setups), 60, workers, durable_failed)
        rounds = _rounds(
            args, setups, workers, plain_done, durable_done, durable_failed, floor_done
        )
        result["rounds_detail"] = rounds
        for key in rounds[0]:
            result[key] = statistics.mean(row[key] for row in rounds)
        result.update(_ratios(result))
        result.update(_batched(args, setups[0], workers, durable_done, durable_failed))
        if kinds:
            result["middleware"] = _middleware_throughput(
                args, kinds, result, rounds, warm, lambda: int(r.get(span_key) or 0), log_file
            )
        result["ok"] = True
    except Exception as exc:
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        for setup in setups:
            setup.stop()
        if log_file is not None:
            Path(log_file).unlink(missing_ok=True)
        with suppress(Exception):
            # the queues, their priority sub-queues and kombu's binding keys: all carry
            # the run's unique queue name
            keys = [
                counter_key,
                f"{counter_key}:durable",
                f"{counter_key}:failed",
                f"{counter_key}:floor",
                span_key,
                *r.scan_iter(match=f"*bench_{run}*", count=1000),
            ]
            r.delete(*keys)
    return result


# -- report -------------------------------------------------------------------------------


def print_report(res: dict[str, Any]) -> None:
    def line(label: str, value: str, note: str = "") -> None:
        print(f"  {label:<52} {value:>14}  {note}")

    def verdict(ok: bool) -> str:
        return "OK" if ok else "OVER BUDGET"

    print(
        f"\ncelery-durable core benchmark  run={res['run']}  "
        f"PostgreSQL {res['floor']['server_version']}  "
        f"synchronous_commit={res['floor']['synchronous_commit']}  "
        f"python {res['python']}  cpus={res['cpus']}"
    )
    f = res["floor"]
    print(f"\n1. Commit floor (single-row INSERT + COMMIT, mean of {f['n']})")
    line(
        "psycopg autocommit, regular (WAL-logged) table",
        f"{f['psycopg_logged_us']:.1f} us",
        "(the floor)",
    )
    line("psycopg autocommit, TEMP table (no WAL flush)", f"{f['psycopg_temp_us']:.1f} us")
    line(
        "SQLAlchemy Core, same engine setup as SQLStorage",
        f"{f['sqlalchemy_logged_us']:.1f} us",
        "(regular table)",
    )

    c = res["fresh"]
    floor = f["psycopg_temp_us"]
    print(
        f"\n2. Fresh call() inside a durable task (apply(), {c['n']} calls/job, "
        f"median of {c['reps']} jobs)"
    )
    line(
        "per fresh call",
        f"{c['fresh_call_us']:.1f} us",
        f"(best job {c['fresh_call_us_min']:.1f} us)",
    )
    line("per plain call  plain_task.run(i)", f"{c['plain_run_us']:.2f} us")
    line("per plain call  plain_task(i)  (Task.__call__)", f"{c['plain_task_call_us']:.2f} us")
    line("overhead per call (fresh - plain .run)", f"{c['overhead_us']:.1f} us")
    line(
        "logged-table commit, interleaved with the jobs",
        f"{c['floor_interleaved_us']:.1f} us",
        "(the floor this ratio uses)",
    )
    ratio = c["fresh_vs_floor"]
    line(
        "fresh call / logged-table commit (median per job)",
        f"{ratio:.2f}x",
        f"budget <= {BUDGET_CALL_VS_FLOOR}x: {verdict(ratio <= BUDGET_CALL_VS_FLOOR)}",
    )
    line(
        "overhead / temp-table commit",
        f"{c['overhead_us'] / floor:.2f}x",
        "(no WAL flush: noise as a yardstick)",
    )
    line("statements per fresh call", f"{c['statements_per_fresh_call']:g}", "(expect 1)")
    k = c["breakdown"]
    print("   where a fresh call's time goes (medians, interleaved with the jobs above):")
    line("  store.record_call() alone", f"{k['record_call_us']:.1f} us")
    line(
        "    its INSERT..SELECT sent raw with psycopg",
        f"{k['raw_statement_us']:.1f} us",
        "(server + wire)",
    )
    line(
        "    the store's own Python (hot path)",
        f"{k['sqlalchemy_us']:.1f} us",
        "(record_call - raw)",
    )
    line(
        "  call() bookkeeping outside the store",
        f"{k['call_bookkeeping_us']:.1f} us",
        "(fresh - record_call - plain)",
    )
    line("job total (apply() incl. tracer, claim, history, finish)", f"{c['job_total_ms']:.1f} ms")
    fixed = c["statements_per_fresh_job"] - round(c["statements_per_fresh_call"] * c["n"])
    line(
        "job fixed cost (job total - call loop)",
        f"{c['job_fixed_ms']:.2f} ms",
        f"({fixed} statements: bare apply() creates the missing job row, see 4.)",
    )

    p = res["replay"]
    print(f"\n3. Replay of a job with {p['n']} completed calls (median of {p['reps']})")
    line("first (fresh) run of the job", f"{p['fresh_run_ms']:.1f} ms")
    line("replay, whole apply()", f"{p['replay_total_ms']:.2f} ms")
    line("replay per call (whole apply() / calls)", f"{p['replay_us_per_call']:.2f} us")
    line("replay per call (call loop only)", f"{p['replay_loop_us_per_call']:.2f} us")
    line(
        "calls recorded before / after replays",
        f"{p['calls_recorded_before']} / {p['calls_recorded_after']}",
    )

    s = res["statements"]
    print(
        f"\n4. SQL statements (SQLAlchemy before_cursor_execute; engine isolation "
        f"{s['engine_isolation_level']}: each statement is its own commit)"
    )
    line("per fresh call", f"{c['statements_per_fresh_call']:g}", "(expect 1)")
    line("per replayed call", f"{p['statements_per_replayed_call']:g}", "(expect 0)")
    line(
        "history load (1 SELECT for the whole job)",
        f"{s['history_load']['statements']}",
        f"(expect 1; {s['history_load']['rows']} rows)",
    )
    line(
        "replayed job, whole apply()",
        f"{p['statements_per_replay_job']}",
        "= " + ", ".join(p["replay_job_statements"]),
    )
    e = s["one_call_job_enqueued"]
    line("one-call job, enqueued (apply_async eager) total", f"{e['statements']}")
    line(
        "  of which worker side (claim+call+finish)",
        f"{e['statements_excluding_enqueue']}",
        "(expect 3: a first execution needs no history SELECT)",
    )
    for stmt in e["sequence"]:
        print(f"      {stmt}")
    b = s["one_call_job_bare_apply"]
    line("one-call job, bare apply() (no job row yet)", f"{b['statements']}")
    for stmt in b["sequence"]:
        print(f"      {stmt}")
    line(
        "COMMIT / ROLLBACK events (enqueued one-call job)",
        f"{e['commits']} / {e['rollbacks']}",
        f"(sent to the server: {e['commits_sent']} / {e['rollbacks_sent']}; a ROLLBACK on "
        f"an idle autocommit connection is a psycopg no-op)",
    )

    d = res["dbos"]
    print("\n5. DBOS")
    if d.get("ok"):
        line(
            f"DBOS {d.get('version')} per @DBOS.step ({d['n']} steps, median of {d['reps']})",
            f"{d['ms_per_step']:.3f} ms",
            f"(best {d['ms_per_step_min']:.3f} ms)",
        )
        line(
            "DBOS statements / COMMITs per step",
            f"{d['statements_per_step']:.2f} / {d['commits_per_step']:.2f}",
            f"(~{d['round_trips_per_step']:.1f} round trips incl. BEGIN/COMMIT)",
        )
        ours = c["fresh_call_us"] / 1e3
        speedup = d["ms_per_step"] / ours
        line("celery-durable per fresh call", f"{ours:.3f} ms")
        line(
            "speed-up vs DBOS (DBOS step / our call)",
            f"{speedup:.1f}x",
            f"budget >= {BUDGET_VS_DBOS:.0f}x: {verdict(speedup >= BUDGET_VS_DBOS)}",
        )
    elif d.get("skipped"):
        print("  skipped (--skip-dbos)")
    else:
        print(f"  DBOS could not be measured: {d.get('error')}")

    t = res["throughput"]
    print("\n6. Throughput, real `celery worker` (end to end: enqueue + run)")
    if t.get("ok"):
        print(
            f"  worker: prefork -c {t['concurrency']}, broker {t['broker']}, "
            f"N={t['n']} per kind, mean of {t['rounds']} rounds"
        )
        line(
            "plain Celery tasks",
            f"{t['plain_per_s']:.0f} /s",
            f"(enqueue alone {t['plain_enqueue_per_s']:.0f}/s)",
        )
        line(
            "durable one-call jobs",
            f"{t['durable_per_s']:.0f} /s",
            f"(enqueue alone {t['durable_enqueue_per_s']:.0f}/s)",
        )
        line(
            "durable / plain",
            f"{t['ratio']:.2f}x",
            f"budget >= {BUDGET_THROUGHPUT}x (aim {AIM_THROUGHPUT}x): "
            f"{verdict(t['ratio'] >= BUDGET_THROUGHPUT)}",
        )
        line(
            "CPU per job: producer / worker (main + pool) / PostgreSQL",
            f"{t['durable_enqueue_cpu_us'] / 1e3:.2f} / {t['durable_worker_cpu_ms']:.2f} / "
            f"{t['durable_postgres_cpu_ms']:.2f} ms",
            f"(plain task: {t['plain_enqueue_cpu_us'] / 1e3:.2f} / "
            f"{t['plain_worker_cpu_ms']:.2f} / {t['plain_postgres_cpu_ms']:.2f} ms)",
        )
        line(
            "statements only: plain tasks sending a job's 4 statements",
            f"{t['floor_per_s']:.0f} /s",
            f"= {t['floor_ratio']:.2f}x plain; durable = {t['durable_vs_floor']:.2f}x this floor",
        )
        line(
            "CPU per statements-only task: producer / worker / PostgreSQL",
            f"{t['floor_enqueue_cpu_us'] / 1e3:.2f} / {t['floor_worker_cpu_ms']:.2f} / "
            f"{t['floor_postgres_cpu_ms']:.2f} ms",
        )
        line(
            "durable, enqueued with one enqueue_many()",
            f"{t['batch_per_s']:.0f} /s",
            f"(enqueue alone {t['batch_enqueue_per_s']:.0f}/s)",
        )
        if "async_ratio" in t:
            line(
                "durable, durable_synchronous_commit='off' (opt-in)",
                f"{t['async_durable_per_s']:.0f} /s",
                f"{t['async_ratio']:.2f}x its plain control; {t['async_vs_bare']:.2f}x default",
            )
    elif t.get("skipped"):
        print("  skipped (--skip-throughput)")
    else:
        print(f"  throughput could not be measured: {t.get('error')}")
    print_middleware(res, line)
    print(f"\n  total run time {res['elapsed_s']:.1f} s")


CONFIG_NAMES = {
    "bare": "bare (no middleware)",
    "hooks": "+ 5 no-op hooks",
    "prometheus": "+ PrometheusMetrics",
    "logging": "+ LoggingMiddleware",
    "otel": "+ OTelTracing",
    "all": "all of them",
}


def print_middleware(res: dict[str, Any], line: Callable[..., None]) -> None:
    m = res.get("middleware_calls") or {}
    print("\n7. Observability middleware overhead (same run, interleaved with bare)")
    if m.get("skipped"):
        print("  skipped (--skip-middleware)")
        return
    if m.get("ok") is False:
        print(f"  in-process part could not be measured: {m.get('error')}")
    else:
        log_to = "a file (FileHandler)" if m["log"] != "null" else "a NullHandler"
        print(
            f"  a) fresh call() in-process, {m['n']} calls/job, {m['reps']} jobs per config "
            f"interleaved; medians, added = median of paired (same rep) differences; "
            f"LoggingMiddleware writes to {log_to}"
        )
        print(
            f"  {'config':<22} {'wall/call':>10} {'added':>10} {'ratio':>6}   "
            f"{'CPU/call':>9} {'added':>9} {'ratio':>6}   {'job fixed':>9}"
        )
        for label, c in m["configs"].items():
            bare = label == "bare"
            added = "-" if bare else f"{c['added_us']:+.1f} us"
            cpu_added = "-" if bare else f"{c['cpu_added_us']:+.1f} us"
            print(
                f"  {CONFIG_NAMES.get(label, label):<22} {c['fresh_call_us']:>7.1f} us "
                f"{added:>10} {c['ratio']:>5.2f}x   {c['cpu_us']:>6.1f} us {cpu_added:>9} "
                f"{c['cpu_ratio']:>5.2f}x   {c['job_fixed_ms']:>6.2f} ms"
            )
        k = m["checks"]
        logs = f", log lines {k['log_lines']}/{k['log_lines_expected']}" if "log_lines" in k else ""
        print(
            f"     checks: statements per call (all) {k['statements_per_fresh_call_all']:g}, "
            f"spans {k['spans_exported']}/{k['spans_expected']}, Prometheus calls "
            f"{k['prometheus_calls_all']:.0f}/{k['prometheus_calls_expected']}{logs}"
        )
    t = res["throughput"]
    mw = t.get("middleware") if t.get("ok") else None
    if mw is None:
        print(
            "  b) real workers: not measured"
            + (
                " (--skip-throughput)"
                if t.get("skipped")
                else f": {t.get('error', 'see section 6')}"
            )
        )
        return
    print(
        f"  b) real workers: two `celery worker -c {t['concurrency']}` up together "
        f"(bare, all middleware), own queues, N={t['n']}, {t['rounds']} rounds in "
        f"alternating order; means, paired = median of per-round ratios"
    )
    print(f"  {'':<36} {'bare':>9} {'middleware':>11} {'ratio':>7} {'paired':>7}")

    def row(name: str, key: str, fmt: str) -> None:
        a, b = t[key], t[f"mw_{key}"]
        paired = median([r[f"mw_{key}"] / r[key] for r in t["rounds_detail"]])
        print(f"  {name:<36} {a:>9{fmt}} {b:>11{fmt}} {b / a:>6.2f}x {paired:>6.2f}x")

    row("durable one-call jobs /s", "durable_per_s", ".0f")
    row("  worker CPU ms per job", "durable_worker_cpu_ms", ".2f")
    row("  enqueue CPU us per job (producer)", "durable_enqueue_cpu_us", ".0f")
    row("plain tasks /s (control, no mw)", "plain_per_s", ".0f")
    row("  worker CPU ms per task", "plain_worker_cpu_ms", ".2f")
    print(f"  {'durable / plain':<36} {t['ratio']:>8.2f}x {mw['ratio_vs_plain']:>10.2f}x")
    logs = f", log lines {mw['log_lines']}/{mw['log_lines_expected']}" if "log_lines" in mw else ""
    print(
        f"     checks: spans exported by the workers {mw['spans_exported']}/"
        f"{mw['spans_expected']}{logs}"
    )


# -- main ---------------------------------------------------------------------------------


def _guarded(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run an optional section; a failure is reported in the results, never raised."""
    try:
        return fn(*args)
    except Exception as exc:
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_URL))
    p.add_argument(
        "--broker-url",
        default=os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER),
        help="Redis broker (and counter) for the throughput test",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--floor-n", type=int, default=2000)
    p.add_argument("--calls", type=int, default=300, help="calls per job in test 2")
    p.add_argument("--replay-calls", type=int, default=1000)
    p.add_argument("--reps", type=int, default=5, help="repetitions (median reported)")
    p.add_argument("--dbos-steps", type=int, default=300)
    p.add_argument("--dbos-timeout", type=float, default=120)
    p.add_argument("--throughput-n", type=int, default=2000)
    p.add_argument("--throughput-timeout", type=float, default=60)
    p.add_argument("--rounds", type=int, default=2, help="throughput rounds per kind")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--skip-dbos", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument(
        "--skip-middleware",
        action="store_true",
        help="no section 7 (and only the bare worker in 6)",
    )
    p.add_argument(
        "--skip-commit-policy",
        action="store_true",
        help="no third worker with durable_synchronous_commit='off' in 6",
    )
    p.add_argument(
        "--middleware",
        default="all",
        help="middleware of section 7: all, or a comma list of "
        f"{','.join(MIDDLEWARE_KINDS)} (default all)",
    )
    p.add_argument(
        "--middleware-log",
        choices=("file", "null"),
        default="file",
        help="LoggingMiddleware handler: a FileHandler on a temp file (default) or a NullHandler",
    )
    p.add_argument(
        "--middleware-reps", type=int, default=10, help="jobs per config in 7a (interleaved)"
    )
    # internal: the DBOS subprocess
    p.add_argument("--dbos-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dbos-db", help=argparse.SUPPRESS)
    p.add_argument("--dbos-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.middleware_kinds = parse_kinds(args.middleware)
    if not args.middleware_kinds:
        args.skip_middleware = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dbos_child:
        return dbos_child(args)
    started = time.perf_counter()
    run = uuid.uuid4().hex[:8]
    prefix = f"bench_{run}_"
    res: dict[str, Any] = {
        "run": run,
        "table_prefix": prefix,
        "postgres_url": make_url(args.postgres_url).render_as_string(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "budgets": {
            "fresh_call_vs_logged_floor_max": BUDGET_CALL_VS_FLOOR,
            "speedup_vs_dbos_min": BUDGET_VS_DBOS,
            "throughput_ratio_min": BUDGET_THROUGHPUT,
        },
    }
    storage = SQLStorage(args.postgres_url, table_prefix=prefix)
    storage.migrate()
    try:
        log(f"1/6 commit floor ({args.floor_n} inserts x 3)")
        res["floor"] = bench_commit_floor(args.postgres_url, prefix, args.floor_n, storage)
        ip = InProcess(storage)
        log(f"2/6 fresh calls ({args.reps} jobs x {args.calls} calls)")
        res["fresh"] = bench_fresh_calls(ip, run, args.calls, args.reps)
        log(f"3/6 replay ({args.replay_calls} calls, {args.reps} replays)")
        res["replay"] = bench_replay(ip, run, args.replay_calls, args.reps)
        log("4/6 statement counts")
        res["statements"] = bench_statements(ip, run)
        if args.skip_dbos:
            res["dbos"] = {"skipped": True}
        else:
            log(f"5/6 DBOS ({args.dbos_steps} steps, subprocess)")
            res["dbos"] = _guarded(bench_dbos, args, run)
            if res["dbos"].get("ok"):
                res["dbos"]["speedup"] = (
                    res["dbos"]["ms_per_step"] * 1e3 / res["fresh"]["fresh_call_us"]
                )
            else:
                log(f"DBOS failed: {res['dbos'].get('error')}")
        if args.skip_middleware:
            res["middleware_calls"] = {"skipped": True}
        else:
            log(
                f"7a middleware in-process ({args.middleware_reps} jobs x {args.calls} calls "
                f"per config, {'+'.join(args.middleware_kinds)})"
            )
            res["middleware_calls"] = _guarded(bench_middleware_calls_logged, args, run, storage)
            if res["middleware_calls"].get("ok") is False:
                log(f"middleware (in-process) failed: {res['middleware_calls'].get('error')}")
        if args.skip_throughput:
            res["throughput"] = {"skipped": True}
        else:
            log(
                f"6/6 throughput ({args.throughput_n} tasks per kind, {args.rounds} rounds"
                f"{'' if args.skip_middleware else ', bare and middleware workers'})"
            )
            res["throughput"] = _guarded(bench_throughput, args, run, storage, prefix)
            if not res["throughput"].get("ok"):
                log(f"throughput failed: {res['throughput'].get('error')}")
    finally:
        with suppress(Exception):
            storage.drop_tables()
        storage.dispose()
    fresh, floor = res["fresh"], res["floor"]
    res["summary"] = {
        "commit_floor_us": floor["psycopg_temp_us"],
        "fresh_call_us": fresh["fresh_call_us"],
        "plain_call_us": fresh["plain_run_us"],
        "overhead_us": fresh["overhead_us"],
        "overhead_vs_commit_floor": fresh["overhead_us"] / floor["psycopg_temp_us"],
        "overhead_vs_logged_commit": fresh["overhead_us"] / floor["psycopg_logged_us"],
        "record_call_us": fresh["breakdown"]["record_call_us"],
        "record_call_raw_statement_us": fresh["breakdown"]["raw_statement_us"],
        "replay_total_ms": res["replay"]["replay_total_ms"],
        "replay_us_per_call": res["replay"]["replay_us_per_call"],
        "statements_per_fresh_call": fresh["statements_per_fresh_call"],
        "statements_per_replayed_call": res["replay"]["statements_per_replayed_call"],
        "statements_history_load": res["statements"]["history_load"]["statements"],
        "statements_one_call_job_worker_side": res["statements"]["one_call_job_enqueued"][
            "statements_excluding_enqueue"
        ],
        "statements_one_call_job_bare_apply": res["statements"]["one_call_job_bare_apply"][
            "statements"
        ],
        "dbos_ms_per_step": res["dbos"].get("ms_per_step"),
        "speedup_vs_dbos": res["dbos"].get("speedup"),
        "plain_tasks_per_s": res["throughput"].get("plain_per_s"),
        "durable_jobs_per_s": res["throughput"].get("durable_per_s"),
        "throughput_ratio": res["throughput"].get("ratio"),
        "statements_only_ratio": res["throughput"].get("floor_ratio"),
        "durable_vs_statements_only": res["throughput"].get("durable_vs_floor"),
    }
    mc, mt = res["middleware_calls"], res["throughput"].get("middleware") or {}
    if mc.get("configs"):
        res["summary"].update(
            middleware_fresh_call_us=mc["configs"]["all"]["fresh_call_us"],
            middleware_added_us_per_call=mc["configs"]["all"]["added_us"],
            middleware_fresh_call_ratio=mc["configs"]["all"]["ratio"],
        )
    if mt:
        res["summary"].update(
            middleware_durable_jobs_per_s=res["throughput"]["mw_durable_per_s"],
            middleware_throughput_ratio=mt["durable_ratio"],
            middleware_throughput_ratio_paired=mt["durable_ratio_paired_median"],
        )
    res["elapsed_s"] = time.perf_counter() - started
    if args.json:
        json.dump(res, sys.stdout, indent=2, default=str)
        print()
    else:
        print_report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
