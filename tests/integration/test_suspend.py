"""Calls that suspend, with real workers on two queues (`default` and `payments`),
real brokers and databases, and SIGKILL: dispatched calls, gather and durable sleep.

Side effects are counted from files the workers append to; job state is read from SQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest
import redis

from celery_durable.store.records import CallState, JobState
from tests.integration.conftest import Cluster, wait_for
from tests.integration.test_cli_and_demo import _celery

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]


def _state(cluster: Cluster, job_id: str) -> JobState | None:
    job = cluster.job(job_id)
    return None if job is None else job.state


def _wait_state(cluster: Cluster, job_id: str, state: JobState, timeout: float = 30) -> None:
    wait_for(
        lambda: _state(cluster, job_id) is state,
        timeout,
        f"job {job_id} to be {state.value}",
        cluster.logs_tail,
    )


def _wait_count(cluster: Cluster, effect: str, n: int, timeout: float = 30) -> None:
    wait_for(lambda: cluster.count(effect) >= n, timeout, f"{n} x {effect}", cluster.logs_tail)


@pytest.mark.redis
def test_a_dispatched_call_frees_the_parents_worker_and_returns_the_childs_result(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    (cluster.effects / "hold-charge").touch()
    cluster.worker(concurrency=1)
    cluster.worker(concurrency=1, queue=cluster.payments)
    tasks = cluster.app.tasks
    parent = tasks["proj.checkout"].delay("A", 5, cluster.payments).id
    _wait_count(cluster, "charge-start", 1)
    _wait_state(cluster, parent, JobState.SUSPENDED)
    child = cluster.job(f"{parent}.1")
    assert child is not None and child.parent_id == parent and child.queue == cluster.payments
    # The parent's only worker slot is free while the child runs: another job completes.
    quick = tasks["proj.quick"].delay(1).id
    assert cluster.wait_finished(quick).state is JobState.SUCCEEDED
    assert cluster.count("charge-done") == 0, "the child was still running"
    assert cluster.durable.get_job(parent).waiting_for == [f"{parent}.1"]
    (cluster.effects / "hold-charge").unlink()
    job = cluster.wait_finished(parent)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.durable.get_job(parent).result == {"receipt": "receipt-A-5"}
    [record] = cluster.storage.load_history(parent)
    assert (record.name, record.state) == ("proj.charge", CallState.SUCCEEDED)
    assert (cluster.count("charge-done"), cluster.count("after-charge")) == (1, 1)

    # A child that fails reaches the body as CallError, and compensation runs.
    failing = tasks["proj.checkout"].delay("B", -1, cluster.payments).id
    assert cluster.wait_finished(failing).state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.durable.get_job(failing).result == {
        "compensated": "ValueError: card declined for B"
    }
    assert cluster.count("compensate") == 1
    assert cluster.job(f"{failing}.1").state is JobState.FAILED  # type: ignore[union-attr]

    # A durable child is a workflow with a history of its own.
    nested = tasks["proj.parent_of_durable"].delay("C", cluster.payments).id
    assert cluster.wait_finished(nested).state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.durable.get_job(nested).result == [2, f"{nested}.1"]
    assert [c.name for c in cluster.storage.load_history(f"{nested}.1")] == [
        "proj.settle_order",
        "proj.step",
    ]


@pytest.mark.rabbitmq
def test_sigkill_at_each_stage_of_a_dispatched_call_loses_no_workflow(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("rabbitmq", "postgres")
    default = cluster.worker(concurrency=1)
    payments = cluster.worker(concurrency=1, queue=cluster.payments)
    checkout = cluster.app.tasks["proj.checkout"]

    # 1. The parent's worker dies before the dispatch is committed.
    (cluster.effects / "hold-checkout").touch()
    first = checkout.delay("K1", 1, cluster.payments).id
    _wait_state(cluster, first, JobState.RUNNING)
    default.kill()
    assert cluster.job(f"{first}.1") is None, "nothing was dispatched yet"
    (cluster.effects / "hold-checkout").unlink()
    default = cluster.worker(concurrency=1)
    assert cluster.wait_finished(first).state is JobState.SUCCEEDED, cluster.logs_tail()

    # 2. The child's worker dies while the child runs.
    (cluster.effects / "hold-charge").touch()
    second = checkout.delay("K2", 2, cluster.payments).id
    _wait_count(cluster, "charge-start", 2)
    payments.kill()
    (cluster.effects / "hold-charge").unlink()
    payments = cluster.worker(concurrency=1, queue=cluster.payments)
    assert cluster.wait_finished(second).state is JobState.SUCCEEDED, cluster.logs_tail()

    # 3. The child finishes while the parent's worker is dead, and the parent's wake-up
    #    message is lost: the recovery sweeper publishes the parent from its row.
    (cluster.effects / "hold-charge").touch()
    third = checkout.delay("K3", 3, cluster.payments).id
    _wait_state(cluster, third, JobState.SUSPENDED)
    default.kill()
    (cluster.effects / "hold-charge").unlink()
    _wait_state(cluster, f"{third}.1", JobState.SUCCEEDED)
    _wait_state(cluster, third, JobState.PENDING)
    with cluster.app.connection_for_write() as conn:
        conn.default_channel.queue_purge(cluster.queue)
    cluster.worker(concurrency=1)
    assert cluster.wait_finished(third).state is JobState.SUCCEEDED, cluster.logs_tail()

    for order, job_id in (("K1", first), ("K2", second), ("K3", third)):
        amount = int(order[1])
        assert cluster.durable.get_job(job_id).result == {"receipt": f"receipt-{order}-{amount}"}
        # one child per committed dispatch, never a second one from a replay
        assert [j.id for j in cluster.storage.get_jobs([f"{job_id}.1", f"{job_id}.1-2"])] == [
            f"{job_id}.1"
        ]
    # Every child completed once; the one killed mid-run started twice.
    assert cluster.count("charge-done") == 3
    assert cluster.count("charge-start") == 4
    assert cluster.count("after-charge") == 3


@pytest.mark.redis
@pytest.mark.mysql
def test_gather_of_20_dispatched_calls_returns_ordered_results(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "mysql")
    cluster.worker(concurrency=1)
    cluster.worker(concurrency=2, queue=cluster.payments)
    job_id = cluster.app.tasks["proj.fan_out"].delay(20, 7, cluster.payments).id
    assert cluster.wait_finished(job_id, timeout=90).state is JobState.SUCCEEDED, (
        cluster.logs_tail()
    )
    expected = [f"receipt-o{i}-{i}" for i in range(20)]
    expected[7] = "error: card declined for o7"
    assert cluster.durable.get_job(job_id).result == expected
    assert (cluster.count("charge-start"), cluster.count("charge-done")) == (20, 19)
    assert len(cluster.storage.load_history(job_id)) == 20


@pytest.mark.redis
def test_durable_sleep_survives_a_worker_restart_and_holds_no_message(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    worker = cluster.worker()
    napper = cluster.app.tasks["proj.napper"]
    short = napper.delay(5).id
    _wait_state(cluster, short, JobState.SUSPENDED)
    worker.kill()  # its ETA message dies with it (Redis would keep it unacked for 1 h)
    cluster.worker()
    job = cluster.wait_finished(short, timeout=60)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    started, ended = cluster.durable.get_job(short).result
    assert ended - started >= 5
    assert (cluster.count("before-nap"), cluster.count("after-nap")) == (1, 1)

    long = napper.delay(3600).id
    _wait_state(cluster, long, JobState.SUSPENDED)
    job = cluster.job(long)
    assert job is not None and job.not_before is not None
    assert job.lease_expires_at == job.not_before  # published by the sweeper, when due
    assert cluster.durable.get_job(long).wake_at == job.not_before
    client = redis.Redis.from_url(cluster.broker)
    assert client.llen(cluster.queue) == 0

    def held_by_a_worker() -> bool:
        return any(long in v.decode() for v in client.hvals("unacked"))

    # the delivery that suspended acks its message just after the row is written; a
    # worker holding an ETA message instead would keep it unacked for the whole hour
    wait_for(lambda: not held_by_a_worker(), 15, "the suspending delivery's ack")
    # An hour passes (the row and the recorded wake-up time move back by an hour).
    _shift_sleep_back(cluster, long, timedelta(hours=1))
    assert cluster.wait_finished(long, timeout=30).state is JobState.SUCCEEDED
    assert (cluster.count("before-nap"), cluster.count("after-nap")) == (2, 2)


def _shift_sleep_back(cluster: Cluster, job_id: str, by: timedelta) -> None:
    from sqlalchemy import update

    jobs, calls = cluster.storage.tables.jobs, cluster.storage.tables.calls
    job = cluster.job(job_id)
    assert job is not None and job.not_before is not None
    [sleep] = [c for c in cluster.storage.load_history(job_id) if c.name == "celery_durable.sleep"]
    until = (job.not_before - by).isoformat()
    with cluster.storage.engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(not_before=job.not_before - by, lease_expires_at=job.not_before - by)
        )
        conn.execute(
            update(calls)
            .where(calls.c.root_id == job_id, calls.c.seq == sleep.seq)
            .values(result=json.dumps({"until": until}))
        )


@pytest.mark.rabbitmq
def test_a_message_wakes_a_waiting_job_even_while_its_worker_is_down(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("rabbitmq", "postgres")
    worker = cluster.worker()
    task = cluster.app.tasks["proj.await_approval"]
    job_id = task.delay("A-7", None).id
    _wait_state(cluster, job_id, JobState.SUSPENDED)
    assert cluster.job(job_id).waiting_topic == "approval"  # type: ignore[union-attr]
    worker.kill()
    env = {
        "DURABLE_TEST_BROKER": cluster.broker,
        "DURABLE_TEST_STORE": cluster.store_url,
        "DURABLE_TEST_PREFIX": cluster.prefix,
        "DURABLE_TEST_QUEUE": cluster.queue,
    }
    sent = _celery(
        env, "jobs", "send", job_id, "approval", '{"by": "ada"}', "--key", "approval-A-7"
    )
    assert sent.returncode == 0 and "sent on 'approval'" in sent.stdout, sent.stderr
    assert not cluster.durable.send(job_id, "approval", {"by": "ada"}, key="approval-A-7")
    cluster.worker()
    assert cluster.wait_finished(job_id).state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.durable.get_job(job_id).result == {"order": "A-7", "answer": {"by": "ada"}}
    assert (cluster.count("asked"), cluster.count("answered")) == (1, 1)

    timed_out = task.delay("B-8", 1.5).id
    job = cluster.wait_finished(timed_out)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.durable.get_job(timed_out).result == {"order": "B-8", "answer": None}
    started, finished = job.started_at, job.finished_at
    assert started is not None and finished is not None
    assert (finished - started).total_seconds() >= 1.5
