#!/usr/bin/env python
"""Beat benchmark: celery-durable's database scheduler vs sqlalchemy-celery-beat.

All in one run against the same local PostgreSQL, so the numbers are comparable:

1. celery-durable ``DatabaseScheduler`` (``celery beat -S durable``) with N schedules in
   its table (default N = 10, 1,000, 10,000; every(3600), none due): startup
   (construction + ``setup_schedule``), an idle ``scheduler.tick()``, a tick that fires
   10 due schedules, and a tick right after a change through the API; with the SQL
   statements and new database connections per tick.
2. sqlalchemy-celery-beat's ``DatabaseScheduler`` with N interval tasks in its tables:
   startup (construction, whose ``setup_schedule`` loads every row), the first tick
   (builds Celery's heap), an idle tick, firing 10 due entries, and a tick right after
   a change (``PeriodicTaskChanged`` bumped: it reloads every row).
3. Fire lateness: celery-durable's scheduler ticked the way ``celery beat`` does (sleep
   what ``tick()`` returns) for ~10 s against a few every(1) schedules sharing one
   phase: ``ScheduleRun.lateness`` of every fired run (nominal tick -> start of the tick
   that fired it), and nominal tick -> the moment ``app.send_task`` was called.

Messages go to Celery's in-process ``memory://`` broker (kombu's memory transport),
never to a real broker; the scheduled task is a plain Celery task ``bench.noop``.

Run:  .venv/bin/python benchmarks/bench_beat.py [--json] [--skip-scb]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import random
import statistics
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from celery import Celery  # noqa: E402
from sqlalchemy import Engine, event, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from celery_durable import Durable, every  # noqa: E402
from celery_durable.beat import DatabaseScheduler as DurableScheduler  # noqa: E402
from celery_durable.scheduling.definition import Definition  # noqa: E402
from celery_durable.store.records import ScheduleRecord  # noqa: E402
from celery_durable.store.sql import SQLStorage  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TASK = "bench.noop"
INTERVAL = 3600  # seconds: every schedule of the table runs hourly
# Idle schedules are spread over the hour, but none falls due during the run.
FIRST_DUE_AFTER = 600
PUBLISHING = "memory:// broker (kombu's in-process transport); task bench.noop (plain task)"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def stats_ms(seconds: list[float]) -> dict[str, Any]:
    """min / median / p95 (nearest rank) / max in ms of a list of durations in s."""
    ms = sorted(s * 1e3 for s in seconds)
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "min": ms[0],
        "median": statistics.median(ms),
        "p95": ms[max(0, math.ceil(0.95 * len(ms)) - 1)],
        "max": ms[-1],
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


class Probe:
    """Counts SQL statements and new DBAPI connections of an engine while recording."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements = self.connects = 0

    def _on_execute(self, *_: Any) -> None:
        self.statements += 1

    def _on_connect(self, *_: Any) -> None:
        self.connects += 1

    @contextmanager
    def recording(self) -> Iterator[Probe]:
        self.statements = self.connects = 0
        event.listen(self.engine, "before_cursor_execute", self._on_execute)
        event.listen(self.engine.pool, "connect", self._on_connect)
        try:
            yield self
        finally:
            event.remove(self.engine, "before_cursor_execute", self._on_execute)
            event.remove(self.engine.pool, "connect", self._on_connect)


# -- 1. celery-durable ------------------------------------------------------------------------


