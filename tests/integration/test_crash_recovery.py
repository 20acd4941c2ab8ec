"""Jobs survive SIGKILLed workers: completed calls never run twice.

Each test runs real `celery worker` processes (prefork) against a real broker and a real
database, kills them with SIGKILL, and counts side effects in files.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from celery import chain

from celery_durable import JobState
from tests.integration.conftest import Cluster, Worker, wait_for

pytestmark = pytest.mark.worker
BROKERS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
]


def _start_and_kill_after_call_2(cluster: Cluster, job_id: str | None = None) -> tuple[str, str]:
    """Enqueue the five-call workflow and wait until call 2 has committed."""
    job_id = job_id or cluster.app.tasks["proj.five_steps"].delay(0).id
    wait_for(
        lambda: cluster.committed_calls(job_id) >= 2, 60, "call 2 to commit", cluster.logs_tail
    )
    job = cluster.job(job_id)
    assert job is not None and job.lease_owner is not None
    assert cluster.committed_calls(job_id) == 2, "killed too late: call 3 already committed"
    return job_id, job.lease_owner


def _kill_whole_worker_after_call_2_and_restart(
    cluster: Cluster, first: Worker, job_id: str | None = None
) -> str:
    """SIGKILL ``first`` (main process and pool) mid-job, start a fresh worker."""
    job_id, _ = _start_and_kill_after_call_2(cluster, job_id)
    first.kill()
    cluster.worker()
    _assert_resumed_without_rerunning(cluster, job_id)
    return job_id


def _assert_resumed_without_rerunning(cluster: Cluster, job_id: str) -> None:
    job = cluster.wait_finished(job_id)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.durable.get_job(job_id).result == [1, 2, 3, 4, 5]
    assert cluster.count("s1") == 1
    assert cluster.count("s2") == 1
    assert cluster.count("s3") in (1, 2)  # the in-flight call may run again
    assert cluster.count("s4") == 1
    assert cluster.count("s5") == 1
    assert job.attempts >= 2, "the job should have been executed again after the crash"


@pytest.mark.parametrize(
    ("broker", "store"),
    [
        pytest.param("redis", "postgres", marks=[pytest.mark.redis, pytest.mark.postgres]),
        pytest.param("rabbitmq", "postgres", marks=[pytest.mark.rabbitmq, pytest.mark.postgres]),
        pytest.param("redis", "mysql", marks=[pytest.mark.redis, pytest.mark.mysql]),
    ],
)
def test_whole_worker_sigkill_resumes_on_restart(
    make_cluster: Callable[..., Cluster], broker: str, store: str
) -> None:
    cluster = make_cluster(broker, store, step_seconds=1.0)
    job_id = _kill_whole_worker_after_call_2_and_restart(cluster, cluster.worker())
    if broker == "redis":
        # Redis would hold the unacked message for its 1 h visibility timeout: only the
        # recovery sweeper can have brought it back.
        job = cluster.job(job_id)
        assert job is not None and job.recoveries >= 1


@pytest.mark.postgres
@pytest.mark.parametrize("broker", BROKERS)
def test_pool_child_sigkill_resumes_in_same_worker(
    make_cluster: Callable[..., Cluster], broker: str
) -> None:
    cluster = make_cluster(broker, "postgres", step_seconds=1.0)
    cluster.worker()
    job_id, owner = _start_and_kill_after_call_2(cluster)
    child_pid = int(owner.split("/")[1])
    os.kill(child_pid, signal.SIGKILL)
    _assert_resumed_without_rerunning(cluster, job_id)


@pytest.mark.postgres
@pytest.mark.redis
def test_relaxed_claim_and_finish_commits_still_resume_without_rerunning(
    make_cluster: Callable[..., Cluster],
) -> None:
    """durable_synchronous_commit="off" relaxes only what a replay repairs: a killed
    worker's job still resumes with every committed call kept."""
    cluster = make_cluster("redis", "postgres", step_seconds=1.0)
    first = cluster.worker(DURABLE_TEST_SYNCHRONOUS_COMMIT="off")
    job_id, _ = _start_and_kill_after_call_2(cluster)
    first.kill()
    cluster.worker(DURABLE_TEST_SYNCHRONOUS_COMMIT="off")
    _assert_resumed_without_rerunning(cluster, job_id)


