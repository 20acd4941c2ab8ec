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
    running = [five_steps.delay(100).id]  # mid-body when the database goes away
    wait_for(
        lambda: cluster.committed_calls(running[0]) >= 1,
        60,
        "a job to be running",
        cluster.logs_tail,
    )
    ids = running + delivered_late

    restart = due + timedelta(seconds=2)
    with postgres_stopped():
        down_at = time.time()
        wait_for(
            lambda: datetime.now(timezone.utc) > restart, 30, "the outage to span the ETA"
        )  # deliveries arrive with no database
    cluster.storage.dispose()  # this test process's own pooled connections died too

    jobs = [cluster.wait_finished(i, timeout=90) for i in ids]
    assert all(j.state is JobState.SUCCEEDED for j in jobs), cluster.logs_tail()
    assert cluster.notes("celery-failures") == []  # Celery recorded no FAILURE
    assert all(j.recoveries == 0 for j in jobs)  # none waited for a deadline
    late = [j for j in jobs if j.id in delivered_late]
    assert all(
        j.started_at is not None and j.started_at > restart for j in late
    )  # claimed only once the database was back
    during = [n for n in cluster.notes("deliveries") if float(n[1]) >= down_at]
    assert {n[2] for n in during} >= set(delivered_late), "deliveries not during outage"
    per_job = {i: cluster.deliveries(i) for i in ids}
    assert max(per_job.values()) <= 2, per_job  # a delivery waits; at most one requeue
    assert sum(per_job.values()) <= len(ids) + 4, per_job  # no redelivery storm
    for i in ids:  # every call of every job is checkpointed once
        assert cluster.committed_calls(i) == 5
    assert worker.process.poll() is None
