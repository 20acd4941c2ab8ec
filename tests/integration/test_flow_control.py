"""Flow control against real workers: per-key concurrency across two workers (and a
worker SIGKILLed while it holds a slot), a rate limit shared by two workers, a paused
queue, debounced enqueues. Side effects are counted in files the jobs write."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

import pytest

from celery_durable import JobState
from tests.integration.conftest import Cluster, wait_for


def _spans(cluster: Cluster) -> dict[str, tuple[str, float, float]]:
    """job id: (customer, start, end) from the ``slots`` notes (the last run of each)."""
    starts: dict[str, tuple[str, float]] = {}
    spans = {}
    for _pid, at, customer, phase, job_id in cluster.notes("slots"):
        if phase == "start":
            starts[job_id] = (customer, float(at))
        else:
            spans[job_id] = (customer, starts[job_id][1], float(at))
    return spans


@pytest.mark.parametrize(("broker", "store"), [("redis", "postgres"), ("rabbitmq", "mysql")])
def test_one_job_per_key_at_a_time_across_two_workers(
    make_cluster: Callable[..., Cluster], broker: str, store: str
) -> None:
    cluster = make_cluster(broker, store)
    # a lease long enough that eight pool processes starting at once on a small machine
    # never lose one (a lost lease would replay a body, and its start would be noted twice)
    workers = [cluster.worker(concurrency=4, DURABLE_TEST_LEASE="10") for _ in range(2)]
    for worker in workers:
        cluster.wait_ready(worker)
    task = cluster.app.tasks["proj.one_per_customer"]
    ids = [
        cluster.durable.enqueue(task, {"customer": f"c{i % 4}", "n": i, "seconds": 0.15}).id
        for i in range(40)
    ]
    finished = [cluster.wait_finished(job_id, timeout=120) for job_id in ids]
    assert {job.state for job in finished} == {JobState.SUCCEEDED}

    spans = _spans(cluster)
    assert sorted(spans) == sorted(ids)
    starts = [n for n in cluster.notes("slots") if n[3] == "start"]
    assert len(starts) == 40  # no job ran twice
    by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for customer, start, end in spans.values():
        by_key[customer].append((start, end))
    for customer, runs in by_key.items():
        runs.sort()
        for (_, end), (start, _) in itertools.pairwise(runs):
            assert start >= end, f"two jobs of {customer} overlapped"
    # and each key's jobs ran in the order they were enqueued
    for customer in by_key:
        mine = [job_id for job_id in ids if spans[job_id][0] == customer]
        assert sorted(mine, key=lambda job_id: spans[job_id][1]) == mine
    overlapping_keys = any(
        a[0] != b[0] and a[1] < b[2] and b[1] < a[2]
        for a, b in itertools.combinations(spans.values(), 2)
    )
    assert overlapping_keys, "jobs of different keys never ran at the same time"
    # jobs over the limit were held (acked, waiting in SQL) and published again later
    assert any(cluster.deliveries(job_id) >= 2 for job_id in ids)
    assert {job.flow_key for job in finished} == {"c0", "c1", "c2", "c3"}


def test_a_worker_killed_holding_a_slot_frees_it_after_recovery(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    (cluster.effects / "hold-slot").touch()
    first_worker = cluster.wait_ready(cluster.worker(concurrency=2))
    task = cluster.app.tasks["proj.one_per_customer"]
    holder = cluster.durable.enqueue(task, {"customer": "x", "n": 1, "hang": True}).id
    wait_for(
        lambda: any(n[3] == "start" and n[4] == holder for n in cluster.notes("slots")),
        30,
        "the first job to hold the slot",
        cluster.logs_tail,
    )
    waiter = cluster.durable.enqueue(task, {"customer": "x", "n": 2}).id
    wait_for(
        lambda: (job := cluster.job(waiter)) is not None and job.held == "concurrency",
        30,
        "the second job of the key to be held",
        cluster.logs_tail,
    )
    first_worker.kill()
    (cluster.effects / "hold-slot").unlink()
    cluster.wait_ready(cluster.worker(concurrency=2))

    first, second = cluster.wait_finished(holder), cluster.wait_finished(waiter)
    assert (first.state, second.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED)
    assert first.recoveries == 1  # its worker was lost; recovery ran it again
    spans = _spans(cluster)
    assert spans[waiter][1] >= spans[holder][2]  # the slot passed on after the rerun
    assert second.started_at is not None and first.finished_at is not None
    assert second.started_at >= first.finished_at - timedelta(seconds=1)


def test_a_rate_limit_holds_for_two_workers_together(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("rabbitmq", "mysql")
    workers = [cluster.worker(concurrency=2, DURABLE_TEST_LEASE="10") for _ in range(2)]
    for worker in workers:
        cluster.wait_ready(worker)
    task = cluster.app.tasks["proj.ten_per_second"]
    ids = [cluster.durable.enqueue(task, i).id for i in range(30)]
    finished = [cluster.wait_finished(job_id, timeout=120) for job_id in ids]
    assert {job.state for job in finished} == {JobState.SUCCEEDED}
    assert sorted(int(n[2]) for n in cluster.notes("rated")) == list(range(30))  # once each

    # the claims' own timestamps: in any second, at most 10 starts plus the bucket's one
    starts = sorted(job.started_at for job in finished if job.started_at is not None)
    assert len(starts) == 30
    for i, start in enumerate(starts):
        in_window = sum(1 for s in starts[i:] if s < start + timedelta(seconds=1))
        assert in_window <= 11, f"{in_window} jobs started within a second of {start}"
    # and the limit was what paced them: 30 starts at 10/s take at least 2.9 s
    assert starts[-1] - starts[0] >= timedelta(seconds=2.9)


def test_a_paused_queue_keeps_its_jobs_pending_until_resumed(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("rabbitmq", "sqlite")
    worker = cluster.wait_ready(cluster.worker(concurrency=1))
    assert cluster.durable.pause(queue=cluster.queue)
    task = cluster.app.tasks["proj.pausable"]
    ids = [cluster.durable.enqueue(task, i).id for i in range(10)]
    wait_for(
        lambda: all((j := cluster.job(i)) is not None and j.held == "paused" for i in ids),
        30,
        "every job to be held by the pause",
        cluster.logs_tail,
    )
    cluster.wait_sweeps(worker, more=4)  # recovery had time to loop them, and did not
    for job_id in ids:
        job = cluster.job(job_id)
        assert job is not None and (job.state, job.held) == (JobState.PENDING, "paused")
        assert cluster.deliveries(job_id) == 1  # each message delivered once, then acked
    assert cluster.notes("pausable") == []
    [queue] = [q for q in cluster.durable.queues() if q.name == cluster.queue]
    assert (queue.paused, queue.pending) == (True, 10)

    assert cluster.durable.resume(queue=cluster.queue) == 10
    finished = [cluster.wait_finished(job_id) for job_id in ids]
    assert {job.state for job in finished} == {JobState.SUCCEEDED}
    assert [int(n[2]) for n in cluster.notes("pausable")] == list(range(10))  # in order
    assert cluster.durable.paused() == []


def test_fifty_debounced_enqueues_run_the_task_once_with_the_latest_arguments(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "mysql")
    cluster.wait_ready(cluster.worker(concurrency=2))
    task = cluster.app.tasks["proj.debounced"]
    window = timedelta(seconds=1.5)
    results = []
    for i in range(50):
        last_enqueue = cluster.durable.now()  # the last one's window starts after this
        results.append(cluster.durable.enqueue(task, i, debounce=("profile-42", window)))
    assert len({r.id for r in results}) == 1  # one row
    job = cluster.wait_finished(results[0].id, timeout=60)
    assert (job.state, job.result) == (JobState.SUCCEEDED, "49")
    assert [n[2] for n in cluster.notes("debounced")] == ["49"]
    assert job.started_at is not None and job.started_at >= last_enqueue + window
    # after it started, the key starts a new job
    again = cluster.durable.enqueue(task, 50, debounce=("profile-42", 0.2))
    assert again.id != results[0].id
    assert cluster.wait_finished(again.id).result == "50"
