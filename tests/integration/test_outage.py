"""The durable database goes away while a real worker is delivering messages.

PostgreSQL is stopped for real (``pg_ctlcluster ... stop -m fast``, which drops every
connection) while a prefork worker works through a backlog, then started again. No
delivery may be acked as a failure, no job may be left for the recovery sweeper's
deadlines, and the worker must not spin through its queue while the database is away.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest

from celery_durable import JobState
from tests.conftest import POSTGRES_URL, REQUIRE_SERVICES, require_service
from tests.integration.conftest import Cluster, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]


def _pg_cluster() -> list[str]:
    if (
        shutil.which("pg_ctlcluster") is None
        or os.geteuid() != 0
        or "127.0.0.1" not in POSTGRES_URL
    ):
        reason = "stopping PostgreSQL needs pg_ctlcluster, root and the local server"
        if REQUIRE_SERVICES:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return ["pg_ctlcluster", "--skip-systemctl-redirect", os.listdir("/etc/postgresql")[0], "main"]


@contextlib.contextmanager
def postgres_stopped() -> Iterator[None]:
    """PostgreSQL down for the block (every connection dropped), up again after it."""
    command = _pg_cluster()
    subprocess.run([*command, "stop", "-m", "fast"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([*command, "start"], check=True, capture_output=True)
        wait_for(
            lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0,
            60,
            "PostgreSQL to accept connections again",
        )
        require_service("postgres")


def test_a_database_outage_during_delivery_strands_nothing_and_fails_nothing(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres", step_seconds=0.2)
    # leases longer than the outage: a job that waited out the outage still owns itself,
    # so no job needs the sweeper (recoveries stays 0)
    worker = cluster.wait_ready(cluster.worker(concurrency=3, DURABLE_TEST_LEASE="30"))
    five_steps = cluster.app.tasks["proj.five_steps"]
    # ETA messages wait in the worker, not in a pool slot: when they are due they are
    # handed to the two free slots, whose claims find no database
    due = datetime.now(timezone.utc) + timedelta(seconds=4)
    delivered_late = [five_steps.apply_async((n,), eta=due).id for n in range(20)]
    wait_for(
        lambda: {n[2] for n in cluster.notes("received")} >= set(delivered_late),
        60,
        "the worker to hold every message",
        cluster.logs_tail,
    )
    # A job held mid-body (after its first call) while the database goes away: released
    # during the outage, its next write finds no database and it waits it out.
    (cluster.effects / "hold-chain-a").touch()
    held = cluster.app.tasks["proj.chain_a"].delay(1).id
    wait_for(
        lambda: cluster.committed_calls(held) == 1,
        60,
        "the held job's first call",
        cluster.logs_tail,
    )
    ids = [*delivered_late, held]

    restart = due + timedelta(seconds=2)
    with postgres_stopped():
        down_at = time.time()
        (cluster.effects / "hold-chain-a").unlink()  # its finish meets the outage
        wait_for(
            lambda: datetime.now(timezone.utc) > restart, 30, "the outage to span the ETA"
        )  # deliveries arrive with no database
    back_at = datetime.now(timezone.utc)  # PostgreSQL accepts connections again
    cluster.storage.dispose()  # this test process's own pooled connections died too

    jobs = [cluster.wait_finished(i, timeout=90) for i in ids]
    assert all(j.state is JobState.SUCCEEDED for j in jobs), cluster.logs_tail()
    assert cluster.notes("celery-failures") == []  # Celery recorded no FAILURE
    assert all(j.recoveries == 0 for j in jobs)  # none waited for a deadline
    late = [j for j in jobs if j.id in delivered_late]
    starts = sorted(j.started_at for j in late if j.started_at is not None)
    assert len(starts) == len(late) and starts[0] > restart  # claimed once it was back
    # The requirement: the first waiting deliveries run within seconds of the
    # database's return (a stranded one would wait for its 900 s delivery deadline).
    assert starts[0] < back_at + timedelta(seconds=30), (starts[0], back_at)
    held_job = cluster.durable.get_job(held)
    assert (held_job.state, held_job.recoveries, held_job.attempts) == ("succeeded", 0, 2)
    assert cluster.count("chain-a") == 1  # its first call was not run again
    during = [n for n in cluster.notes("deliveries") if float(n[1]) >= down_at]
    assert {n[2] for n in during} >= set(delivered_late), "deliveries not during outage"
    per_job = {i: cluster.deliveries(i) for i in ids}
    assert max(per_job.values()) <= 2, per_job  # a delivery waits; at most one requeue
    assert sum(per_job.values()) <= len(ids) + 4, per_job  # no redelivery storm
    for i in delivered_late:  # every call of every job is checkpointed once
        assert cluster.committed_calls(i) == 5
    assert worker.process.poll() is None


def test_a_database_outage_mid_gather_in_an_async_body_waits_it_out(
    make_cluster: Callable[..., Cluster],
) -> None:
    """a and b are recorded, c is running when PostgreSQL goes away; c's checkpoint
    meets the outage. The body ends as a control signal would (a gather cannot swallow
    it), the delivery waits for the database, and the next execution replays a and b
    and runs only c again."""
    cluster = make_cluster("redis", "postgres")
    worker = cluster.wait_ready(cluster.worker(DURABLE_TEST_LEASE="30"))
    (cluster.effects / "hold-c").touch()
    job_id = cluster.durable.enqueue(cluster.app.tasks["proj.three_at_once"], [0.4, 0.2, 0]).id
    wait_for(lambda: cluster.committed_calls(job_id) == 2, 60, "a and b", cluster.logs_tail)
    assert Counter(n[2] for n in cluster.notes("timed-start"))["c"] == 1  # c is in flight
    with postgres_stopped():
        (cluster.effects / "hold-c").unlink()
        wait_for(
            lambda: Counter(n[2] for n in cluster.notes("timed-done"))["c"] == 1,
            30,
            "c to finish while the database is away",
            cluster.logs_tail,
        )
    cluster.storage.dispose()  # this test process's own pooled connections died too

    job = cluster.wait_finished(job_id, timeout=90)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    # waited out by the delivery, not left for the sweeper to find
    assert job.recoveries == 0, cluster.logs_tail()
    assert cluster.notes("celery-failures") == []
    starts = Counter(n[2] for n in cluster.notes("timed-start"))
    assert (starts["a"], starts["b"]) == (1, 1)  # recorded before the outage: not again
    assert 1 <= starts["c"] <= 2  # its checkpoint never landed: it may run again
    assert cluster.durable.get_job(job_id).result == ["a", "b", "c"]
    calls = sorted(cluster.storage.load_history(job_id), key=lambda c: c.seq)
    assert [c.name for c in calls] == ["proj.timed"] * 3
    assert worker.process.poll() is None


def test_a_restart_while_a_body_runs_costs_the_job_nothing(
    make_cluster: Callable[..., Cluster],
) -> None:
    """PostgreSQL restarts while a job's body is busy between durable writes (its first
    call recorded). The connection the body's thread holds was closed by the restart;
    the body's next write, once the server is back, opens a new one instead of failing,
    so the job finishes in its first execution and no call runs again."""
    cluster = make_cluster("redis", "postgres")
    worker = cluster.wait_ready(cluster.worker(DURABLE_TEST_LEASE="30"))
    (cluster.effects / "hold-chain-a").touch()
    job_id = cluster.app.tasks["proj.chain_a"].delay(1).id
    wait_for(lambda: cluster.committed_calls(job_id) == 1, 60, "the first call", cluster.logs_tail)
    with postgres_stopped():
        pass  # down and up again while the body holds
    cluster.storage.dispose()  # this test process's own pooled connections died too
    (cluster.effects / "hold-chain-a").unlink()

    job = cluster.wait_finished(job_id, timeout=90)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert (job.attempts, job.recoveries) == (1, 0), cluster.logs_tail()
    assert cluster.count("chain-a") == 1
    assert cluster.notes("celery-failures") == []
    assert worker.process.poll() is None
