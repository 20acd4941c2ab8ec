"""The retry layer against real prefork workers, real brokers and PostgreSQL.

Side effects are counted in files written by the workers; attempt counts, errors and
timestamps are read from the database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from celery_durable import JobState
from tests.integration.conftest import Cluster, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.postgres]
BROKERS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
]


def _gaps(cluster: Cluster, job_id: str, position: str) -> list[float]:
    """Seconds between each failed attempt of a call and the start of the next one,
    from the timestamps stored with the call."""
    [record] = [c for c in cluster.durable.get_job(job_id).calls if c.position == position]
    failed = record.failed_attempts
    starts = [a["started_at"] for a in failed[1:]] + [record.started_at.isoformat()]
    return [
        (datetime.fromisoformat(s) - datetime.fromisoformat(a["failed_at"])).total_seconds()
        for a, s in zip(failed, starts, strict=True)
    ]


@pytest.mark.parametrize("broker", BROKERS)
def test_a_flaky_call_is_retried_with_backoff_and_earlier_calls_run_once(
    make_cluster: Callable[..., Cluster], broker: str
) -> None:
    cluster = make_cluster(broker, "postgres")
    cluster.worker()
    job_id = cluster.app.tasks["proj.flaky_order"].delay(2, 0.5).id
    job = cluster.wait_finished(job_id)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.durable.get_job(job_id).result == [1, "r-flaky-ok", 2]
    assert (cluster.count("r-a"), cluster.count("r-flaky"), cluster.count("r-c")) == (1, 3, 1)
    view = cluster.durable.get_job(job_id)
    assert [(c.position, c.attempts) for c in view.calls] == [("1", 1), ("2", 3), ("3", 1)]
    assert cluster.count("celery-task-retry") == 2  # Celery's task_retry saw both
    # ExponentialBackoff(0.5, 4): at least 0.5 s, then at least 1 s, in stored order
    first, second = _gaps(cluster, job_id, "2")
    assert first >= 0.5 and second >= 1.0, (first, second)
    [flaky] = [c for c in view.calls if c.position == "2"]
    failed_at = [datetime.fromisoformat(a["failed_at"]) for a in flaky.failed_attempts]
    started = [datetime.fromisoformat(a["started_at"]) for a in flaky.failed_attempts]
    assert started[0] < failed_at[0] < started[1] < failed_at[1] < flaky.started_at
    calls = {c.position: c for c in view.calls}
    assert calls["1"].finished_at <= started[0] and flaky.finished_at <= calls["3"].started_at
    assert view.failures == 0  # call retries are not job failures


@pytest.mark.parametrize("broker", BROKERS)
def test_exhausted_retries_dead_letter_then_requeue_resumes_from_checkpoints(
    make_cluster: Callable[..., Cluster], broker: str
) -> None:
    cluster = make_cluster(broker, "postgres")
    cluster.worker()
    job_id = cluster.app.tasks["proj.to_dead_letter"].delay().id
    job = cluster.wait_finished(job_id)
    assert job.state is JobState.DEAD, cluster.logs_tail()
    # 2 call attempts in each of 2 job attempts; the call before the gate ran once
    assert (cluster.count("d-a"), cluster.count("gate")) == (1, 4)
    [letter] = cluster.durable.dead_letters(task="proj.to_dead_letter")
    assert (letter.id, letter.failures, letter.args) == (job_id, 2, [])
    shown = cluster.durable.dead_letter(job_id)
    assert [e.error["type"] for e in shown.errors] == ["CallError", "CallError"]
    assert all("ConnectionError: gate closed" in e.error["traceback"] for e in shown.errors)
    assert shown.errors[0].failed_at < shown.errors[1].failed_at

    (cluster.effects / "gate-open").touch()
    assert cluster.durable.requeue(job_id) == [job_id]
    job = cluster.wait_finished(job_id)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert cluster.durable.get_job(job_id).result == [1, "open"]
    assert (cluster.count("d-a"), cluster.count("gate")) == (1, 5)
    view = cluster.durable.get_job(job_id)
    assert (view.requeues, len(view.errors)) == (1, 2)
    assert cluster.durable.dead_letters() == []


@pytest.mark.redis
def test_no_retry_fails_at_once_from_a_call_and_from_the_body(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    cluster.worker()
    from_call = cluster.app.tasks["proj.no_retry_call"].delay().id
    from_body = cluster.app.tasks["proj.no_retry_body"].delay(42).id
    for job_id in (from_call, from_body):
        job = cluster.wait_finished(job_id)
        assert (job.state, job.attempts, job.failures) == (JobState.FAILED, 1, 1)
    assert (cluster.count("nr-call-body"), cluster.count("reject"), cluster.count("nr-body")) == (
        1,
        1,
        1,
    )
    call_view = cluster.durable.get_job(from_call)
    assert call_view.error is not None and call_view.error["no_retry"] is True
    assert "ValueError: invalid card number" in call_view.error["message"]
    assert call_view.calls[0].error is not None
    assert call_view.calls[0].error["type"] == "ValueError"
    body_view = cluster.durable.get_job(from_body)
    assert body_view.error is not None
    assert body_view.error["message"] == "order 42 has no items"


@pytest.mark.rabbitmq
def test_retry_after_waits_at_least_the_given_delay(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster("rabbitmq", "postgres")
    cluster.worker()
    job_id = cluster.app.tasks["proj.retry_after"].delay().id
    job = cluster.wait_finished(job_id)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    first, second = cluster.times("rate-limited")
    assert second - first >= 2.0
    [gap] = _gaps(cluster, job_id, "1")
    assert gap >= 2.0, gap  # exactly the delay RetryAfter asked for, not the backoff
    [attempt] = cluster.durable.get_job(job_id).calls[0].failed_attempts
    assert attempt["type"] == "ConnectionError"


@pytest.mark.parametrize("broker", BROKERS)
def test_sigkill_during_a_retry_wait_neither_loses_nor_repeats_attempts(
    make_cluster: Callable[..., Cluster], broker: str
) -> None:
    # The default delivery timeout (15 min): the sweeper must resend the job whose ETA
    # message died with the worker within about lease + sweep after it is due (Redis
    # would hold the message for its 1 h visibility timeout).
    cluster = make_cluster(broker, "postgres")
    first = cluster.worker()
    job_id = cluster.app.tasks["proj.flaky_order"].delay(2, 3.0).id

    def waiting_for_retry() -> bool:
        job = cluster.job(job_id)
        return job is not None and job.state is JobState.RETRYING

    wait_for(waiting_for_retry, 60, "the first call retry", cluster.logs_tail)
    assert cluster.count("r-flaky") == 1
    first.kill()  # the countdown message is held, unacked, by this worker
    cluster.worker()
    job = cluster.wait_finished(job_id, timeout=60)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert (cluster.count("r-a"), cluster.count("r-flaky"), cluster.count("r-c")) == (1, 3, 1)
    [_, flaky, _] = cluster.durable.get_job(job_id).calls
    assert (flaky.attempts, len(flaky.failed_attempts)) == (3, 2)
    assert job.failures == 0


@pytest.mark.redis
def test_time_limits_soft_is_a_call_retry_and_hard_is_a_crash(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    cluster.worker()
    soft = cluster.app.tasks["proj.soft_limited"].delay().id
    job = cluster.wait_finished(soft)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert (cluster.count("soft-a"), cluster.count("slow-once")) == (1, 2)
    [_, slow] = cluster.durable.get_job(soft).calls
    assert slow.attempts == 2
    assert slow.failed_attempts[0]["type"] == "SoftTimeLimitExceeded"

    (cluster.effects / "slow-once").unlink()
    hard = cluster.app.tasks["proj.hard_limited"].delay().id
    job = cluster.wait_finished(hard, timeout=90)
    assert job.state is JobState.SUCCEEDED, cluster.logs_tail()
    assert (cluster.count("hard-a"), cluster.count("slow-once")) == (1, 2)
    [_, slow] = cluster.durable.get_job(hard).calls
    # the killed attempt recorded nothing: a crash, not an error attempt
    assert (slow.attempts, slow.failed_attempts, job.failures) == (1, [], 0)
    assert job.attempts >= 2
