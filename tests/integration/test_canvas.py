"""Durable jobs in Celery's canvas and result backend, against real workers.

A chain through a job whose worker died: recovery republishes the job while the broker
still holds its original message (Redis gives it back after its visibility timeout,
RabbitMQ requeues it at once). Both deliveries reach a worker; the chain must continue
once. And our exceptions come out of ``.get()`` as themselves, with their fields.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import pytest
from celery import chain

from celery_durable import CallError, Cancelled, CancelOutcome, JobState
from tests.conftest import REDIS_URL
from tests.integration.conftest import Cluster, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]
RESULTS = REDIS_URL.rsplit("/", 1)[0] + "/6"


def _lease_expired(cluster: Cluster, job_id: str) -> bool:
    job = cluster.job(job_id)
    return (
        job is not None
        and job.lease_expires_at is not None
        and job.lease_expires_at < datetime.now(timezone.utc)
    )


@pytest.mark.parametrize(
    ("broker", "shape"),
    [
        pytest.param("redis", "three steps"),
        pytest.param("rabbitmq", "three steps", marks=pytest.mark.rabbitmq),
        # Celery before 5.7 pops the chain off the request before on_success: a job
        # second to last, or with only a link, must still be recorded as continued
        pytest.param("redis", "two steps and a link"),
    ],
)
def test_a_chain_through_a_recovered_job_runs_every_step_once(
    make_cluster: Callable[..., Cluster], broker: str, shape: str
) -> None:
    # Redis gives the killed worker's unacked message back after 3 s
    cluster = make_cluster(broker, "postgres", visibility_timeout=3)
    (cluster.effects / "hold-chain-a").touch()
    first = cluster.worker()
    tasks = cluster.app.tasks
    a, b, c = (tasks[f"proj.chain_{n}"] for n in "abc")
    if shape == "three steps":
        last = chain(a.s(1), b.s(), c.s()).delay()
        a_id = last.parent.parent.id
    else:
        last = chain(a.s(1).set(link=c.s()), b.s()).delay()  # b by the chain, c by link
        a_id = last.parent.id
    wait_for(
        lambda: cluster.committed_calls(a_id) == 1, 60, "job a's first call", cluster.logs_tail
    )
    first.kill()  # job a is mid-body: its message is unacked, its lease alive
    wait_for(lambda: _lease_expired(cluster, a_id), 30, "a's lease to expire")
    assert cluster.durable.recover() == [a_id]  # republished: now two messages exist
    (cluster.effects / "hold-chain-a").unlink()
    second = cluster.wait_ready(cluster.worker())

    wait_for(
        lambda: cluster.count("chain-b") >= 1 and cluster.count("chain-c") >= 1,
        60,
        "the rest of the canvas",
        cluster.logs_tail,
    )
    # both messages of job a were delivered (the first worker's counts once more)
    wait_for(
        lambda: (
            cluster.deliveries(a_id) == 3
            and sum(1 for n in cluster.notes("postrun") if n[2] == a_id) == 2
        ),
        60,
        "the original message to come back and be handled",
        cluster.logs_tail,
    )
    sentinel = tasks["proj.quick"].delay(0).id  # queued after anything the duplicate sent
    assert cluster.wait_finished(sentinel).state is JobState.SUCCEEDED
    assert second.process.poll() is None
    assert cluster.count("chain-a") == 1  # checkpointed before the crash
    assert cluster.count("chain-b") == 1, "the chain continued twice"
    assert cluster.count("chain-c") == 1, "the canvas continued twice"
    if shape == "three steps":
        assert cluster.durable.get_job(last.id).result == 4
    assert cluster.job(a_id).reported_at is not None  # type: ignore[union-attr]


def test_get_raises_our_exceptions_with_their_fields(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster("redis", "postgres", step_seconds=1.0, result_backend=RESULTS)
    cluster.worker(concurrency=2)
    failed = cluster.app.tasks["proj.no_retry_call"].delay()
    with pytest.raises(CallError) as raised:
        failed.get(timeout=60, propagate=True)
    error = raised.value
    assert (
        error.job_id,
        error.seq,
        error.name,
        error.error_type,
        error.error_message,
        error.no_retry,
    ) == (failed.id, 1, "proj.reject", "ValueError", "invalid card number", True)
    assert str(error) == (
        f"call #1 'proj.reject' of job {failed.id} failed: ValueError: invalid card number"
    )

    running = cluster.app.tasks["proj.five_steps"].delay(0)
    wait_for(lambda: cluster.committed_calls(running.id) >= 1, 60, "call 1", cluster.logs_tail)
    assert cluster.durable.cancel(running.id) is CancelOutcome.REQUESTED
    with pytest.raises(Cancelled) as cancelled:
        running.get(timeout=60, propagate=True)
    assert cancelled.value.job_id == running.id
    assert str(cancelled.value) == f"durable job {running.id} was cancelled"
