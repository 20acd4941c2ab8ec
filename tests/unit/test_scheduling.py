"""The database scheduler's logic on the in-memory store with a steppable clock:
registration and sync, exactly-once ticks between two beats, missed-run policies,
unique, the management API, republishing after a crash. Real beat processes on real
databases are in tests/integration/test_beat.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab

from celery_durable import ConfigurationError, Durable, ScheduleNotFound, call
from celery_durable.scheduling.beat_import import import_beat_schedule
from celery_durable.scheduling.definition import run_job_id
from celery_durable.scheduling.kinds import cron, daily, every
from celery_durable.scheduling.registry import Schedules
from celery_durable.store import MemoryStorage
from celery_durable.store.records import JobState
from tests.unit.conftest import Env, make_env


def _env() -> tuple[Env, list[dict[str, Any]]]:
    env = make_env()
    sent: list[dict[str, Any]] = []
    env.app.send_task = lambda name, **kw: sent.append({"name": name, **kw})  # type: ignore

    @env.app.task(name="u.cleanup", shared=False)
    def cleanup(days: int = 1) -> None: ...

    @env.durable.task(name="u.report", shared=False)
    def report() -> str:
        return str(call("u.cleanup"))

    return env, sent


def test_sync_adds_updates_and_disables_code_schedules() -> None:
    env, _ = _env()
    env.durable.schedule("cleanup", "u.cleanup", every(60), kwargs={"days": 3})
    env.durable.schedule("report", env.app.tasks["u.report"], daily(9), queue="reports")
    assert env.durable.schedules.sync() == {
        "added": ["cleanup", "report"],
        "updated": [],
        "disabled": [],
    }
    assert env.durable.schedules.sync() == {"added": [], "updated": [], "disabled": []}
    report = env.durable.schedules.get("report")
    assert (report.task, report.timezone, report.next_run_at) == (
        "u.report",
        "UTC",
        env.clock().replace(hour=9) + timedelta(days=1),
    )

    # the next deploy: cleanup changed, report removed
    fresh = Schedules(env.durable)
    env.durable.schedules = fresh
    env.durable.schedule("cleanup", "u.cleanup", every(120), kwargs={"days": 3})
    assert fresh.sync() == {"added": [], "updated": ["cleanup"], "disabled": ["report"]}
    removed = fresh.get("report")
    assert (removed.enabled, removed.next_run_at) == (False, None)
    assert fresh.get("cleanup").spec == '{"every": 120.0}'


def test_a_name_defined_twice_differently_is_refused() -> None:
    env, _ = _env()
    env.durable.schedule("cleanup", "u.cleanup", every(60))
    env.durable.schedule("cleanup", "u.cleanup", every(60))  # the same: fine
    with pytest.raises(ConfigurationError, match="'cleanup' is defined twice, differently"):
        env.durable.schedule("cleanup", "u.cleanup", every(61))


def test_each_tick_fires_once_even_with_two_beats() -> None:
    env, sent = _env()
    env.durable.schedule("cleanup", "u.cleanup", every(10))
    env.durable.schedules.sync()
    other_beat = Schedules(env.durable)
    start = env.clock()
    for _ in range(5):
        env.clock.advance(10)
        fired = env.durable.schedules.tick() + other_beat.tick()
        assert fired == 1
    ticks = [start + timedelta(seconds=10 * n) for n in range(1, 6)]
    assert [m["task_id"] for m in sent] == [run_job_id("cleanup", t) for t in ticks]
    runs = env.durable.schedules.runs("cleanup")
    assert [(r.nominal_at, r.outcome, r.published) for r in reversed(runs)] == [
        (t, "fired", True) for t in ticks
    ]


def test_a_durable_task_gets_its_job_row_in_the_same_transaction() -> None:
    env, sent = _env()
    env.durable.schedule("report", "u.report", every(30), queue="reports")
    env.durable.schedules.sync()
    env.clock.advance(30)
    env.durable.schedules.tick()
    [message] = sent
    job = env.storage.get_job(message["task_id"])
    assert job is not None and (job.task, job.state, job.queue) == (
        "u.report",
        JobState.PENDING,
        "reports",
    )
    assert message["queue"] == "reports"


@pytest.mark.parametrize("missed, fired, skipped", [("once", 1, 4), ("all", 5, 0), ("skip", 0, 5)])
def test_missed_ticks_follow_the_policy(missed: str, fired: int, skipped: int) -> None:
    env, sent = _env()
    env.durable.schedule("cleanup", "u.cleanup", every(60), missed=missed)
    env.durable.schedules.sync()
    env.clock.advance(5 * 60 + 45)  # beat was down for five ticks; the last is 45 s late
    env.durable.schedules.tick()
    runs = env.durable.schedules.runs("cleanup")
    assert [r.outcome for r in runs].count("fired") == fired == len(sent)
    assert [r.outcome for r in runs].count("skipped") == skipped
    # the next tick stays on the grid of the first one: no drift
    assert env.durable.schedules.get("cleanup").next_run_at == env.clock() + timedelta(seconds=15)


def test_a_long_outage_is_skipped_over_not_walked() -> None:
    env, sent = _env()
    env.durable.schedule("fast", "u.cleanup", every(1), catchup_limit=3, missed="all")
    env.durable.schedules.sync()
    start = env.clock()
    env.clock.advance(86400 * 30 + 0.5)  # a month of one-second ticks
    env.durable.schedules.tick()
    assert len(sent) == 3
    next_run = env.durable.schedules.get("fast").next_run_at
    assert next_run is not None and next_run > env.clock()
    assert (next_run - start).total_seconds() % 1 == 0


def test_unique_skips_a_tick_while_the_previous_run_is_active() -> None:
    env, sent = _env()
    env.durable.schedule("report", "u.report", every(60), unique=True)
    env.durable.schedules.sync()
    env.clock.advance(60)
    env.durable.schedules.tick()
    env.clock.advance(60)
    env.durable.schedules.tick()  # the first report is still pending
    assert len(sent) == 1
    newest = env.durable.schedules.runs("report")[0]
    assert (newest.outcome, newest.reason) == ("skipped", "previous run still active")
    assert env.deliver("u.report", sent[0]["task_id"]) == "None"
    env.clock.advance(60)
    env.durable.schedules.tick()
    assert len(sent) == 2


def test_pause_resume_change_trigger_delete() -> None:
    env, sent = _env()
    api = env.durable.schedules
    api.add("nightly", "u.cleanup", cron("0 3 * * *", timezone="Europe/Paris"), args=[7])
    with pytest.raises(ConfigurationError, match="exists"):
        api.add("nightly", "u.cleanup", every(1))
    api.pause("nightly")
    assert api.get("nightly").next_run_at is None
    env.clock.advance(86400 * 2)
    api.tick()
    assert sent == []
    resumed = api.resume("nightly")
    assert resumed.next_run_at is not None and resumed.next_run_at > env.clock()
    changed = api.change("nightly", when=every(5), queue="low")
    assert changed.next_run_at == env.clock() + timedelta(seconds=5)
    job_id = api.trigger("nightly")
    assert sent[-1]["task_id"] == job_id and sent[-1]["args"] == [7]
    assert sent[-1]["queue"] == "low"
    assert api.runs("nightly")[0].reason == "triggered"
    api.delete("nightly")
    with pytest.raises(ScheduleNotFound):
        api.get("nightly")
    with pytest.raises(ScheduleNotFound):
        api.delete("nightly")


def test_a_run_whose_message_was_not_sent_is_published_again() -> None:
    env, sent = _env()
    env.durable.schedule("cleanup", "u.cleanup", every(60))
    env.durable.schedules.sync()
    env.clock.advance(60)
    real = env.app.send_task
    env.app.send_task = lambda *a, **k: (_ for _ in ()).throw(  # type: ignore
        ConnectionError("broker down")
    )
    env.durable.schedules.tick()
    [run] = env.durable.schedules.runs("cleanup")
    assert (run.outcome, run.published) == ("fired", False)
    env.app.send_task = real  # type: ignore[method-assign]
    env.clock.advance(11)
    env.durable.schedules.tick()
    assert [m["task_id"] for m in sent] == [run.job_id]
    assert env.durable.schedules.runs("cleanup")[0].published


def test_beat_schedule_entries_are_taken_over() -> None:
    env, _ = _env()
    import_beat_schedule(
        env.durable.schedules,
        {
            "every-minute": {"task": "u.cleanup", "schedule": 60.0, "args": (1,)},
            "weekday-mornings": {
                "task": "u.cleanup",
                "schedule": crontab(minute="30", hour="8", day_of_week="1-5"),
                "options": {"queue": "low", "expires": 10},
            },
        },
    )
    env.durable.schedules.sync()
    assert env.durable.schedules.get("every-minute").spec == '{"every": 60.0}'
    mornings = env.durable.schedules.get("weekday-mornings")
    assert '"cron": "30 8 * * 1-5"' in mornings.spec and mornings.options == '{"queue": "low"}'


@pytest.mark.parametrize(
    "options, message",
    [
        ({"missed": "sometimes"}, "missed must be one of once, skip, all"),
        ({"timezone": "Nowhere/City"}, "unknown timezone"),
        ({"catchup_limit": 0}, "catchup_limit must be >= 1"),
        ({"colour": "red"}, "unknown option\\(s\\) colour"),
    ],
)
def test_bad_schedule_options(options: dict[str, Any], message: str) -> None:
    env, _ = _env()
    with pytest.raises(ConfigurationError, match=message):
        env.durable.schedule("x", "u.cleanup", every(60), **options)
    with pytest.raises(ConfigurationError, match=message):
        env.durable.schedules.add("x", "u.cleanup", every(60), **options)
    assert env.durable.schedules.all() == []  # nothing written


def test_the_beat_scheduler_does_no_io_when_built_lazily() -> None:
    from celery import Celery

    from celery_durable import Durable
    from celery_durable.beat import DatabaseScheduler

    app = Celery("lazy", set_as_current=False, broker="memory://")
    app.conf.durable_database_url = "postgresql+psycopg://nobody:pw@127.0.0.1:1/none"
    Durable(app).schedule("x", "u.any", every(60))
    scheduler = DatabaseScheduler(app, lazy=True)  # would raise if it touched the DB
    assert scheduler.schedule == {} and scheduler.max_interval == 5.0
    assert "127.0.0.1:1/none" in scheduler.info and "pw" not in scheduler.info


def test_a_beat_started_while_the_database_is_down_syncs_once_it_is_back() -> None:
    from celery_durable import StorageUnavailable
    from celery_durable.beat import DatabaseScheduler

    env, _ = _env()
    env.durable.schedule("cleanup", "u.cleanup", every(60))
    real_get = env.storage.get_schedule
    down = {"on": True}

    def get_schedule(name: str) -> Any:
        if down["on"]:
            raise StorageUnavailable("connection refused")
        return real_get(name)

    env.storage.get_schedule = get_schedule  # type: ignore[method-assign]
    scheduler = DatabaseScheduler(env.app, lazy=True)
    scheduler.setup_schedule()  # logged, not raised: beat keeps running
    assert scheduler.tick() == scheduler.max_interval  # still down: waits, no crash
    assert env.durable.schedules.all() == []
    down["on"] = False
    scheduler.tick()
    assert [s.name for s in env.durable.schedules.all()] == ["cleanup"]


def test_a_store_of_ones_own_without_latest_schedule_runs_still_lists_last_runs() -> None:
    class OwnStore(MemoryStorage):
        latest_schedule_runs = None  # the optional one-query method, not written

    app = Celery("own-store", set_as_current=False, broker="memory://")
    app.send_task = lambda name, **kw: None  # type: ignore
    durable = Durable(app, storage=OwnStore())
    durable.schedules.add("a", "u.cleanup", every(60))
    durable.schedules.add("never", "u.cleanup", every(60))
    job_id = durable.schedules.trigger("a")
    latest = durable.schedules.latest_runs()
    assert list(latest) == ["a"] and latest["a"].job_id == job_id
