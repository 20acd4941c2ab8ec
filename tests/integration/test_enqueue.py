"""Enqueue options against real workers: unique from many processes at once, delayed
jobs that survive a worker restart while they wait, priorities in order on Redis and
RabbitMQ."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from celery import group

from celery_durable import JobState
from celery_durable.store.records import JobFilter
from tests.integration.conftest import BROKERS, REPO, Cluster, wait_for

pytestmark = pytest.mark.worker
RESULTS = BROKERS["redis"].rsplit("/", 1)[0] + "/6"

_ENQUEUE = """
import sys, time
from tests.integration.proj import create_app
from celery_durable import Durable
app = create_app(broker=sys.argv[1], store=sys.argv[2], prefix=sys.argv[3], queue=sys.argv[4])
start = float(sys.argv[5])
time.sleep(max(0.0, start - time.time()))
print(Durable.of(app).enqueue("proj.outer", 1, unique="nightly-report").id)
"""


@pytest.mark.redis
@pytest.mark.postgres
def test_unique_from_eight_processes_at_once_makes_one_job(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    start = time.time() + 3  # all of them enqueue in the same instant
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _ENQUEUE,
                cluster.broker,
                cluster.store_url,
                cluster.prefix,
                cluster.queue,
                str(start),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    ids = {out.strip() for out, _ in outputs}
    assert len(ids) == 1
    [job_id] = ids
    assert [j.id for j in cluster.storage.list_jobs(JobFilter(task="proj.outer"))] == [job_id]
    worker = cluster.wait_ready(cluster.worker())
    assert cluster.wait_finished(job_id).state is JobState.SUCCEEDED
    cluster.wait_sweeps(worker, 2)  # nothing left for recovery to send again
    assert cluster.count("inner-step") == 1  # one job, one execution
    assert cluster.deliveries(job_id) == 1


@pytest.mark.redis
@pytest.mark.postgres
def test_delayed_jobs_start_no_earlier_and_survive_a_worker_restart(
    make_cluster: Callable[..., Cluster],
) -> None:
    # max_countdown 4 s: the 6 s delay waits in SQL; the 3 s one is an ETA message that
    # dies with the worker (the sweeper resends it after the 3 s delivery timeout)
    cluster = make_cluster("redis", "postgres", delivery_timeout=3, max_countdown=4)
    first = cluster.wait_ready(cluster.worker())
    queued_at = datetime.now(timezone.utc)
    in_sql = cluster.durable.enqueue("proj.outer", 1, delay=6)
    as_eta = cluster.durable.enqueue("proj.outer", 2, delay=timedelta(seconds=3))
    wait_for(
        lambda: any(n[2] == as_eta.id for n in cluster.notes("received")),
        30,
        "the worker to hold the ETA message",
    )
    assert not any(n[2] == in_sql.id for n in cluster.notes("received"))  # not sent yet
    first.kill()  # before the ETA: the message dies with the worker
    killed_at = datetime.now(timezone.utc)
    assert killed_at < queued_at + timedelta(seconds=3), "the kill came after the ETA"
    cluster.worker()
    for result, delay in ((in_sql, 6), (as_eta, 3)):
        job = cluster.wait_finished(result.id, timeout=60)
        assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
        assert job.started_at is not None
        assert job.started_at >= queued_at + timedelta(seconds=delay)
        assert job.attempts == 1  # the first worker never started either
    assert cluster.count("inner-step") == 2


@pytest.mark.postgres
@pytest.mark.parametrize(
    "broker",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_higher_priority_runs_first(make_cluster: Callable[..., Cluster], broker: str) -> None:
    cluster = make_cluster(broker, "postgres", priorities=True)
    for priority in (1, 9, 5, 3, 7):  # all queued before any worker runs
        cluster.durable.enqueue("proj.prio", priority, priority=priority)
    cluster.worker()
    wait_for(
        lambda: (
            (cluster.effects / "prio-order").exists()
            and len((cluster.effects / "prio-order").read_text().split()) == 5
        ),
        60,
        "five jobs",
        cluster.logs_tail,
    )
    order = [int(p) for p in (cluster.effects / "prio-order").read_text().split()]
    assert order == [9, 7, 5, 3, 1]


@pytest.mark.redis
@pytest.mark.postgres
def test_enqueue_many_writes_one_batch_and_every_job_runs_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres", result_backend=RESULTS)
    quick = cluster.app.tasks["proj.quick"]
    jobs_table = cluster.storage.tables.jobs.name
    sent: list[str] = []
    stop = cluster.storage.observe_statements(lambda sql, params: sent.append(sql))
    try:
        listed = cluster.durable.enqueue_many([quick.s(n) for n in range(40)])
        grouped = cluster.durable.enqueue_many(group(quick.s(n) for n in range(100, 110)))
    finally:
        stop()
    inserts = [sql for sql in sent if sql.lstrip().startswith(f"INSERT INTO {jobs_table}")]
    assert len(inserts) == 2, "one multi-row INSERT per batch"
    assert all(cluster.job(r.id) is not None for r in [*listed, *grouped.results])
    cluster.worker(concurrency=2)
    assert [r.get(timeout=60) for r in listed] == [n + 1 for n in range(40)]
    assert grouped.get(timeout=60) == [n + 1 for n in range(100, 110)]
    assert all(r.parent is None for r in listed)
    assert cluster.count("quick") == 50, "each job's call ran exactly once"
    finished = cluster.durable.jobs(states="succeeded", task="proj.quick", limit=100)
    assert {j.id for j in finished} == {r.id for r in [*listed, *grouped.results]}
