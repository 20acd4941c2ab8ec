"""async def durable bodies under real `celery worker`s, killed with SIGKILL: concurrent
calls, a body that mixes every kind of call, and the threads pool. Side effects are
counted in files the workers write."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from celery import chain, group

from celery_durable import CallError, JobState, serialization
from tests.conftest import REDIS_URL
from tests.integration.conftest import Cluster, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]


def _names(cluster: Cluster, effect: str) -> Counter[str]:
    return Counter(note[2] for note in cluster.notes(effect))


def test_three_concurrent_calls_run_at_once(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster("redis", "postgres")
    cluster.wait_ready(cluster.worker())
    job_id = cluster.durable.enqueue(cluster.app.tasks["proj.three_at_once"], [1, 1, 1]).id
    assert cluster.wait_finished(job_id).state is JobState.SUCCEEDED, cluster.logs_tail()
    calls = sorted(cluster.storage.load_history(job_id), key=lambda c: c.seq)
    assert [serialization.loads(c.result) for c in calls] == ["a", "b", "c"]
    # every call started before any of them finished: they ran side by side
    assert max(c.started_at for c in calls) < min(c.finished_at for c in calls)


def test_a_sigkill_mid_gather_reruns_only_the_call_in_flight(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    first = cluster.wait_ready(cluster.worker())
    (cluster.effects / "hold-c").touch()
    job_id = cluster.durable.enqueue(cluster.app.tasks["proj.three_at_once"], [0.6, 0.2, 0]).id
    wait_for(lambda: cluster.committed_calls(job_id) == 2, 60, "a and b", cluster.logs_tail)
    assert _names(cluster, "timed-start")["c"] == 1  # c is in flight
    first.kill()
    (cluster.effects / "hold-c").unlink()
    cluster.worker()
    job = cluster.wait_finished(job_id)
    assert job.state is JobState.SUCCEEDED and job.recoveries >= 1, cluster.logs_tail()
    assert _names(cluster, "timed-done") == {"a": 1, "b": 1, "c": 1}
    assert _names(cluster, "timed-start") == {"a": 1, "b": 1, "c": 2}  # only c again
    calls = sorted(cluster.storage.load_history(job_id), key=lambda c: c.seq)
    assert [serialization.loads(c.result) for c in calls] == ["a", "b", "c"]
    a, b, _ = calls
    assert b.finished_at < a.finished_at  # finished out of order, positions in order
    assert cluster.durable.get_job(job_id).result == ["a", "b", "c"]


def test_an_async_body_mixing_every_kind_of_call_survives_a_sigkill(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    both = f"{cluster.queue},{cluster.payments}"
    first = cluster.wait_ready(cluster.worker(concurrency=2, queue=both))
    (cluster.effects / "hold-mix-last").touch()
    job_id = cluster.durable.enqueue(cluster.app.tasks["proj.async_mix"], cluster.payments).id
    wait_for(lambda: _names(cluster, "timed-start")["mix-last"] == 1, 60, "the last call")
    first.kill()
    (cluster.effects / "hold-mix-last").unlink()
    cluster.worker(concurrency=2, queue=both)
    job = cluster.wait_finished(job_id)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.durable.get_job(job_id).result == [2, "mix-async", "receipt-mix-5", "mix-last"]
    assert cluster.count("mix-legacy") == 1  # the legacy task
    assert cluster.count("charge-done") == 1  # the dispatched call, on the payments queue
    assert _names(cluster, "timed-done") == {"mix-async": 1, "mix-last": 1}
    assert _names(cluster, "timed-start")["mix-last"] == 2
    names = [c.name for c in sorted(cluster.durable.get_job(job_id).calls, key=lambda c: c.seq)]
    assert names[:4] == ["proj.step", "proj.async_timed", "proj.charge", "celery_durable.sleep"]


def test_the_threads_pool_loses_nothing_when_killed_midway(
    make_cluster: Callable[..., Cluster],
) -> None:
    # A message the killed worker had taken but not yet claimed is Redis's until its
    # visibility timeout: the sweeper republishes such a job after delivery_timeout.
    cluster = make_cluster("redis", "postgres", step_seconds=0.02, delivery_timeout=20)
    first = cluster.wait_ready(cluster.worker(concurrency=8, pool="threads"))
    task = cluster.app.tasks["proj.five_steps"]
    ids = [cluster.durable.enqueue(task, n).id for n in range(200)]
    finished = lambda: sum(1 for j in ids if (r := cluster.job(j)) and r.state.finished)  # noqa: E731
    wait_for(lambda: finished() >= 40, 120, "40 jobs", cluster.logs_tail)
    first.kill()
    assert finished() < 200, "killed too late: every job had finished"
    cluster.worker(concurrency=8, pool="threads")
    for job_id in ids:
        assert cluster.wait_finished(job_id, timeout=180).state is JobState.SUCCEEDED
    assert all(cluster.committed_calls(j) == 5 for j in ids)
    counts = [cluster.count(f"s{i}") for i in range(1, 6)]
    # each call ran once, except those in flight at the kill (at most one per thread)
    assert all(200 <= n <= 208 for n in counts), counts


def test_under_gevent_plain_bodies_run_and_an_async_body_is_refused_by_name(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    cluster.wait_ready(cluster.worker(concurrency=4, pool="gevent"))
    plain = cluster.durable.enqueue(cluster.app.tasks["proj.five_steps"], 1).id
    refused = cluster.durable.enqueue(cluster.app.tasks["proj.three_at_once"], [0, 0, 0]).id
    assert cluster.wait_finished(plain).state is JobState.SUCCEEDED, cluster.logs_tail()
    job = cluster.wait_finished(refused)
    assert job.state is JobState.FAILED and job.attempts == 1  # NoRetry: not retried
    error = cluster.durable.get_job(refused).error or {}
    assert "cannot run under the gevent pool (-P gevent)" in error["message"]
    assert "-P prefork, -P threads or -P solo" in error["message"]
    assert _names(cluster, "timed-start") == {}  # no call of it ran


@pytest.mark.mysql
def test_async_bodies_in_a_chain_and_a_group_on_mariadb_with_get(
    make_cluster: Callable[..., Cluster],
) -> None:
    results = REDIS_URL.rsplit("/", 1)[0] + "/6"
    cluster = make_cluster("redis", "mysql", result_backend=results)
    cluster.wait_ready(cluster.worker(concurrency=2))
    tasks = cluster.app.tasks
    chained = chain(tasks["proj.three_at_once"].s([0, 0, 0]), tasks["proj.async_count"].s())
    assert chained.delay().get(timeout=60) == 3
    both = group(tasks["proj.async_count"].s(["x"]), tasks["proj.async_count"].s(["y", "z"]))
    assert both.delay().get(timeout=60) == [1, 2]
    with pytest.raises(CallError) as raised:
        tasks["proj.async_rejected"].delay().get(timeout=60, propagate=True)
    assert (raised.value.name, raised.value.error_type, raised.value.no_retry) == (
        "proj.reject",
        "ValueError",
        True,
    )