class DurableBench:
    def __init__(self, url: str, prefix: str) -> None:
        self.app = Celery("bench_beat", broker="memory://", set_as_current=False)
        self.app.conf.update(
            durable_database_url=url, durable_table_prefix=prefix, timezone="UTC", enable_utc=True
        )

        @self.app.task(name=TASK, shared=False)
        def noop() -> None:
            return None

        self.durable = Durable(self.app)
        storage = self.durable.storage
        assert isinstance(storage, SQLStorage)
        self.storage = storage
        self.table = storage.tables.schedules
        self.names: list[str] = []
        self.rng = random.Random(42)

    def template(self) -> ScheduleRecord:
        return Definition(name="template", task=TASK, when=every(INTERVAL)).record(
            self.durable, now_utc(), source="api"
        )

    def grow_to(self, size: int) -> None:
        """Add schedules up to ``size``: the first ones through ``schedules.add()``, the
        rest as a bulk INSERT of the same rows (``put_schedule`` writes one at a time)."""
        while len(self.names) < min(size, 10):
            name = f"bench-{len(self.names):06d}"
            self.durable.schedules.add(name, TASK, every(INTERVAL))
            self.names.append(name)
        if len(self.names) >= size:
            return
        base, now = self.template(), now_utc()
        columns = set(self.table.c.keys())
        rows = []
        for i in range(len(self.names), size):
            name = f"bench-{i:06d}"
            offset = self.rng.uniform(FIRST_DUE_AFTER, INTERVAL)
            record = dataclasses.replace(
                base, name=name, next_run_at=now + timedelta(seconds=offset)
            )
            row = dataclasses.asdict(record)
            row["is_unique"] = row.pop("unique")
            rows.append({k: v for k, v in row.items() if k in columns})
            self.names.append(name)
        with self.storage.engine.connect() as conn:
            for start in range(0, len(rows), 2000):
                conn.execute(self.table.insert(), rows[start : start + 2000])
            conn.execute(text(f"ANALYZE {self.table.name}"))

    def count(self, table: Any) -> int:
        with self.storage.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(table)))

    def make_due(self, names: list[str], at: datetime) -> None:
        with self.storage.engine.connect() as conn:
            conn.execute(
                self.table.update().where(self.table.c.name.in_(names)).values(next_run_at=at)
            )


def due_rounds(
    b: DurableBench, scheduler: DurableScheduler, probe: Probe, ticks: int, due: int
) -> tuple[list[float], tuple[int, int]]:
    """k due among N: their next_run_at is put 1 s in the past before each (untimed)
    tick, a fresh instant each time, since a (schedule, nominal tick) fires only once.
    The last round is not timed but counted (statements, new connections)."""
    runs_table = b.storage.tables.schedule_runs
    times, counted = [], (0, 0)
    for rep in range(ticks + 1):
        b.make_due(
            b.rng.sample(b.names, min(due, len(b.names))), b.durable.now() - timedelta(seconds=1)
        )
        before = b.count(runs_table)
        if rep == ticks:
            with probe.recording():
                scheduler.tick()
            counted = (probe.statements, probe.connects)
        else:
            times.append(timed(scheduler.tick)[0])
        fired = b.count(runs_table) - before
        if fired != due:
            raise RuntimeError(f"N={len(b.names)}: a tick with {due} due fired {fired}")
    return times, counted


def bench_durable_size(
    b: DurableBench, size: int, ticks: int, due: int, changes: int
) -> dict[str, Any]:
    probe = Probe(b.storage.engine)
    b.grow_to(size)
    assert b.count(b.table) == size
    startup = [timed(lambda: DurableScheduler(app=b.app))[0] for _ in range(3)]
    scheduler = DurableScheduler(app=b.app)
    for _ in range(5):  # warm-up: pool, compiled statements
        scheduler.tick()
    if b.durable.schedules.tick() != 0:
        raise RuntimeError(f"N={size}: an idle tick fired something")
    idle = [timed(scheduler.tick)[0] for _ in range(ticks)]
    with probe.recording():
        scheduler.tick()
    idle_sql = (probe.statements, probe.connects)

    due_times, due_sql = due_rounds(b, scheduler, probe, ticks, due)
    # The same with app.send_task a no-op: what is left is the database's part.
    original = b.app.send_task
    b.app.send_task = lambda *a, **k: None  # type: ignore[method-assign]
    try:
        noop_times, _ = due_rounds(b, scheduler, probe, ticks, due)
    finally:
        b.app.send_task = original  # type: ignore[method-assign]

    # A change through the management API, then the next tick (beat needs no reload).
    after_change = []
    for rep in range(changes):
        b.durable.schedules.change(b.names[rep], when=every(INTERVAL + rep + 1))
        after_change.append(timed(scheduler.tick)[0])
    return {
        "n": size,
        "startup": stats_ms(startup),
        "idle_tick": stats_ms(idle),
        "idle_statements": idle_sql[0],
        "idle_new_connections": idle_sql[1],
        "due": due,
        "due_tick": stats_ms(due_times),
        "due_statements": due_sql[0],
        "due_tick_send_task_noop": stats_ms(noop_times),
        "due_new_connections": due_sql[1],
        "tick_after_change": stats_ms(after_change),
    }


