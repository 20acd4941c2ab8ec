"""Several real `celery beat -S durable` processes on one database: every tick of a
one-second schedule is enqueued exactly once, also when one beat is SIGKILLed; schedules
changed through the API while beat runs take effect within seconds."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta

import pytest

from celery_durable import JobState
from celery_durable.scheduling.kinds import every
from celery_durable.store.records import JobFilter
from tests.integration.conftest import Cluster, wait_for

pytestmark = pytest.mark.worker


def _fired(cluster: Cluster, name: str = "every-second") -> list:  # type: ignore[type-arg]
    runs = cluster.durable.schedules.runs(name, limit=1000)
    return sorted(r.nominal_at for r in runs if r.outcome == "fired")


@pytest.mark.parametrize(
    ("broker", "store"),
    [
        pytest.param("redis", "postgres", marks=[pytest.mark.redis, pytest.mark.postgres]),
        pytest.param("redis", "mysql", marks=[pytest.mark.redis, pytest.mark.mysql]),
        pytest.param("sqlite", "sqlite"),
    ],
)
def test_three_beats_enqueue_every_tick_exactly_once(
    make_cluster: Callable[..., Cluster], broker: str, store: str
) -> None:
    cluster = make_cluster(broker, store)
    cluster.worker(concurrency=2)
    beats = [cluster.beat() for _ in range(3)]
    wait_for(lambda: len(_fired(cluster)) >= 3, 60, "three ticks", cluster.logs_tail)
    beats[0].kill()  # SIGKILL one of them mid-stream
    wait_for(lambda: len(_fired(cluster)) >= 10, 60, "ten ticks", cluster.logs_tail)
    for beat in beats[1:]:
        beat.kill()

    fired = _fired(cluster)
    gaps = {b - a for a, b in itertools.pairwise(fired)}
    assert gaps == {timedelta(seconds=1)}, f"ticks missing or doubled: {fired}"
    jobs = cluster.storage.list_jobs(JobFilter(task="proj.ticked", limit=1000))
    assert len(jobs) == len(fired)
    wait_for(
        lambda: all(
            (j := cluster.job(job.id)) is not None and j.state is JobState.SUCCEEDED for job in jobs
        ),
        60,
        "every scheduled job to run",
        cluster.logs_tail,
    )
    executed = (cluster.effects / "ticked").read_text().split()
    assert sorted(executed) == sorted(job.id for job in jobs)  # each ran exactly once


@pytest.mark.redis
@pytest.mark.postgres
def test_api_changes_reach_a_running_beat_within_seconds(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    cluster.worker()
    cluster.beat()
    wait_for(lambda: _fired(cluster), 60, "the beat to start ticking", cluster.logs_tail)
    cluster.durable.schedules.add("api-added", "proj.step", every(1), args=["api", 0])
    wait_for(lambda: cluster.count("api") >= 2, 15, "the added schedule to run", cluster.logs_tail)
    cluster.durable.schedules.pause("api-added")
    # One beat pass fires every due schedule: once the other one-second schedule has
    # fired twice more, a tick of the paused one that was in flight has landed.
    ticks = len(_fired(cluster))
    wait_for(
        lambda: len(_fired(cluster)) >= ticks + 2, 30, "two more beat ticks", cluster.logs_tail
    )
    settled = len(_fired(cluster, "api-added"))
    wait_for(
        lambda: len(_fired(cluster)) >= ticks + 6, 30, "four more beat ticks", cluster.logs_tail
    )
    assert len(_fired(cluster, "api-added")) == settled  # paused: it fired in none
    cluster.durable.schedules.resume("api-added")
    wait_for(
        lambda: len(_fired(cluster, "api-added")) > settled,
        15,
        "the resumed schedule to run",
        cluster.logs_tail,
    )
