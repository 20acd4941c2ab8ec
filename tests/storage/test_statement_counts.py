"""What the docs promise about round trips, counted at the driver: a fresh call is one
statement (its INSERT is also the commit), a replayed call none, a job's whole history
one query, and a one-call job four statements from enqueue to finish."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from celery import Celery

from celery_durable import Durable, call
from celery_durable.engine.runner import run_job
from celery_durable.store.sql import SQLStorage
from tests.unit.conftest import Crash


@contextmanager
def counting(storage: SQLStorage) -> Iterator[list[str]]:
    """Every statement the store sends while the block runs: on the hot path and
    through SQLAlchemy (its before_cursor_execute event)."""
    sent: list[str] = []
    stop = storage.observe_statements(lambda sql, _: sent.append(" ".join(sql.split())[:60]))
    try:
        yield sent
    finally:
        stop()


def _deliver(durable: Durable, name: str, job_id: str, *args: Any) -> Any:
    task = durable.app.tasks[name]
    task.push_request(
        id=job_id,
        delivery_info={"routing_key": "q"},
        args=args,
        kwargs={},
        retries=0,
        called_directly=False,
        headers={},
    )
    try:
        return run_job(durable.runtime, task, task.request, args, {})
    finally:
        task.pop_request()


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
def test_statements_per_call_per_replay_and_per_job(
    backend: str, sql_storage_factory: Callable[[str], SQLStorage]
) -> None:
    storage = sql_storage_factory(backend)
    app = Celery("counts", broker="memory://", set_as_current=False)
    app.conf.task_default_queue = f"counts-{uuid.uuid4().hex}"
    durable = Durable(
        app,
        storage=storage,
        lease_seconds=600,
        cancel_check_interval=600,
        call_retries=0,
        job_retries=0,
    )
    crash_at: dict[str, int | None] = {"n": None}

    @app.task(name="counts.step", shared=False)
    def step(n: int) -> int:
        if n == crash_at["n"]:
            raise Crash()
        return n

    @durable.task(name="counts.one", shared=False)
    def one() -> int:
        return int(call(step, 1))

    @durable.task(name="counts.three", shared=False)
    def three() -> list[int]:
        return [call(step, 1), call(step, 2), call(step, 3)]

    # MySQL has no UPDATE ... RETURNING: a claim cannot tell a first execution, so the
    # (empty) history is read once more
    first_history = 0 if storage.engine.dialect.update_returning else 1

    with counting(storage) as enqueue:
        one.apply_async(task_id="j-one")
    assert len(enqueue) == 1 and enqueue[0].startswith("INSERT")
    with counting(storage) as job:
        assert _deliver(durable, "counts.one", "j-one") == 1
    # claim, the call's checkpoint, the finish (with a history read on MySQL)
    assert len(job) == 3 + first_history, job

    three.apply_async(task_id="j-three")
    crash_at["n"] = 3
    with counting(storage) as crashed, pytest.raises(Crash):
        _deliver(durable, "counts.three", "j-three")
    assert len(crashed) == 1 + first_history + 2, crashed  # claim, two fresh calls

    crash_at["n"] = None
    storage.release_abandoned("j-three", "", durable.deliver_by(None))
    with counting(storage) as replayed:
        assert _deliver(durable, "counts.three", "j-three") == [1, 2, 3]
    history = [s for s in replayed if s.startswith("SELECT")]
    assert len(history) == 1, replayed  # the whole history in one query
    # claim + history + (two replayed calls: nothing) + one fresh call + finish
    assert len(replayed) == 4, replayed


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
def test_the_dashboards_schedules_page_costs_the_same_statements_for_any_number_of_schedules(
    backend: str, sql_storage_factory: Callable[[str], SQLStorage]
) -> None:
    from starlette.testclient import TestClient

    from celery_durable import every
    from celery_durable.web import create_app

    storage = sql_storage_factory(backend)
    app = Celery("schedule-counts", broker="memory://", set_as_current=False)
    app.conf.task_default_queue = f"counts-{uuid.uuid4().hex}"
    durable = Durable(app, storage=storage)

    @durable.task(name="counts.ticked", shared=False)
    def ticked() -> None:
        return None

    client = TestClient(
        create_app(durable), base_url="http://127.0.0.1:5556", client=("127.0.0.1", 50000)
    )

    def listed(count: int) -> tuple[list[str], list[dict[str, Any]]]:
        for n in range(len(durable.schedules.all()), count):
            durable.schedules.add(f"s{n:02}", ticked, every(3600))
            durable.schedules.trigger(f"s{n:02}")
        with counting(storage) as sent:
            answer = client.get("/api/schedules")
        assert answer.status_code == 200, answer.text
        rows = answer.json()
        return sent, rows

    few, rows = listed(2)
    many, rows = listed(12)
    assert len(many) == len(few) == 2, many  # the schedules, and every last run at once
    assert [r["schedule"]["name"] for r in rows] == [f"s{n:02}" for n in range(12)]
    assert all(r["last"]["reason"] == "triggered" for r in rows)
