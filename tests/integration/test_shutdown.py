"""Graceful shutdown: SIGTERM a worker mid-job (Celery's warm shutdown)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from celery_durable import JobState
from tests.integration.conftest import Cluster, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]


def _after_call_1(cluster: Cluster) -> str:
    job_id: str = cluster.app.tasks["proj.five_steps"].delay(0).id
    wait_for(lambda: cluster.committed_calls(job_id) >= 1, 60, "call 1", cluster.logs_tail)
    return job_id


def test_a_job_that_finishes_within_the_grace_period_finishes_on_the_same_worker(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres", step_seconds=0.5)
    worker = cluster.worker(DURABLE_TEST_SHUTDOWN_GRACE="30")
    job_id = _after_call_1(cluster)
    worker.terminate()
    worker.process.wait(timeout=60)
    job = cluster.job(job_id)
    assert job is not None and job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert job.attempts == 1
    assert [cluster.count(f"s{n}") for n in range(1, 6)] == [1, 1, 1, 1, 1]


def test_a_job_still_running_when_the_grace_period_ends_is_released_to_another_worker(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres", step_seconds=2.0)
    first = cluster.worker(DURABLE_TEST_SHUTDOWN_GRACE="1.5")
    job_id = _after_call_1(cluster)
    first.terminate()
    try:
        first.process.wait(timeout=20)  # the job alone would keep it for 8 s more
    except subprocess.TimeoutExpired:
        pytest.fail("the worker did not exit after its grace period\n" + cluster.logs_tail())
    job = cluster.job(job_id)
    assert job is not None and job.state is JobState.PENDING, cluster.logs_tail()
    assert job.lease_owner is None  # released at once, not left to expire

    cluster.worker()
    job = cluster.wait_finished(job_id)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.durable.get_job(job_id).result == [1, 2, 3, 4, 5]
    assert (job.recoveries, job.failures) == (0, 0)  # neither a crash nor a failure
    assert cluster.count("s1") == 1
    assert cluster.count("s2") in (1, 2)  # in flight when it was released
    assert [cluster.count(f"s{n}") for n in (3, 4, 5)] == [1, 1, 1]
