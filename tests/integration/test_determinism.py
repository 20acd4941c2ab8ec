"""Determinism against real workers: a job started on one deploy (worker running code
version 1) is SIGKILLed mid-way and resumed by a worker running version 2."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from celery_durable import JobState
from celery_durable.testing import replay
from tests.integration.conftest import Cluster, wait_for
from tests.integration.test_cli_and_demo import _celery

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]
CHANGES = ("order", "argument", "removed", "added")
# what each mode makes of each change of code (the README's table)
OUTCOMES = {
    "explicit": {
        "order": "failed",
        "argument": "succeeded",
        "removed": "failed",
        "added": "succeeded",
    },
    "strict": {"order": "failed", "argument": "failed", "removed": "failed", "added": "failed"},
    "best_effort": {change: "succeeded" for change in CHANGES},
}
V2_CALLS = {
    "order": ["b", "a", "c"],
    "argument": ["a", "b", "c"],
    "removed": ["a", "c"],
    "added": ["a", "x", "b", "c"],
}


def _deploy(cluster: Cluster, job_ids: list[str], mode: str) -> None:
    """Run on version 1 until every job has 2 checkpoints, kill, resume on version 2."""
    first = cluster.worker(concurrency=len(job_ids), DURABLE_TEST_DETERMINISM=mode)
    wait_for(
        lambda: all(cluster.committed_calls(j) >= 2 for j in job_ids),
        60,
        "two checkpoints per job",
        cluster.logs_tail,
    )
    assert all(cluster.committed_calls(j) == 2 for j in job_ids), "killed too late"
    first.kill()
    cluster.worker(
        concurrency=len(job_ids), DURABLE_TEST_DETERMINISM=mode, DURABLE_TEST_CODE_VERSION="2"
    )


@pytest.mark.parametrize("mode", list(OUTCOMES))
def test_each_mode_against_changed_code(make_cluster: Callable[..., Cluster], mode: str) -> None:
    cluster = make_cluster("redis", "postgres", step_seconds=1.5)
    jobs = {c: cluster.app.tasks["proj.versioned"].delay(c).id for c in CHANGES}
    _deploy(cluster, list(jobs.values()), mode)
    for change, job_id in jobs.items():
        job = cluster.wait_finished(job_id)
        assert job.state.value == OUTCOMES[mode][change], (change, cluster.logs_tail())
        view = cluster.durable.get_job(job_id)
        if job.state is JobState.FAILED:
            assert view.error is not None and view.error["type"] == "NonDeterministicError"
            assert (
                f"job {job_id} (proj.versioned) is not deterministic ({mode} mode)"
                in view.error["message"]
            )
            assert (job.failures, view.error["no_retry"]) == (1, True)
        elif mode == "best_effort":  # the history now follows version 2's code
            names = [c.name.split(".")[1] for c in view.calls]
            expected = {"a": "step", "b": "echo", "c": "step", "x": "echo"}
            assert names == [expected[n] for n in V2_CALLS[change]], change


def test_now_and_uuid4_are_identical_across_a_crash(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster("redis", "postgres", step_seconds=2.0)
    first = cluster.worker()
    job_id = cluster.app.tasks["proj.stamped"].delay().id
    stamps = lambda: [p.name for p in cluster.effects.glob("stamp *")]  # noqa: E731
    wait_for(stamps, 60, "the first execution's stamp", cluster.logs_tail)
    first.kill()
    cluster.worker()
    job = cluster.wait_finished(job_id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 2, cluster.logs_tail()
    [stamp] = stamps()  # one file: both executions wrote the same values
    assert cluster.count(stamp) == 2
    assert cluster.durable.get_job(job_id).result == stamp.split()[1:]


def test_patched_resumes_old_jobs_on_the_old_path(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster("redis", "postgres", step_seconds=1.5)
    old = cluster.app.tasks["proj.patched_flow"].delay().id
    _deploy(cluster, [old], "explicit")
    assert cluster.wait_finished(old).state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.durable.get_job(old).result == [1, "p-old", 1]
    new = cluster.app.tasks["proj.patched_flow"].delay().id
    assert cluster.wait_finished(new).state is JobState.SUCCEEDED
    assert cluster.durable.get_job(new).result == [1, "p-new", 1]
    assert (cluster.count("p-old"), cluster.count("p-new")) == (1, 1)


def test_replay_helper_checks_an_exported_history_against_new_code(
    make_cluster: Callable[..., Cluster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster("redis", "postgres")
    cluster.worker()
    job_id = cluster.app.tasks["proj.versioned"].delay("order").id
    assert cluster.wait_finished(job_id).state is JobState.SUCCEEDED
    env = {
        "DURABLE_TEST_BROKER": cluster.broker,
        "DURABLE_TEST_STORE": cluster.store_url,
        "DURABLE_TEST_PREFIX": cluster.prefix,
        "DURABLE_TEST_QUEUE": cluster.queue,
    }
    exported = _celery(env, "jobs", "export", job_id)
    assert exported.returncode == 0, exported.stderr
    path = tmp_path / "history.json"
    path.write_text(exported.stdout)
    assert json.loads(exported.stdout)["job"]["task"] == "proj.versioned"
    before = sorted(os.listdir(cluster.effects))
    counts = {name: cluster.count(name) for name in before}

    task = cluster.app.tasks["proj.versioned"]
    assert replay(task, path).ok  # today's code is still version 1
    monkeypatch.setenv("DURABLE_TEST_CODE_VERSION", "2")
    report = replay(task, path)
    assert not report.ok and report.divergence is not None
    assert (report.divergence.seq, report.divergence.expected, report.divergence.recorded) == (
        1,
        "proj.echo",
        "proj.step",
    )
    assert sorted(os.listdir(cluster.effects)) == before  # nothing ran
    assert {name: cluster.count(name) for name in before} == counts
