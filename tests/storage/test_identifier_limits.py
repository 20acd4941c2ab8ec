"""The identifier limits hold on every SQL store: the longest ids, keys and names we
accept are stored and found again, and anything beyond them is a ValidationError before
the driver sees it (no raw DataError with the SQL in it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from celery import Celery

from celery_durable import Durable, ValidationError, call, every
from celery_durable.identifiers import ID_COLUMN, JOB_ID, NAME_COLUMN
from celery_durable.store.sql import SQLStorage
from celery_durable.testing import new_job


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
def test_the_longest_values_fit_and_longer_ones_are_refused(
    backend: str, sql_storage_factory: Callable[[str], SQLStorage]
) -> None:
    storage = sql_storage_factory(backend)
    app = Celery("limits", broker="memory://", set_as_current=False)
    durable = Durable(app, storage=storage)
    task_name = "t" * NAME_COLUMN

    @durable.task(name=task_name, shared=False)
    def longest(x: int) -> int:
        return int(call("limits.step", x))

    @app.task(name="limits.step", shared=False)
    def step(x: int) -> int:
        return x

    job_id, key, topic = "j" * JOB_ID, "k" * ID_COLUMN, "é" * NAME_COLUMN
    longest.apply_async((1,), task_id=job_id, unique=key, queue="q" * NAME_COLUMN)
    assert durable.get_job(job_id).task == task_name
    # a derived id (a dispatched child's) can be looked up, though no one may enqueue it
    child_id = job_id + ".1" * 31 + "2"  # 191 characters: the whole column
    storage.create_job(dataclasses.replace(new_job(child_id), task=task_name))
    assert len(child_id) == ID_COLUMN and durable.get_job(child_id).id == child_id
    assert durable.cancel(child_id).value == "cancelled"
    assert [j.id for j in durable.jobs(task=task_name, queue="q" * NAME_COLUMN)] == [job_id]
    assert durable.send(job_id, topic, {"ok": 1}, key="m" * ID_COLUMN)
    durable.schedules.add("s" * ID_COLUMN, task_name, every(60))
    assert durable.schedules.get("s" * ID_COLUMN).task == task_name

    for attempt, message in (
        (lambda: durable.get_job("j" * (ID_COLUMN + 1)), "at most 191"),
        (lambda: longest.apply_async((1,), task_id="j" * (JOB_ID + 1)), "at most 128"),
        (lambda: durable.get_job("a\x00b"), "NUL byte"),
        (lambda: durable.send(job_id, "x" * (NAME_COLUMN + 1), 1), "at most 255"),
        (lambda: durable.send(job_id, "t", 1, key="\x00"), "NUL byte"),
        (lambda: durable.jobs(task="n\x00"), "NUL byte"),
        (lambda: durable.schedules.get("s" * (ID_COLUMN + 1)), "at most 191"),
        (lambda: longest.apply_async((1,), unique="u" * (ID_COLUMN + 1)), "at most 191"),
    ):
        with pytest.raises(ValidationError, match=message):
            attempt()
