"""The task a dispatched call's child job runs (``celery_durable.dispatched``): a small
durable job whose one call is the dispatched task, so call retries apply and a durable
task gets a history of its own."""

from __future__ import annotations

from typing import Any

from celery import Celery

from .calls import call
from .enqueue import DISPATCH_TASK
from .task import DurableTask


def run_dispatched(
    task: Any,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    retries: int,
    backoff: float | None = None,
) -> Any:
    """The body of a child job: run the dispatched task as this job's one call."""
    return call(
        task.app.signature(name, args=args, kwargs=kwargs), retries=retries, backoff=backoff
    )


def register_dispatch_task(app: Celery) -> None:
    app.task(
        name=DISPATCH_TASK,
        base=DurableTask,
        bind=True,
        retries=0,
        on_exhausted="fail",
        shared=False,
    )(run_dispatched)
