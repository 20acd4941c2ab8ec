"""The pytest plugin users get (celery_durable.testing.pytest_plugin), used for real:
its worker is killed mid-job and another one finishes the job."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from celery_durable.testing.pytest_plugin import DurableWorker, wait_for_job, wait_until
from tests.integration.conftest import REPO, Cluster

pytestmark = pytest.mark.worker


def test_durable_worker_fixture_survives_a_kill(
    make_cluster: Callable[..., Cluster], durable_worker: Callable[..., DurableWorker]
) -> None:
    cluster = make_cluster("sqlite", "sqlite", step_seconds=0.3)
    env = {
        "DURABLE_TEST_BROKER": cluster.broker,
        "DURABLE_TEST_STORE": cluster.store_url,
        "DURABLE_TEST_PREFIX": cluster.prefix,
        "DURABLE_TEST_QUEUE": cluster.queue,
        "DURABLE_TEST_EFFECTS": str(cluster.effects),
        "DURABLE_TEST_STEP_SECONDS": "0.3",
        "PYTHONPATH": str(REPO),
    }
    first = durable_worker(cluster.app, "tests.integration.proj", env=env, cwd=REPO)
    assert first.sweeps >= 1  # ready means its heartbeat row is there
    job_id = cluster.app.tasks["proj.five_steps"].delay(0).id
    wait_until(lambda: cluster.committed_calls(job_id) >= 2, 60, "two calls")
    first.kill()
    assert first.process.poll() is not None
    durable_worker(cluster.app, "tests.integration.proj", env=env, cwd=REPO)
    view = wait_for_job(cluster.durable, job_id)
    assert (view.state, view.result) == ("succeeded", [1, 2, 3, 4, 5])
    assert cluster.count("s1") == 1 and cluster.count("s2") == 1  # checkpointed: once
