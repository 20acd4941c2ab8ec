"""Prometheus metrics scraped over HTTP from a real prefork worker (two pool processes,
PROMETHEUS_MULTIPROC_DIR): counts after a known mix of jobs, and the queue depth from
SQL for a queue nobody consumes."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Cluster, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_worker_serves_metrics_from_all_pool_processes(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster("redis", "postgres")
    port = _free_port()
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    cluster.worker(
        concurrency=2, DURABLE_TEST_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(multiproc)
    )
    tasks = cluster.app.tasks
    jobs = [
        tasks["proj.five_steps"].delay(0).id,
        tasks["proj.outer"].delay(1).id,
        tasks["proj.flaky_order"].delay(2, 0.3).id,
        tasks["proj.no_retry_body"].delay(1).id,
        tasks["proj.to_dead_letter"].delay().id,
    ]
    for _ in range(3):  # waiting in a queue no worker consumes
        cluster.durable.enqueue("proj.outer", 1, queue=f"{cluster.queue}-idle")
    for job_id in jobs:
        assert cluster.wait_finished(job_id).state.finished, cluster.logs_tail()

    q = cluster.queue
    wait_for(
        lambda: (
            _scrape(port).get(
                (
                    "durable_jobs_dead_lettered_total",
                    (("queue", q), ("task", "proj.to_dead_letter")),
                )
            )
            == 1
        ),
        30,
        "the metrics of the dead letter",
        cluster.logs_tail,
    )
    metrics = _scrape(port)

    def get(name: str, **labels: str) -> float | None:
        return metrics.get((name, tuple(sorted(labels.items()))))

    for task in ("proj.five_steps", "proj.outer", "proj.flaky_order"):
        assert get("durable_jobs_completed_total", task=task, queue=q) == 1, task
    assert get("durable_jobs_retried_total", task="proj.flaky_order", queue=q, layer="call") == 2
    assert (
        get("durable_jobs_failed_total", task="proj.no_retry_body", queue=q, exception="NoRetry")
        == 1
    )
    assert (
        get("durable_jobs_failed_total", task="proj.to_dead_letter", queue=q, exception="CallError")
        == 1
    )
    assert get("durable_jobs_retried_total", task="proj.to_dead_letter", queue=q, layer="job") == 1
    assert get("durable_jobs_in_progress", task="proj.five_steps", queue=q) == 0
    assert (
        get("durable_calls_total", task="proj.five_steps", call="proj.step", outcome="succeeded")
        == 5
    )
    assert get("durable_jobs_duration_seconds_count", task="proj.outer", queue=q) == 1
    # one queue wait per execution: the first, then one after each call retry's backoff
    assert get("durable_jobs_queue_wait_seconds_count", task="proj.flaky_order", queue=q) == 3
    assert get("durable_jobs_queue_depth", queue=f"{q}-idle", state="pending") == 3

    # the gauge goes up while an execution runs, in whichever pool process runs it
    (cluster.effects / "hold-f-hold").touch()
    held = tasks["proj.fenced"].delay().id
    wait_for(lambda: cluster.count("f-hold-start") == 1, 60, "the held job to run")
    running = ("durable_jobs_in_progress", (("queue", q), ("task", "proj.fenced")))
    assert _scrape(port).get(running) == 1
    (cluster.effects / "hold-f-hold").unlink()
    assert cluster.wait_finished(held).state.finished
    wait_for(lambda: _scrape(port).get(running) == 0, 30, "the gauge to come down")
