"""The event stream read by a separate process (`celery durable events`) while two real
workers run jobs: every job's events, in order."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.conftest import Cluster
from tests.integration.test_cli_and_demo import _celery

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]


def test_events_from_two_workers_in_order_per_job(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster("redis", "postgres", step_seconds=0.2)
    cluster.worker()
    cluster.worker()
    jobs = [cluster.app.tasks["proj.five_steps"].delay(n).id for n in range(4)]
    for job_id in jobs:
        cluster.wait_finished(job_id)
    env = {
        "DURABLE_TEST_BROKER": cluster.broker,
        "DURABLE_TEST_STORE": cluster.store_url,
        "DURABLE_TEST_PREFIX": cluster.prefix,
        "DURABLE_TEST_QUEUE": cluster.queue,
    }
    out = _celery(env, "events", "--no-follow", "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    for job_id in jobs:
        mine = [e for e in events if e["job_id"] == job_id]
        assert [e["kind"] for e in mine] == [
            "JobStarted",
            *["CheckpointSaved"] * 5,
            "JobCompleted",
        ], mine
        assert [e["detail"]["position"] for e in mine[1:6]] == ["1", "2", "3", "4", "5"]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    pids = {line.split()[0] for line in (cluster.effects / "body").read_text().splitlines()}
    assert len(pids) == 2  # both workers ran jobs
    tail = _celery(env, "events", "--no-follow", "--since", events[3]["cursor"], "--json")
    assert [json.loads(line)["cursor"] for line in tail.stdout.splitlines()] == [
        e["cursor"] for e in events[4:]
    ]