def bench_lateness(b: DurableBench, seconds: float, count: int) -> dict[str, Any]:
    """Tick like celery beat's loop (``interval = tick(); sleep(interval)``).

    The schedules share one phase (as many cron schedules share :00), so every tick
    fires all of them, one after the other. ``ScheduleRun.lateness`` counts from the
    tick's start; the time ``send_task`` is actually called is recorded as well.
    """
    names = [f"lateness-{i}" for i in range(count)]
    for name in names:
        b.durable.schedules.add(name, TASK, every(1))
    b.make_due(names, b.durable.now() + timedelta(seconds=1))
    published: dict[str, datetime] = {}
    original = b.app.send_task

    def send_task(name: str, *args: Any, **kwargs: Any) -> Any:
        published[kwargs.get("task_id") or ""] = b.durable.now()
        return original(name, *args, **kwargs)

    b.app.send_task = send_task  # type: ignore[method-assign]
    scheduler = DurableScheduler(app=b.app)
    deadline, ticks, sleeps = time.monotonic() + seconds, 0, []
    try:
        while time.monotonic() < deadline:
            interval = scheduler.tick()
            ticks += 1
            if interval and interval > 0:
                sleeps.append(interval)
                time.sleep(interval)
    finally:
        b.app.send_task = original  # type: ignore[method-assign]
    runs = [r for name in names for r in b.durable.schedules.runs(name, 10_000)]
    fired = [r for r in runs if r.outcome == "fired"]
    delays = [
        (published[r.job_id] - r.nominal_at).total_seconds() for r in fired if r.job_id in published
    ]
    return {
        "seconds": seconds,
        "schedules": count,
        "ticks": ticks,
        "fired": len(fired),
        "skipped": len(runs) - len(fired),
        "expected_about": int(seconds) * count,
        "lateness": stats_ms([r.lateness for r in fired]),
        "publish_delay": stats_ms(delays),
        "median_sleep_ms": statistics.median(sleeps) * 1e3 if sleeps else None,
        "other_schedules_in_table": len(b.names),
    }


def bench_durable(args: argparse.Namespace, run: str) -> dict[str, Any]:
    prefix = f"bench_beat_{run}_"
    b = DurableBench(args.postgres_url, prefix)
    out: dict[str, Any] = {"table_prefix": prefix, "sizes": []}
    try:
        out["migrated"] = b.durable.migrate()
        for size in args.sizes:
            log(f"celery-durable: N={size:,}")
            out["sizes"].append(bench_durable_size(b, size, args.ticks, args.due, args.changes))
        log(
            f"celery-durable: fire lateness ({args.lateness_seconds:g} s, "
            f"{args.lateness_schedules} every(1) schedules)"
        )
        out["lateness"] = bench_lateness(b, args.lateness_seconds, args.lateness_schedules)
        with b.storage.engine.connect() as conn:
            out["server_version"] = conn.scalar(text("SHOW server_version"))
    finally:
        with suppress(Exception):
            b.storage.drop_tables()
        b.storage.dispose()
    return out


# -- 2. sqlalchemy-celery-beat --------------------------------------------------------------