@pytest.mark.postgres
@pytest.mark.parametrize("broker", BROKERS)
def test_same_message_delivered_twice_runs_the_body_once(
    make_cluster: Callable[..., Cluster], broker: str
) -> None:
    cluster = make_cluster(broker, "postgres", step_seconds=0.5)
    task = cluster.app.tasks["proj.five_steps"]
    job_id = task.apply_async((0,)).id
    task.apply_async((0,), task_id=job_id)  # a duplicate delivery of the same job
    cluster.worker(concurrency=2)
    job = cluster.wait_finished(job_id)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.count("body") == 1
    assert [cluster.count(f"s{i}") for i in range(1, 6)] == [1, 1, 1, 1, 1]
    assert job.attempts == 1


@pytest.mark.redis
@pytest.mark.postgres
def test_failed_call_reaches_the_body_and_compensation_runs(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    cluster.worker()
    job_id = cluster.app.tasks["proj.refund_on_failure"].delay(7).id
    job = cluster.wait_finished(job_id)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    view = cluster.durable.get_job(job_id)
    assert view.result == {"refunded": 8, "error": "ValueError"}
    assert [(c.name, c.state) for c in view.calls] == [
        ("proj.step", "succeeded"),
        ("proj.fail", "failed"),
        ("proj.step", "succeeded"),
    ]
    assert view.calls[1].error is not None
    assert view.calls[1].error["message"] == "out of stock"
    assert (cluster.count("charge"), cluster.count("fail"), cluster.count("refund")) == (1, 1, 1)


def test_embedded_default_recovers_a_killed_worker_through_the_sweeper(
    make_cluster: Callable[..., Cluster],
) -> None:
    """SQLite store + the sqla+sqlite transport, which never redelivers a message."""
    cluster = make_cluster("sqlite", "sqlite", step_seconds=1.0)
    job_id = _kill_whole_worker_after_call_2_and_restart(cluster, cluster.worker())
    job = cluster.job(job_id)
    assert job is not None and job.recoveries >= 1


@pytest.mark.redis
@pytest.mark.postgres
def test_a_chain_continues_after_the_sweeper_recovers_its_first_task(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres", step_seconds=1.0)
    tasks = cluster.app.tasks
    first = cluster.worker()
    last = chain(tasks["proj.five_steps"].s(0), tasks["proj.collect"].s()).apply_async()
    _kill_whole_worker_after_call_2_and_restart(cluster, first, last.parent.id)
    wait_for(
        lambda: cluster.count("collected-1-2-3-4-5") == 1,
        30,
        "the chained task to receive the recovered job's result",
        cluster.logs_tail,
    )


@pytest.mark.redis
@pytest.mark.postgres
def test_celery_autoretry_on_a_durable_task_replays_completed_calls(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Celery's own retry (autoretry_for / self.retry) hands the lease back first."""
    cluster = make_cluster("redis", "postgres")
    cluster.worker()
    job_id = cluster.app.tasks["proj.retry_once"].delay(41).id
    job = cluster.wait_finished(job_id, timeout=30)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.durable.get_job(job_id).result == 42
    assert cluster.count("retry-body") == 2
    assert cluster.count("before-retry") == 1
    assert job.attempts == 2


@pytest.mark.redis
@pytest.mark.postgres
def test_a_durable_task_calls_a_durable_task_in_process(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    cluster.worker()
    job_id = cluster.app.tasks["proj.outer"].delay(4).id
    job = cluster.wait_finished(job_id)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    view = cluster.durable.get_job(job_id)
    assert view.result == [5, 5]
    assert [(c.position, c.name) for c in view.calls] == [
        ("1", "proj.inner"),
        ("1.1", "proj.step"),
        ("2", "proj.step"),
    ]
    assert cluster.job(f"{job_id}.1") is None  # a child scope, not a job of its own
