"""The Durable facade, settings, enqueueing and recovery, on the in-memory store."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

import celery_durable
from celery_durable import (
    ConfigurationError,
    Durable,
    DurableTask,
    JobNotFound,
    JobState,
    MemoryStorage,
    SerializationError,
)
from celery_durable.store.records import ClaimOutcome
from tests.unit.conftest import Env


def test_settings_come_from_app_conf() -> None:
    app = Celery("conf", set_as_current=False)
    app.conf.durable_database_url = "sqlite:///x.sqlite3"
    app.conf.durable_lease_seconds = "12"
    durable = Durable(app)
    assert durable.settings.database_url == "sqlite:///x.sqlite3"
    assert durable.settings.lease_seconds == 12.0
    assert durable.settings.table_prefix == "durable_"


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("durable_lease_seconds", "soon", "durable_lease_seconds must be a float"),
        ("durable_sweep_interval", 0, "durable_sweep_interval must be positive"),
        ("durable_table_prefix", "x; drop", "durable_table_prefix must be letters"),
    ],
)
def test_bad_settings_name_the_setting(setting: str, value: Any, message: str) -> None:
    app = Celery("bad", set_as_current=False)
    app.conf[setting] = value
    with pytest.raises(ConfigurationError, match=message):
        Durable(app)


def test_unknown_task_option_suggests_the_fix(env: Env) -> None:
    with pytest.raises(ConfigurationError, match="'acks_lat'; did you mean 'acks_late'"):
        env.durable.task(acks_lat=True)


def test_durable_tasks_default_to_acks_late(env: Env) -> None:
    @env.durable.task(name="u.t", shared=False)
    def t() -> None: ...

    assert isinstance(env.app.tasks["u.t"], DurableTask)
    assert env.app.tasks["u.t"].acks_late is True


def test_base_class_alone_wires_a_durable_instance() -> None:
    app = Celery("plain", set_as_current=False)
    app.conf.durable_database_url = "sqlite:///elsewhere.sqlite3"

    @app.task(base=DurableTask, name="p.t", shared=False)
    def t() -> None: ...

    assert app.tasks["p.t"].acks_late is True
    assert Durable.of(app).settings.database_url == "sqlite:///elsewhere.sqlite3"


def test_shared_task_with_the_base_class_is_durable() -> None:
    from celery import shared_task

    @shared_task(base=DurableTask, name="shared.durable_t")
    def t() -> None: ...

    app = Celery("shared", set_as_current=False)
    app.conf.durable_table_prefix = "shared_"
    task = app.tasks["shared.durable_t"]
    assert isinstance(task, DurableTask) and task.acks_late is True
    assert Durable.of(app).settings.table_prefix == "shared_"


def test_a_second_facade_for_the_same_app_is_refused(env: Env) -> None:
    with pytest.raises(ConfigurationError, match=r"Durable\.of"):
        Durable(env.app)


def test_unknown_job_id_is_not_found(env: Env) -> None:
    with pytest.raises(JobNotFound, match="'nope' not found"):
        env.durable.get_job("nope")


def test_non_json_arguments_fail_before_anything_is_written_or_sent(env: Env) -> None:
    env.app.conf.broker_url = "memory://"

    @env.durable.task(name="u.t", shared=False)
    def t(payload: object) -> None: ...

    with pytest.raises(SerializationError) as info:
        env.app.tasks["u.t"].delay({"items": [1, {2, 3}]})
    message = str(info.value)
    assert "task 'u.t' positional arguments at [0]['items'][1]" in message
    assert "builtins.set" in message
    assert env.storage.expired_jobs(env.clock.now.replace(year=2100), 10) == []


def test_a_failed_publish_removes_the_job_row(env: Env) -> None:
    env.app.conf.broker_url = "memory://"

    @env.durable.task(name="u.t", shared=False)
    def t() -> None: ...

    class Down(Exception):
        pass

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise Down("broker down")

    env.app.send_task = refuse  # type: ignore[method-assign]
    with pytest.raises(Down):
        env.app.tasks["u.t"].apply_async(task_id="j1")
    assert env.storage.get_job("j1") is None


def test_sweeper_republishes_expired_jobs_once(env: Env) -> None:
    sent: list[dict[str, Any]] = []
    env.app.send_task = lambda name, **kw: sent.append({"name": name, **kw})  # type: ignore
    from celery_durable.engine.enqueue import new_job

    env.storage.create_job(
        new_job(
            env.durable,
            "u.t",
            "j1",
            [1],
            {"a": 2},
            queue="q1",
            priority=3,
            eta=None,
            options={"root_id": "r1", "queue": "ignored"},
        )
    )
    now = env.clock()
    env.storage.claim_job("j1", "dead", now, now.replace(minute=1))
    assert env.durable.sweeper.sweep_once() == []  # lease still live
    env.clock.advance(120)
    assert env.durable.sweeper.sweep_once() == ["j1"]
    assert env.durable.sweeper.sweep_once() == []
    assert sent == [
        {
            "name": "u.t",
            "args": [1],
            "kwargs": {"a": 2},
            "task_id": "j1",
            "queue": "q1",
            "priority": 3,
            "root_id": "r1",
            "headers": {"durable_due": env.clock().isoformat()},
        }
    ]
    job = env.storage.get_job("j1")
    assert job is not None and (job.state, job.recoveries) == (JobState.PENDING, 1)


def test_sweeper_fails_a_job_that_keeps_killing_workers(env: Env) -> None:
    env.app.send_task = lambda name, **kw: None  # type: ignore
    from celery_durable.engine.enqueue import new_job

    env.storage.create_job(
        new_job(env.durable, "u.t", "j1", [], {}, queue=None, priority=None, eta=None)
    )
    for _ in range(env.durable.settings.max_recoveries + 1):
        now = env.clock()
        claim = env.storage.claim_job("j1", "w", now, now)
        if claim.outcome is not ClaimOutcome.CLAIMED:
            break
        env.clock.advance(1)
        env.durable.sweeper.sweep_once()
    job = env.durable.get_job("j1")
    assert job.state == "failed"
    assert job.error is not None and job.error["type"] == "WorkerLostError"


def test_memory_storage_is_a_storage() -> None:
    assert isinstance(MemoryStorage(), celery_durable.Storage)


def test_sweeper_leaves_routing_to_the_task_when_none_was_given(env: Env) -> None:
    sent: list[dict[str, Any]] = []
    env.app.send_task = lambda name, **kw: sent.append(kw)  # type: ignore
    from celery_durable.engine.enqueue import new_job

    env.storage.create_job(
        new_job(env.durable, "u.t", "j1", [], {}, queue=None, priority=None, eta=None)
    )
    env.clock.advance(env.durable.settings.delivery_timeout + 1)
    assert env.durable.sweeper.sweep_once() == ["j1"]
    assert "queue" not in sent[0] and "priority" not in sent[0]
    job = env.storage.get_job("j1")
    assert job is not None and job.recoveries == 0  # never claimed: resent, not recovered


@pytest.mark.filterwarnings("ignore::celery.exceptions.CDeprecationWarning")
def test_routing_options_are_accepted_by_the_decorator(env: Env) -> None:
    @env.durable.task(name="u.routed", queue="payments", priority=5, shared=False)
    def routed() -> None: ...

    assert env.app.tasks["u.routed"].queue == "payments"