class ScbBench:
    """sqlalchemy-celery-beat in its own schema ``bench_scb_<run>``; ``search_path``
    points there too, so its enum types (``period``, ``solarevent``), which it creates
    unqualified, land in that schema and go away with it."""

    def __init__(self, url: str, run: str) -> None:
        import sqlalchemy_celery_beat as scb
        from sqlalchemy_celery_beat import models, schedulers

        self.version = scb.__version__
        self.models, self.schedulers = models, schedulers
        self.schema = f"bench_scb_{run}"
        options = {"connect_args": {"options": f"-csearch_path={self.schema}"}}
        # Its entries are rebuilt with celery's current_app: this app must be current.
        self.app = Celery("bench_beat_scb", broker="memory://", set_as_current=True)
        self.app.conf.update(
            beat_dburi=url,
            beat_schema=self.schema,
            beat_engine_options=options,
            timezone="UTC",
            enable_utc=True,
            result_expires=None,
        )  # no extra celery.backend_cleanup entry

        @self.app.task(name=TASK, shared=False)
        def noop() -> None:
            return None

        manager = schedulers.session_manager
        self.engine, self.Session = manager.create_session(url, schema=self.schema, **options)
        manager.prepare_models(self.engine, schema=self.schema)
        if not self.has_table():
            # prepare_models() runs once per process; a second run in one process
            # (tests) creates its schema here.
            with self.engine.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {self.schema}"))
                models.ModelBase.metadata.create_all(conn)
        session = self.Session()
        with schedulers.session_cleanup(session):
            interval = models.IntervalSchedule(every=INTERVAL, period=models.Period.SECONDS)
            session.add(interval)
            session.commit()
            self.interval_id = interval.id
        self.table = models.PeriodicTask.__table__
        self.size = 0
        self.rng = random.Random(43)

    def has_table(self) -> bool:
        with self.engine.connect() as conn:
            return bool(
                conn.scalar(
                    text(
                        "SELECT count(*) FROM information_schema.tables "
                        "WHERE table_schema = :s AND table_name = 'celery_periodictask'"
                    ),
                    {"s": self.schema},
                )
            )

    def grow_to(self, size: int) -> None:
        """Bulk INSERT of PeriodicTask rows (Core: the ORM would bump
        PeriodicTaskChanged per row), each as if it last ran some time this hour."""
        now, rows = now_utc(), []
        for i in range(self.size, size):
            last = now - timedelta(seconds=INTERVAL - self.rng.uniform(FIRST_DUE_AFTER, INTERVAL))
            rows.append(
                {
                    "name": f"bench-{i:06d}",
                    "task": TASK,
                    "args": "[]",
                    "kwargs": "{}",
                    "headers": "{}",
                    "one_off": False,
                    "enabled": True,
                    "last_run_at": last,
                    "total_run_count": 1,
                    "date_changed": now,
                    "description": "",
                    "discriminator": "intervalschedule",
                    "schedule_id": self.interval_id,
                }
            )
        with self.engine.begin() as conn:
            for start in range(0, len(rows), 2000):
                conn.execute(self.table.insert(), rows[start : start + 2000])
        self.size = max(self.size, size)
        self.bump_changed()

    def bump_changed(self) -> None:
        session = self.Session()
        with self.schedulers.session_cleanup(session):
            self.models.PeriodicTaskChanged.update_from_session(session)

    def set_last_run(self, names: list[str], at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                self.table.update().where(self.table.c.name.in_(names)).values(last_run_at=at)
            )

    def scheduler(self) -> Any:
        return self.schedulers.DatabaseScheduler(app=self.app)

    @staticmethod
    def close(scheduler: Any) -> None:
        scheduler.sync()  # what beat does every few minutes; run here, untimed
        scheduler._finalize.cancel()  # no sync at interpreter exit, tables are gone

    def drop(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))
        self.engine.dispose()


def bench_scb_size(
    s: ScbBench, size: int, ticks: int, due: int, reps: int, changes: int
) -> dict[str, Any]:
    s.grow_to(size)
    startup, first = [], []
    for _ in range(reps):
        took, scheduler = timed(s.scheduler)
        startup.append(took)
        if len(scheduler.schedule) != size:
            raise RuntimeError(f"N={size}: the scheduler loaded {len(scheduler.schedule)}")
        first.append(timed(scheduler.tick)[0])
        s.close(scheduler)
    scheduler = s.scheduler()
    scheduler.tick()
    for _ in range(3):
        scheduler.tick()
    idle = [timed(scheduler.tick)[0] for _ in range(ticks)]
    probe = Probe(scheduler.engine)
    with probe.recording():
        scheduler.tick()
    idle_sql = (probe.statements, probe.connects)

    # Firing: Celery's heap fires one entry per tick. `due` entries are made due, a new
    # scheduler is built and its heap populated (what its first tick does, untimed);
    # then `due` ticks are timed, each must fire one entry (tick() returns 0).
    fire_ticks, fire_totals = [], []
    for _ in range(max(1, reps)):
        chosen = s.rng.sample([f"bench-{i:06d}" for i in range(size)], min(due, size))
        s.set_last_run(chosen, now_utc() - timedelta(seconds=2 * INTERVAL))
        scheduler_due = s.scheduler()
        scheduler_due.old_schedulers = copy.copy(scheduler_due.schedule)
        scheduler_due.populate_heap()
        took = []
        for _ in chosen:
            seconds, wait = timed(scheduler_due.tick)
            if wait != 0:
                raise RuntimeError(f"N={size}: a due entry did not fire (tick -> {wait})")
            took.append(seconds)
        if scheduler_due.tick() == 0:
            raise RuntimeError(f"N={size}: more than {len(chosen)} entries fired")
        fire_ticks.extend(took)
        fire_totals.append(sum(took))
        s.close(scheduler_due)

    # A change (as the ORM's after_update does): the next tick reloads every row.
    after_change = []
    for _ in range(changes):
        s.bump_changed()
        after_change.append(timed(scheduler.tick)[0])
    s.close(scheduler)
    return {
        "n": size,
        "startup": stats_ms(startup),
        "first_tick": stats_ms(first),
        "idle_tick": stats_ms(idle),
        "idle_statements": idle_sql[0],
        "idle_new_connections": idle_sql[1],
        "due": due,
        "fire_tick": stats_ms(fire_ticks),
        "fire_all": stats_ms(fire_totals),
        "tick_after_change": stats_ms(after_change),
    }


