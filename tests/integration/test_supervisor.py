"""`celery durable worker --queue NAME:N ...`: one real worker per queue, supervised."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from celery_durable import ConfigurationError, JobState
from celery_durable.worker.supervisor import QueueSpec, parse_queues
from tests.integration.conftest import REPO, Cluster, wait_for
from tests.integration.test_cli_and_demo import _celery


def test_queue_specs_are_checked() -> None:
    assert parse_queues(["critical:20", "emails:1"]) == [
        QueueSpec("critical", 20),
        QueueSpec("emails", 1),
    ]
    assert parse_queues(["a:b:3"]) == [QueueSpec("a:b", 3)]  # the last colon counts
    for bad, message in (
        ("critical", "NAME:CONCURRENCY"),
        ("critical:0", "at least 1"),
        (":3", "NAME:CONCURRENCY"),
        ("x:-1", "at least 1"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            parse_queues([bad])
    with pytest.raises(ConfigurationError, match="more than once: a"):
        parse_queues(["a:1", "b:1", "a:2"])


def test_bad_queue_option_is_a_usage_error(tmp_path: Path) -> None:
    env = {
        "DURABLE_TEST_BROKER": f"sqla+sqlite:///{tmp_path}/b.sqlite3",
        "DURABLE_TEST_STORE": f"sqlite:///{tmp_path}/s.sqlite3",
        "DURABLE_TEST_PREFIX": "sup_",
        "DURABLE_TEST_QUEUE": "sup",
    }
    result = _celery(env, "worker", "--queue", "critical")
    assert result.returncode == 2
    assert "NAME:CONCURRENCY" in result.stderr


def _started(log: Path) -> list[tuple[str, int]]:
    text = log.read_text() if log.exists() else ""
    return [(m[1], int(m[2])) for m in re.finditer(r"started worker (\S+) \(pid (\d+)\)", text)]


def _children(pid: int) -> list[int]:
    """The pool processes of a worker: its children, read from /proc."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"  # a zombie has exited


@pytest.mark.worker
@pytest.mark.redis
@pytest.mark.postgres
def test_one_supervised_worker_per_queue(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster("redis", "postgres")
    qa, qb = f"{cluster.queue}-a", f"{cluster.queue}-b"
    env = {
        **os.environ,
        "DURABLE_TEST_BROKER": cluster.broker,
        "DURABLE_TEST_STORE": cluster.store_url,
        "DURABLE_TEST_PREFIX": cluster.prefix,
        "DURABLE_TEST_QUEUE": cluster.queue,
        "DURABLE_TEST_EFFECTS": str(cluster.effects),
        "PYTHONPATH": str(REPO),
    }
    log = cluster.logs / "supervisor.log"
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.integration.proj",
            "durable",
            "worker",
            "--queue",
            f"{qa}:1",
            "--queue",
            f"{qb}:2",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        outer = cluster.app.tasks["proj.outer"]
        jobs = [outer.apply_async((1,), queue=qa).id, outer.apply_async((2,), queue=qb).id]
        for job_id in jobs:
            assert cluster.wait_finished(job_id).state is JobState.SUCCEEDED, log.read_text()
        started = dict(_started(log))
        assert set(started) == {qa, qb}
        # each worker got its own -c: prefork children of its main process
        for queue, concurrency in ((qa, 1), (qb, 2)):
            wait_for(
                lambda q=queue, n=concurrency: len(_children(started[q])) == n,
                30,
                f"{concurrency} pool process(es) for {queue}",
                log.read_text,
            )

        os.kill(started[qa], signal.SIGTERM)  # the worker of queue a exits on its own
        wait_for(lambda: len(_started(log)) == 3, 60, "worker a to be restarted", log.read_text)
        assert "restarting" in log.read_text()
        again = outer.apply_async((3,), queue=qa).id
        assert cluster.wait_finished(again).state is JobState.SUCCEEDED

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0, log.read_text()
        assert "forwarding SIGTERM to 2 worker(s)" in log.read_text()
        for _, pid in _started(log):  # it exited after every worker it started (reaped)
            assert not _alive(pid), pid
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
