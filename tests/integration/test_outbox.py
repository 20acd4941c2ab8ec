"""Transactional enqueue against real workers on PostgreSQL, MariaDB and SQLite: a
rolled-back transaction never runs its job, a committed one runs exactly once, and a
producer SIGKILLed between its commit and its publish has its job sent by the relay."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from celery_durable import JobState
from tests.integration.conftest import REPO, Cluster, wait_for


@pytest.mark.parametrize("store", ["postgres", "mysql", "sqlite"])
def test_the_job_commits_and_rolls_back_with_the_callers_transaction(
    make_cluster: Callable[..., Cluster], store: str
) -> None:
    cluster = make_cluster("redis", store)
    worker = cluster.wait_ready(cluster.worker(concurrency=2))
    task = cluster.app.tasks["proj.ordered"]
    engine = create_engine(cluster.store_url)
    with Session(engine) as session:
        session.begin()
        rolled_back = cluster.durable.enqueue(task, "rolled-back", connection=session).id
        session.rollback()
        with session.begin():
            kept = cluster.durable.enqueue(task, "kept", connection=session).id
            # not sent before the commit: the worker could not even see its row
            assert cluster.deliveries(kept) == 0
    with engine.begin() as conn:  # a Core connection joins just the same
        core = cluster.durable.enqueue(task, "core", connection=conn).id
    engine.dispose()

    for job_id in (kept, core):
        assert cluster.wait_finished(job_id).state is JobState.SUCCEEDED
    cluster.wait_sweeps(worker, more=3)  # past the relay's deadline (1 s here)
    assert sorted(n[2] for n in cluster.notes("ordered")) == ["core", "kept"]
    assert (cluster.deliveries(kept), cluster.deliveries(core)) == (1, 1)  # one message
    assert cluster.job(rolled_back) is None and cluster.deliveries(rolled_back) == 0
    assert cluster.job(kept).held is None  # type: ignore[union-attr]


@pytest.mark.parametrize("store", ["postgres", "mysql", "sqlite"])
def test_a_producer_killed_between_commit_and_publish_has_its_job_relayed(
    make_cluster: Callable[..., Cluster], store: str
) -> None:
    cluster = make_cluster("redis", store)
    cluster.wait_ready(cluster.worker(concurrency=1))
    env = {
        **os.environ,
        "DURABLE_TEST_BROKER": cluster.broker,
        "DURABLE_TEST_STORE": cluster.store_url,
        "DURABLE_TEST_PREFIX": cluster.prefix,
        "DURABLE_TEST_QUEUE": cluster.queue,
        "PYTHONPATH": str(REPO),
    }
    producer = subprocess.run(
        [sys.executable, "-m", "tests.integration.outbox_producer", "relayed"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert producer.returncode == -9, producer.stderr  # SIGKILLed after its commit
    [job_id] = producer.stdout.split()  # it never printed "published"
    job = cluster.job(job_id)
    assert job is not None  # committed (and not sent: the relay sends it, below)

    finished = cluster.wait_finished(job_id, timeout=60)
    assert finished.state is JobState.SUCCEEDED
    assert [n[2] for n in cluster.notes("ordered")] == ["relayed"]
    assert cluster.deliveries(job_id) == 1  # the relay sent it once
    # not before the relay's deadline (durable_outbox_relay_after, 1 s here)
    assert finished.started_at is not None
    assert finished.started_at >= job.created_at + timedelta(seconds=1)


def _memory_app(tmp_path: Path) -> tuple[Any, Any]:
    from celery import Celery

    from celery_durable import Durable

    app = Celery("outbox", broker="memory://", set_as_current=False)
    app.conf.update(
        task_default_queue=f"outbox-{uuid.uuid4().hex[:8]}",
        durable_database_url=f"sqlite:///{tmp_path}/store.sqlite3",
    )
    durable = Durable(app)
    durable.migrate()

    @durable.task(name="outbox.t", shared=False)
    def t(n: int) -> int:
        return n

    return app, durable


def _sent(app: Any) -> list[str]:
    ids = []
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue(app.conf.task_default_queue)
        while queue.qsize():
            message = queue.get(timeout=1)
            ids.append(message.headers["id"])
            message.ack()
        queue.close()
    return ids


def test_each_transaction_on_a_pooled_connection_sends_its_own_messages(tmp_path: Path) -> None:
    app, durable = _memory_app(tmp_path)
    engine = create_engine(f"sqlite:///{tmp_path}/store.sqlite3")
    sent: list[str] = []
    for n in range(3):  # the pool hands the same DBAPI connection back each time
        with engine.begin() as conn:
            job_id = durable.enqueue(app.tasks["outbox.t"], n, connection=conn).id
        wait_for(lambda j=job_id: bool(sent.extend(_sent(app)) or j in sent), 10, "the publish")
        # The message goes out before the mark is cleared: wait on the row, not on timing.
        wait_for(lambda j=job_id: durable.storage.get_job(j).held is None, 10, "the sent mark")
    assert len(sent) == 3
    engine.dispose()


def test_a_savepoint_neither_sends_early_nor_keeps_a_rolled_back_job(tmp_path: Path) -> None:
    app, durable = _memory_app(tmp_path)
    task = app.tasks["outbox.t"]
    engine = create_engine(f"sqlite:///{tmp_path}/store.sqlite3")
    with Session(engine) as session:
        with session.begin():
            with session.begin_nested():
                kept = durable.enqueue(task, 1, connection=session).id
            assert _sent(app) == []  # a released savepoint is not a commit
            savepoint = session.begin_nested()
            dropped = durable.enqueue(task, 2, connection=session).id
            savepoint.rollback()
        assert _sent(app) == [kept]
    assert durable.storage.get_job(dropped) is None
    assert durable.storage.get_job(kept) is not None
    engine.dispose()