def bench_scb(args: argparse.Namespace, run: str) -> dict[str, Any]:
    try:
        s = ScbBench(args.postgres_url, run)
    except ImportError as exc:
        return {"ok": False, "error": f"not installed ({exc}); pip install sqlalchemy-celery-beat"}
    out: dict[str, Any] = {"ok": True, "version": s.version, "schema": s.schema, "sizes": []}
    try:
        for size in args.sizes:
            log(f"sqlalchemy-celery-beat: N={size:,}")
            out["sizes"].append(
                bench_scb_size(s, size, args.ticks, args.due, args.scb_reps, args.changes)
            )
    finally:
        with suppress(Exception):
            s.drop()
    return out


# -- report ---------------------------------------------------------------------------------


def cell(st: dict[str, Any], p95: bool = True) -> str:
    if not st or not st.get("n"):
        return "-"
    if p95 and st["n"] >= 10:
        return f"{st['median']:.2f} / {st['p95']:.2f}"
    return f"{st['median']:.2f}"


def row(label: str, values: list[str]) -> None:
    print(f"  {label:<46}" + "".join(f"{v:>17}" for v in values))


def print_report(res: dict[str, Any]) -> None:
    d = res["durable"]
    sizes = [x["n"] for x in d["sizes"]]
    print(
        f"\nbeat benchmark  run={res['run']}  PostgreSQL {d.get('server_version')}  "
        f"python {res['python']}  celery {res['celery']}  cpus={res['cpus']}"
    )
    print(f"publishing: {PUBLISHING}")
    print(
        f"times in ms, 'median / p95' over {res['args']['ticks']} ticks unless noted; "
        f"every schedule every({INTERVAL}), idle ones due in {FIRST_DUE_AFTER}-"
        f"{INTERVAL} s"
    )
    header = [f"N={n:,}" for n in sizes]

    print("\n1. celery-durable DatabaseScheduler (celery beat -S durable)")
    row("", header)
    row(
        "startup: construct + setup_schedule (med of 3)",
        [cell(x["startup"], False) for x in d["sizes"]],
    )
    row("idle tick: scheduler.tick()", [cell(x["idle_tick"]) for x in d["sizes"]])
    row(
        "  SQL statements / new connections per idle tick",
        [f"{x['idle_statements']} / {x['idle_new_connections']}" for x in d["sizes"]],
    )
    due = d["sizes"][0]["due"] if d["sizes"] else 0
    row(
        f"tick with {due} due (one tick fires all {due})", [cell(x["due_tick"]) for x in d["sizes"]]
    )
    row(
        "  same, app.send_task patched to a no-op",
        [cell(x["due_tick_send_task_noop"]) for x in d["sizes"]],
    )
    row(
        f"  SQL statements / new connections ({due} due)",
        [f"{x['due_statements']} / {x['due_new_connections']}" for x in d["sizes"]],
    )
    n_change = res["args"]["changes"]
    row(
        f"tick right after schedules.change() (med of {n_change})",
        [cell(x["tick_after_change"], False) for x in d["sizes"]],
    )

    s = res["scb"]
    print(
        f"\n2. sqlalchemy-celery-beat {s.get('version', '?')} DatabaseScheduler "
        f"(celery beat -S sqlalchemy)"
    )
    if s.get("ok"):
        reps = res["args"]["scb_reps"]
        row("", [f"N={x['n']:,}" for x in s["sizes"]])
        row(
            f"startup: construct, loads all rows (med of {reps})",
            [cell(x["startup"], False) for x in s["sizes"]],
        )
        row(
            f"first tick: builds the heap (med of {reps})",
            [cell(x["first_tick"], False) for x in s["sizes"]],
        )
        row("idle tick: scheduler.tick()", [cell(x["idle_tick"]) for x in s["sizes"]])
        row(
            "  SQL statements / new connections per idle tick",
            [f"{x['idle_statements']} / {x['idle_new_connections']}" for x in s["sizes"]],
        )
        row("one tick that fires one due entry", [cell(x["fire_tick"]) for x in s["sizes"]])
        row(
            f"fire {due} due: sum of {due} ticks (med of {reps})",
            [cell(x["fire_all"], False) for x in s["sizes"]],
        )
        row(
            f"tick right after a change: reload (med of {n_change})",
            [cell(x["tick_after_change"], False) for x in s["sizes"]],
        )
    elif s.get("skipped"):
        print("  skipped (--skip-scb)")
    else:
        print(f"  could not be measured: {s.get('error')}")

    lat = d.get("lateness")
    if lat:
        print(
            f"\n3. Fire lateness, celery-durable: {lat['schedules']} every(1) schedules "
            f"sharing one phase, beat loop (tick, sleep the returned interval) for "
            f"{lat['seconds']:g} s;\n   the {lat['other_schedules_in_table']:,} idle "
            f"schedules of 1. stay in the table; ms"
        )
        row("", ["min", "median", "p95", "max"])
        for label, key in (
            ("ScheduleRun.lateness (nominal -> tick start)", "lateness"),
            ("nominal -> send_task() called", "publish_delay"),
        ):
            if lat[key].get("n"):
                row(label, [f"{lat[key][k]:.2f}" for k in ("min", "median", "p95", "max")])
        row(
            "runs fired / skipped / expected ~",
            [str(lat["fired"]), str(lat["skipped"]), str(lat["expected_about"]), ""],
        )
        row(
            "ticks / median sleep between ticks (ms)",
            [str(lat["ticks"]), f"{lat['median_sleep_ms'] or 0:.1f}", "", ""],
        )
    print(f"\n  total run time {res['elapsed_s']:.1f} s")


