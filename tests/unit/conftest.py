"""In-process fixtures: a Celery app on the in-memory store with a fixed, steppable clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from celery_durable import Durable, MemoryStorage
from celery_durable.runner import run_job


@dataclass
class Clock:
    now: datetime = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Crash(BaseException):
    """Stands in for SIGKILL in-process: nothing after it runs, not even `except Exception`."""


@dataclass
class Env:
    app: Celery
    durable: Durable
    storage: MemoryStorage
    clock: Clock
    effects: list[str]

    def deliver(self, task_name: str, job_id: str, *args: Any, **kwargs: Any) -> Any:
        """One delivery of a job to a worker, run in this process."""
        task = self.app.tasks[task_name]
        request = SimpleNamespace(id=job_id, delivery_info={"routing_key": "celery"})
        return run_job(self.durable, task, request, args, kwargs)


@pytest.fixture
def env() -> Iterator[Env]:
    app = Celery("unit", set_as_current=False)
    clock = Clock()
    storage = MemoryStorage()
    durable = Durable(app, storage=storage, clock=clock, lease_seconds=30)
    yield Env(app, durable, storage, clock, [])
