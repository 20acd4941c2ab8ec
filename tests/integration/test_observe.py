"""Hooks under real prefork workers (two pool processes): counted from the rows the
hooks write to a database, for a known mix of successes, retries, failures and a dead
letter; a middleware that raises on every job fails none of them."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable

import pytest

from celery_durable import JobState
from tests.integration.conftest import Cluster

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]


def test_hooks_fire_once_per_event_in_the_pool_processes(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    cluster.worker(concurrency=2, DURABLE_TEST_HOOKS="1")
    tasks = cluster.app.tasks
    jobs = {
        "ok": tasks["proj.five_steps"].delay(0).id,
        "flaky": tasks["proj.flaky_order"].delay(2, 0.3).id,
        "invalid": tasks["proj.no_retry_body"].delay(1).id,
        "dead": tasks["proj.to_dead_letter"].delay().id,
    }
    states = {name: cluster.wait_finished(job_id).state for name, job_id in jobs.items()}
    assert states == {
        "ok": JobState.SUCCEEDED,
        "flaky": JobState.SUCCEEDED,
        "invalid": JobState.FAILED,
        "dead": JobState.DEAD,
    }

    with sqlite3.connect(cluster.effects / "hooks.sqlite3") as db:
        rows = db.execute("SELECT hook, job_id, detail, pid FROM hooks").fetchall()
    counts = Counter((hook, job_id) for hook, job_id, _, _ in rows)

    def of(name: str) -> dict[str, int]:
        return {hook: n for (hook, job_id), n in counts.items() if job_id == jobs[name]}

    assert of("ok") == {"start": 1, "checkpoint": 5, "complete": 1}
    assert of("flaky") == {"start": 3, "retry": 2, "checkpoint": 3, "complete": 1}
    assert of("invalid") == {"start": 1, "fail": 1}
    # two call attempts in each of two job attempts: 3 retries, then the dead letter
    assert of("dead") == {"start": 4, "retry": 3, "checkpoint": 1, "fail": 1}
    worker_pid = cluster.workers[0].process.pid
    assert worker_pid not in {pid for *_, pid in rows}  # they ran in the pool processes