# -- main -----------------------------------------------------------------------------------


def _guarded(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
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
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument(
        "--sizes",
        default="10,1000,10000",
        help="schedules in the table, comma-separated (default 10,1000,10000)",
    )
    p.add_argument("--ticks", type=int, default=50, help="timed ticks per measurement")
    p.add_argument("--due", type=int, default=10, help="due schedules in the due case")
    p.add_argument("--changes", type=int, default=5, help="ticks after a change")
    p.add_argument(
        "--scb-reps",
        type=int,
        default=3,
        help="sqlalchemy-celery-beat startups (and due rounds) per size",
    )
    p.add_argument("--lateness-seconds", type=float, default=10.0)
    p.add_argument("--lateness-schedules", type=int, default=5)
    p.add_argument("--skip-scb", action="store_true", help="skip sqlalchemy-celery-beat")
    args = p.parse_args(argv)
    args.sizes = [int(x) for x in str(args.sizes).split(",") if x.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    import celery

    args = parse_args(argv)
    started = time.perf_counter()
    run = uuid.uuid4().hex[:8]
    res: dict[str, Any] = {
        "run": run,
        "postgres_url": make_url(args.postgres_url).render_as_string(),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "cpus": os.cpu_count(),
        "publishing": PUBLISHING,
        "args": {k: v for k, v in vars(args).items() if k != "postgres_url"},
    }
    res["durable"] = bench_durable(args, run)
    if args.skip_scb:
        res["scb"] = {"skipped": True}
    else:
        res["scb"] = _guarded(bench_scb, args, run)
        if not res["scb"].get("ok"):
            log(f"sqlalchemy-celery-beat failed: {res['scb'].get('error')}")
    res["elapsed_s"] = time.perf_counter() - started
    if args.json:
        json.dump(res, sys.stdout, indent=2, default=str)
        print()
    else:
        print_report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
