"""Operations against real prefork workers: cancellation that survives a restart,
Celery's revoke, and the `celery durable jobs/recover/retention/migrate` commands on
PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from celery_durable import CancelOutcome, JobState
from tests.integration.conftest import Cluster, wait_for
from tests.integration.test_cli_and_demo import _celery

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]


def _state(cluster: Cluster, job_id: str) -> JobState | None:
    job = cluster.job(job_id)
    return None if job is None else job.state


def test_cancelled_pending_running_and_retrying_jobs_never_run_again(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres", step_seconds=1.0, delivery_timeout=3)
    pending = cluster.app.tasks["proj.outer"].delay(1).id  # no worker yet
    assert cluster.durable.cancel(pending) is CancelOutcome.CANCELLED

    first = cluster.worker(concurrency=2)
    running = cluster.app.tasks["proj.five_steps"].delay(0).id
    retrying = cluster.app.tasks["proj.flaky_order"].delay(5, 3.0).id
    wait_for(
        lambda: cluster.committed_calls(running) >= 2,
        60,
        "call 2 of the running job",
        cluster.logs_tail,
    )
    wait_for(
        lambda: _state(cluster, retrying) is JobState.RETRYING,
        60,
        "the retrying job to wait for its retry",
        cluster.logs_tail,
    )
    assert cluster.durable.cancel(running) is CancelOutcome.REQUESTED
    assert cluster.durable.cancel(retrying) is CancelOutcome.CANCELLED
    job = cluster.wait_finished(running)
    assert job.state is JobState.CANCELLED, cluster.logs_tail()
    error = cluster.durable.get_job(running).error
    assert error is not None and error["type"] == "Cancelled"

    first.kill()  # it held the retry's ETA message: only recovery could bring it back
    second = cluster.wait_ready(cluster.worker())
    # Past every deadline the jobs had (the pending job's delivery timeout, the retry's
    # due time plus the lease), then two full sweeps: whatever recovery would send
    # again, it has sent.
    deadline = max(j.created_at for j in map(cluster.job, (pending, retrying)) if j) + timedelta(
        seconds=3 + 3 + 2
    )
    wait_for(lambda: datetime.now(timezone.utc) > deadline, 30, "the deadlines to pass")
    cluster.wait_sweeps(second, 2)
    assert any(n[2] == pending for n in cluster.notes("postrun"))  # delivered, not run
    for job_id in (pending, running, retrying):
        assert _state(cluster, job_id) is JobState.CANCELLED, job_id
    assert cluster.count("inner-step") == 0  # the pending job never started
    assert cluster.count("s4") == 0 and cluster.count("s5") == 0
    assert cluster.count("s3") <= 1  # in flight when the cancel came, at most once
    assert cluster.count("r-flaky") == 1  # the retry never ran
    assert cluster.durable.cancel(running) is CancelOutcome.FINISHED


def test_celery_revoke_terminate_cancels_the_durable_job(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres", step_seconds=1.0)
    worker = cluster.wait_ready(cluster.worker())
    result = cluster.app.tasks["proj.five_steps"].delay(0)
    wait_for(lambda: cluster.committed_calls(result.id) >= 1, 60, "call 1", cluster.logs_tail)
    result.revoke(terminate=True)  # Celery kills the pool child running it
    job = cluster.wait_finished(result.id, timeout=30)
    assert job.state is JobState.CANCELLED, cluster.logs_tail()
    # past the killed execution's lease, then two sweeps: recovery must not bring it back
    assert job.started_at is not None
    wait_for(
        lambda: datetime.now(timezone.utc) > job.started_at + timedelta(seconds=3),
        30,
        "the lease to run out",
    )
    cluster.wait_sweeps(worker, 2)
    assert cluster.count("s5") == 0
    assert _state(cluster, result.id) is JobState.CANCELLED


def test_jobs_commands_against_postgres(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster("redis", "postgres")
    env = {
        "DURABLE_TEST_BROKER": cluster.broker,
        "DURABLE_TEST_STORE": cluster.store_url,
        "DURABLE_TEST_PREFIX": cluster.prefix,
        "DURABLE_TEST_QUEUE": cluster.queue,
        "DURABLE_TEST_EFFECTS": str(cluster.effects),
    }
    dry = _celery(env, "migrate", "--dry-run")
    assert dry.returncode == 0 and "schema is up to date" in dry.stdout
    assert "postgres@" in dry.stdout and "password" not in dry.stdout

    cluster.worker()
    other = cluster.app.tasks["proj.outer"].delay(2).id
    done = cluster.app.tasks["proj.outer"].delay(3).id
    failed = cluster.app.tasks["proj.no_retry_body"].delay(1).id
    for job_id in (other, done):
        assert cluster.wait_finished(job_id).state is JobState.SUCCEEDED
    assert cluster.wait_finished(failed).state is JobState.FAILED

    listed = json.loads(_celery(env, "jobs", "list", "--state", "succeeded", "--json").stdout)
    assert sorted(j["id"] for j in listed) == sorted([other, done])
    assert [
        j["id"]
        for j in json.loads(_celery(env, "jobs", "list", "--state", "failed", "--json").stdout)
    ] == [failed]
    table = _celery(env, "jobs", "list", "--task", "proj.outer")
    assert table.returncode == 0 and done in table.stdout
    shown = _celery(env, "jobs", "show", done)
    assert shown.returncode == 0 and "proj.inner" in shown.stdout
    assert json.loads(_celery(env, "jobs", "show", done, "--json").stdout)["result"] == [4, 4]
    assert _celery(env, "jobs", "show", "nope").returncode == 2

    cancel = _celery(env, "jobs", "cancel", done, "nope", "--json")
    assert cancel.returncode == 2  # an id was not found
    assert json.loads(cancel.stdout) == {done: "finished", "nope": "missing"}
    assert _celery(env, "jobs", "cancel", done).returncode == 3  # already finished
    wrong = _celery(env, "jobs", "retry", done)
    assert wrong.returncode == 3 and "only failed, dead or cancelled" in wrong.stderr
    again = _celery(env, "jobs", "retry", failed)
    assert again.returncode == 0 and f"requeued {failed}" in again.stdout
    cluster.wait_finished(failed)
    wait_for(lambda: cluster.count("nr-body") == 2, 30, "the retried job to run again")

    recover = json.loads(_celery(env, "recover", "--dry-run", "--json").stdout)
    assert recover == {"dry_run": True, "jobs": []}
    kept = json.loads(_celery(env, "retention", "--dry-run", "--json").stdout)
    assert kept["deleted"]["succeeded"] == 0  # younger than 7 days
