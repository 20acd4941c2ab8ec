"""Zombie executions, with real processes: a worker frozen (SIGSTOP) mid-call for longer
than its lease, another worker resumes and finishes the job, then the first one thaws
(SIGCONT). Nothing the zombie writes after that may land."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from celery_durable import JobState
from tests.integration.conftest import Cluster, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]


def test_a_thawed_zombie_writes_nothing(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster("redis", "postgres")
    (cluster.effects / "hold-f-hold").touch()
    zombie = cluster.wait_ready(cluster.worker())
    job_id = cluster.app.tasks["proj.fenced"].delay().id
    wait_for(lambda: cluster.count("f-hold-start") == 1, 60, "call 2 to start", cluster.logs_tail)
    [zombie_pid] = {int(n[0]) for n in cluster.notes("f-hold-start")}
    os.killpg(zombie.process.pid, signal.SIGSTOP)  # main process and pool child freeze
    try:
        (cluster.effects / "hold-f-hold").unlink()
        cluster.wait_ready(cluster.worker())  # its sweeper takes over the expired lease
        done = cluster.wait_finished(job_id)
        assert done.state is JobState.SUCCEEDED, cluster.logs_tail()
        calls_before = cluster.storage.load_history(job_id)
        [second_pid] = {int(n[0]) for n in cluster.notes("f-hold-done")}
        assert second_pid != zombie_pid
    finally:
        os.killpg(zombie.process.pid, signal.SIGCONT)

    # The zombie's call returns now; its checkpoint, and everything after, is refused.
    wait_for(
        lambda: any(int(n[0]) == zombie_pid and n[2] == job_id for n in cluster.notes("postrun")),
        60,
        "the zombie's execution to end",
        cluster.logs_tail,
    )
    assert sorted(int(n[0]) for n in cluster.notes("f-hold-done")) == sorted(
        [zombie_pid, second_pid]
    )  # its in-flight call did run to its end
    after = cluster.job(job_id)
    assert after is not None
    assert (after.state, after.result, after.finished_at, after.attempts) == (
        JobState.SUCCEEDED,
        done.result,
        done.finished_at,
        2,
    )
    assert after.result == f"[1, {second_pid}, 1]"  # the second execution's result
    assert cluster.storage.load_history(job_id) == calls_before  # no checkpoint landed
    assert cluster.storage.job_errors(job_id) == []
    assert cluster.count("f-c") == 1  # the zombie never went past its call
    assert zombie.process.poll() is None  # it lives on, and serves other jobs
    assert (
        cluster.wait_finished(cluster.app.tasks["proj.quick"].delay(0).id).state
        is JobState.SUCCEEDED
    )


def test_a_thawed_zombie_cannot_finish_the_job_again(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster("redis", "postgres")
    (cluster.effects / "hold-ff").touch()
    zombie = cluster.wait_ready(cluster.worker())
    job_id = cluster.app.tasks["proj.fenced_finish"].delay().id
    wait_for(
        lambda: cluster.count("ff-hold-start") == 1, 60, "the last checkpoint", cluster.logs_tail
    )
    [zombie_pid] = {int(n[0]) for n in cluster.notes("ff-hold-start")}
    os.killpg(zombie.process.pid, signal.SIGSTOP)
    try:
        (cluster.effects / "hold-ff").unlink()
        cluster.wait_ready(cluster.worker())
        done = cluster.wait_finished(job_id)
        assert done.state is JobState.SUCCEEDED, cluster.logs_tail()
    finally:
        os.killpg(zombie.process.pid, signal.SIGCONT)

    # The zombie returns from its body now: its finish is fenced on a lease it lost.
    wait_for(
        lambda: any(int(n[0]) == zombie_pid and n[2] == job_id for n in cluster.notes("postrun")),
        60,
        "the zombie's execution to end",
        cluster.logs_tail,
    )
    after = cluster.job(job_id)
    assert after is not None
    assert (after.result, after.finished_at, after.state) == (
        done.result,
        done.finished_at,
        JobState.SUCCEEDED,
    )
    assert after.result is not None and str(zombie_pid) not in after.result
    assert cluster.count("ff-a") == 1  # replayed by the second execution, never rerun
