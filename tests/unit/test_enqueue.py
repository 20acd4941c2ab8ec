"""Enqueue options on the in-memory store and Celery's memory broker: delay / at kept in
SQL or sent as ETA, unique keys, priorities mapped per broker, bad input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from celery import Celery
from celery.exceptions import Ignore

from celery_durable import ConfigurationError, DurableError
from celery_durable.engine.enqueue import broker_priority
from tests.unit.conftest import Env, make_env


def _env() -> Env:
    env = make_env(max_countdown=60)

    @env.durable.task(name="u.send", shared=False)
    def send(to: str) -> str:
        env.effects.append(to)
        return to

    @env.app.task(name="u.plain", shared=False)
    def plain() -> None: ...

    return env


def test_a_long_delay_waits_in_sql_and_the_sweeper_publishes_it_when_due() -> None:
    env = _env()
    result = env.durable.enqueue("u.send", "ada", delay=timedelta(minutes=10))
    assert env.published() == []  # no ETA message held in a worker's RAM
    job = env.storage.get_job(result.id)
    due = env.clock() + timedelta(minutes=10)
    assert job is not None and (job.not_before, job.lease_expires_at) == (due, due)
    with pytest.raises(Ignore):  # a stray early delivery does not run it
        env.deliver("u.send", result.id, "ada")
    env.clock.advance(599)
    assert env.durable.recover() == []
    env.clock.advance(2)
    assert env.durable.recover() == [result.id]
    [message] = env.published()
    assert message["id"] == result.id
    assert env.deliver("u.send", result.id, "ada") == "ada"


def test_a_short_delay_or_an_at_time_is_an_eta_message() -> None:
    env = _env()
    at = env.clock() + timedelta(seconds=30)
    first = env.durable.enqueue(
        "u.send", "grace", at=at.astimezone(timezone(timedelta(hours=-5)))
    )  # any aware zone
    second = env.durable.enqueue("u.send", "alan", delay=5)
    etas = {m["id"]: m["eta"] for m in env.published()}
    assert etas == {
        first.id: at.isoformat(),
        second.id: (env.clock() + timedelta(seconds=5)).isoformat(),
    }
    assert env.storage.get_job(first.id).not_before == at  # type: ignore[union-attr]


def test_unique_returns_the_active_job_and_frees_the_key_when_it_ends() -> None:
    env = _env()
    first = env.durable.enqueue("u.send", "ada", unique="welcome:ada")
    again = env.app.tasks["u.send"].apply_async(("ada",), unique="welcome:ada")
    assert again.id == first.id
    assert len(env.published()) == 1
    assert env.deliver("u.send", first.id, "ada") == "ada"
    later = env.durable.enqueue("u.send", "ada", unique="welcome:ada")
    assert later.id != first.id


def test_priority_means_higher_runs_first_on_every_broker() -> None:
    redis = Celery("p1", broker="redis://localhost:6379/0", set_as_current=False)
    rabbit = Celery("p2", broker="amqp://guest@localhost//", set_as_current=False)
    assert [broker_priority(redis, p) for p in (0, 5, 9)] == [9, 4, 0]
    assert [broker_priority(rabbit, p) for p in (0, 5, 9)] == [0, 5, 9]
    env = _env()  # memory:// follows RabbitMQ's convention
    result = env.durable.enqueue("u.send", "x", priority=7, queue=env.app.conf.task_default_queue)
    [message] = env.published()
    assert message["id"] == result.id
    job = env.storage.get_job(result.id)  # the broker's value, for recovery to resend
    assert job is not None and (job.priority, job.queue) == (7, env.app.conf.task_default_queue)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"at": datetime(2030, 1, 1)}, "at= must be a timezone-aware datetime"),
        ({"delay": -1}, "delay must not be negative"),
        ({"delay": 5, "at": datetime(2030, 1, 1, tzinfo=timezone.utc)}, "not both"),
        ({"priority": 10}, "priority must be a whole number from 0 to 9"),
        ({"priority": "high"}, "priority must be a whole number"),
        ({"unique": ""}, "unique= key must be a non-empty string"),
        ({"unique": "u" * 192}, "unique= key is 192 characters long; at most 191"),
        ({"unique": "a\x00b"}, "unique= key must not contain a NUL byte"),
        ({"task_id": "t" * 129}, "task_id is 129 characters long; at most 128"),
        ({"queue": "q\x00"}, "queue must not contain a NUL byte"),
    ],
)
def test_bad_enqueue_options_write_and_publish_nothing(
    options: dict[str, object], message: str
) -> None:
    env = _env()
    with pytest.raises(DurableError, match=message):
        env.durable.enqueue("u.send", "ada", **options)  # type: ignore[arg-type]
    assert env.durable.jobs() == [] and env.published() == []


def test_enqueue_needs_a_durable_task() -> None:
    env = _env()
    with pytest.raises(ConfigurationError, match="takes a durable task"):
        env.durable.enqueue("u.plain")
    with pytest.raises(ConfigurationError, match="takes a durable task"):
        env.durable.enqueue("u.nope")
