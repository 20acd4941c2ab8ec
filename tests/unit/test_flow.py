"""Flow control in-process, on the memory store: what a delivery does when a pause, a
concurrency limit or a rate limit holds its job, and debounced enqueues."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from celery.exceptions import Ignore

from celery_durable import JobState
from tests.unit.conftest import Env


def test_rate_limit_on_a_durable_task_is_for_the_deployment_not_per_worker(env: Env) -> None:
    @env.durable.task(name="t.rated", shared=False, rate_limit="100/m")
    def rated() -> None: ...

    @env.app.task(name="t.plain", shared=False, rate_limit="5/s")
    def plain() -> None: ...

    env.app.finalize()
    task = env.app.tasks["t.rated"]
    # Celery's worker would apply its own bucket per worker: it sees none
    assert (task.rate_limit, task.durable_rate_limit) == (None, "100/m")
    assert env.app.tasks["t.plain"].rate_limit == "5/s"  # plain tasks keep Celery's meaning


def test_a_paused_task_is_held_by_its_delivery_and_published_on_resume(env: Env) -> None:
    @env.durable.task(name="t.paused", shared=False)
    def paused(n: int) -> int:
        env.effects.append(f"ran {n}")
        return n

    job_id = env.durable.enqueue(paused, 1).id
    env.published()
    assert env.durable.pause(task="t.paused")
    assert not env.durable.pause(task="t.paused")
    with pytest.raises(Ignore):  # acked, not run, not redelivered
        env.deliver("t.paused", job_id, 1)
    job = env.storage.get_job(job_id)
    assert job is not None and (job.state, job.held, job.lease_expires_at) == (
        JobState.PENDING,
        "paused",
        None,
    )
    assert env.effects == [] and env.published() == []
    assert [(p.kind, p.name) for p in env.durable.paused()] == [("task", "t.paused")]
    assert env.durable.resume(task="t.paused") == 1
    assert env.durable.resume(task="t.paused") is None
    assert [m["id"] for m in env.published()] == [job_id]
    assert env.deliver("t.paused", job_id, 1) == 1


def test_a_job_over_its_key_limit_is_held_and_the_slot_passes_to_it(env: Env) -> None:
    @env.durable.task(
        name="t.keyed", shared=False, concurrency=1, concurrency_key=lambda o: o["customer"]
    )
    def keyed(order: dict[str, Any]) -> str:
        if order["n"] == 1:  # while job 1 holds the slot, job 2 is delivered
            with pytest.raises(Ignore):
                env.deliver("t.keyed", second, {"customer": "c", "n": 2})
            held = env.storage.get_job(second)
            assert held is not None and (held.held, held.flow_key) == ("concurrency", "c")
        return str(order["n"])

    first = env.durable.enqueue(keyed, {"customer": "c", "n": 1}).id
    env.clock.advance(1)
    second = env.durable.enqueue(keyed, {"customer": "c", "n": 2}).id
    env.published()
    assert env.deliver("t.keyed", first, {"customer": "c", "n": 1}) == "1"
    # the execution that freed the slot published the job waiting for it
    assert [m["id"] for m in env.published()] == [second]
    assert env.deliver("t.keyed", second, {"customer": "c", "n": 2}) == "2"


def test_a_job_without_a_rate_token_comes_back_at_its_turn(env: Env) -> None:
    @env.durable.task(name="t.rated", shared=False, rate_limit="2/s")
    def rated(n: int) -> int:
        return n

    ids = [env.durable.enqueue(rated, n).id for n in range(3)]
    env.published()
    assert env.deliver("t.rated", ids[0], 0) == 0
    for job_id in ids[1:]:
        with pytest.raises(Ignore):
            env.deliver("t.rated", job_id, ids.index(job_id))
    etas = {m["id"]: m["eta"] for m in env.published()}
    start = env.clock.now
    assert etas == {
        ids[1]: (start + timedelta(seconds=0.5)).isoformat(),
        ids[2]: (start + timedelta(seconds=1)).isoformat(),
    }
    env.clock.advance(0.5)
    assert env.deliver("t.rated", ids[1], 1) == 1


def test_debounced_enqueues_make_one_job_whose_message_carries_the_latest_arguments(
    env: Env,
) -> None:
    @env.durable.task(name="t.debounced", shared=False)
    def debounced(value: int) -> int:
        return value

    first = env.durable.enqueue(debounced, 1, debounce=("k", 10))
    [message] = env.published()
    env.clock.advance(5)
    assert env.durable.enqueue(debounced, 2, debounce=("k", 10)).id == first.id
    assert env.published() == []  # one row, no second message
    env.clock.advance(5)  # the first message is due, but the window moved on
    with pytest.raises(Ignore):
        env.deliver("t.debounced", first.id, 1)
    [resent] = env.published()
    assert resent["eta"] == (env.clock.now + timedelta(seconds=5)).isoformat()
    assert message["eta"] != resent["eta"]
    assert (message["argsrepr"], resent["argsrepr"]) == ("(1,)", "[2]")  # the latest
    env.clock.advance(5)
    assert env.deliver("t.debounced", first.id, 2) == 2
    kept = env.durable.enqueue(debounced, 3, debounce=("k2", 1), debounce_keep="first")
    assert env.durable.enqueue(debounced, 4, debounce=("k2", 1), debounce_keep="first").id == (
        kept.id
    )
    job = env.storage.get_job(kept.id)
    assert job is not None and job.args == "[3]"


def test_a_debounced_message_delivered_late_runs_with_the_rows_latest_arguments(
    env: Env,
) -> None:
    @env.durable.task(name="t.late", shared=False)
    def late(value: int) -> int:
        return value

    first = env.durable.enqueue(late, 1, debounce=("k", 10))
    [message] = env.published()
    env.clock.advance(5)
    env.durable.enqueue(late, 2, debounce=("k", 10))
    env.clock.advance(60)  # a busy worker takes the first message long after the window
    assert env.deliver("t.late", first.id, 1, headers=message) == 2


def test_a_default_rate_limit_from_celerys_settings_keeps_celerys_meaning() -> None:
    from celery import Celery

    from celery_durable import Durable, MemoryStorage

    app = Celery("defaults", set_as_current=False, broker="memory://")
    app.conf.task_default_rate_limit = "7/s"
    durable = Durable(app, storage=MemoryStorage())

    @durable.task(name="t.unlimited", shared=False)
    def unlimited() -> None: ...

    @durable.task(name="t.limited", shared=False, rate_limit="3/m")
    def limited() -> None: ...

    app.finalize()
    # the default is Celery's per-worker limit; only a declared one is deployment-wide
    assert (unlimited.rate_limit, unlimited.durable_rate_limit) == ("7/s", None)
    assert (limited.rate_limit, limited.durable_rate_limit) == ("7/s", "3/m")


def test_a_key_that_fails_at_delivery_fails_the_job_instead_of_looping(env: Env) -> None:
    from celery.exceptions import Reject

    broken = {"now": False}

    def customer(order: dict[str, Any]) -> str:
        if broken["now"]:  # e.g. a deploy changed the key function meanwhile
            raise KeyError("customer")
        return str(order["customer"])

    @env.durable.task(name="t.keyed", shared=False, concurrency=1, concurrency_key=customer)
    def keyed(order: dict[str, Any]) -> None: ...

    job_id = env.durable.enqueue(keyed, {"customer": "c"}).id
    broken["now"] = True
    with pytest.raises(Reject):
        env.deliver("t.keyed", job_id, {"customer": "c"})
    job = env.storage.get_job(job_id)
    assert job is not None and job.state is JobState.FAILED
    assert "concurrency_key raised KeyError" in (job.error or "")


def test_pause_twice_and_resume_what_is_not_paused_from_the_command_line(env: Env) -> None:
    from click.testing import CliRunner

    from celery_durable.cli import durable as durable_command

    class Obj:
        app = env.app

    runner = CliRunner()
    first = runner.invoke(durable_command, ["queues", "pause", "emails"], obj=Obj())
    assert first.exit_code == 0 and "queue emails paused" in first.output
    again = runner.invoke(durable_command, ["queues", "pause", "emails"], obj=Obj())
    assert again.exit_code == 3 and "paused already" in again.output
    listed = runner.invoke(durable_command, ["queues", "list", "--json"], obj=Obj())
    assert '"name": "emails"' in listed.output and '"paused": true' in listed.output
    runner.invoke(durable_command, ["queues", "resume", "emails"], obj=Obj())
    missing = runner.invoke(durable_command, ["queues", "resume", "emails"], obj=Obj())
    assert missing.exit_code == 3 and "is not paused" in missing.output
