"""In-process fixtures: a Celery app on the in-memory store with a fixed, steppable clock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from celery import Celery

from celery_durable import Durable, MemoryStorage
from celery_durable.engine.runner import run_job


@dataclass
class Clock:
    now: datetime = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    tick: timedelta = timedelta(0)
    """How far each reading moves it (0: it stands still until advanced)."""

    def __call__(self) -> datetime:
        now = self.now
        self.now += self.tick
        return now

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

    def deliver(
        self,
        task_name: str,
        job_id: str,
        *args: Any,
        retries: int = 0,
        headers: dict[str, Any] | None = None,
        eta: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """One delivery of a job to a worker, run in this process."""
        task = self.app.tasks[task_name]
        queue = self.app.conf.task_default_queue
        task.push_request(
            id=job_id,
            delivery_info={"routing_key": queue},
            args=args,
            kwargs=kwargs,
            retries=retries,
            called_directly=False,
            headers=headers or {},
            eta=eta,
        )
        request = task.request
        try:
            return run_job(self.durable.runtime, task, request, args, kwargs)
        finally:
            task.pop_request()

    def published(self) -> list[dict[str, Any]]:
        """Messages sent to the in-memory broker since the last look (headers + eta)."""
        out = []
        with self.app.connection_for_write() as conn:
            queue = conn.SimpleQueue(self.app.conf.task_default_queue)
            while queue.qsize():
                message = queue.get(timeout=1)
                out.append(message.headers)
                message.ack()
            queue.close()
        return out


def make_env(**settings: Any) -> Env:
    app = Celery("unit", set_as_current=False, broker="memory://")
    # kombu's memory transport is one per process: a queue per test keeps them apart
    app.conf.task_default_queue = f"unit-{uuid.uuid4().hex}"
    clock = Clock()
    storage = MemoryStorage()
    durable = Durable(app, storage=storage, clock=clock, lease_seconds=30, **settings)
    return Env(app, durable, storage, clock, [])


@pytest.fixture
def env() -> Iterator[Env]:
    """Retries off: the core replay semantics, one failure means a failed job."""
    yield make_env(call_retries=0, job_retries=0)
