"""Many new jobs at once: every row checked, then written in one transaction
(multi-row INSERTs), then the messages published, through Celery's group machinery
when the batch is a group.

All or nothing before publishing: a signature that is not a durable task, an option
that does not validate, an id that exists already: nothing is written or sent. A
publish that fails part way removes the rows not yet claimed (a message already sent
still runs its job: a delivery of an unknown job writes its row from the message).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery, group
from celery.canvas import Signature
from celery.result import AsyncResult, GroupResult

from ..errors import ConfigurationError, ValidationError
from .runtime import Runtime
from .task import DurableTask, PlannedJob, stored

logger = logging.getLogger(__name__)
INLINE_CANVAS = ("celery.chunks", "celery.starmap", "celery.map")


def enqueue_many(
    runtime: Runtime, batch: group | Iterable[Signature[Any]]
) -> GroupResult | list[AsyncResult[Any]]:
    if isinstance(batch, group):
        _check_group_options(batch)
        batch.freeze()  # the group id, and each member's task id
    members = list(batch.tasks) if isinstance(batch, group) else list(batch)
    planned = [_plan(runtime.app, index, sig) for index, sig in enumerate(members)]
    jobs = [p.job for p in planned]
    runtime.storage.create_jobs(jobs)
    ids = frozenset(job.id for job in jobs)
    published: set[str] = set()
    try:
        with stored({p.job.id: p.held for p in planned}):
            if isinstance(batch, group):
                return batch.apply_async()
            results: list[AsyncResult[Any]] = []
            with runtime.app.producer_or_acquire() as producer:
                for sig, plan in zip(members, planned, strict=True):
                    task = runtime.app.tasks[sig.task]
                    results.append(
                        task.send_planned(
                            plan, sig.args, sig.kwargs, created=True, producer=producer
                        )
                    )
                    published.add(plan.job.id)
            return results
    except BaseException:
        for job_id in sorted(ids - published):
            runtime.storage.delete_unstarted_job(job_id)
        logger.error(
            "enqueue_many: publishing failed after %d of %d jobs; the rows of the others "
            "were removed unless a worker had started them",
            len(published),
            len(ids),
        )
        raise


# What group.freeze() itself sets on a group; any other group-level option would reach
# the members' messages (Celery merges it in) but not the rows planned from the members.
GROUP_FREEZE_OPTIONS = frozenset({"task_id", "group_id", "root_id", "parent_id", "chord"})


def _check_group_options(batch: group) -> None:
    extra = sorted(set(batch.options) - GROUP_FREEZE_OPTIONS)
    if extra:
        raise ValidationError(
            f"enqueue_many() got a group with options {', '.join(extra)}: set them on each "
            f"member instead (task.s(...).set({extra[0]}=...)), so the rows and the "
            f"messages agree"
        )


def _plan(app: Celery, index: int, sig: Any) -> PlannedJob:
    if not isinstance(sig, Signature):
        raise ValidationError(
            f"enqueue_many() item {index} is {type(sig).__name__}, not a signature: pass "
            f"task.s(...) for each job (or a group of them)"
        )
    if sig.task in INLINE_CANVAS:
        raise ValidationError(
            f"enqueue_many() item {index} is {sig.task}: it runs the task function inline "
            f"inside one Celery task, so its items would not be durable jobs. Enqueue one "
            f"signature per item: enqueue_many(task.s(*args) for args in items)"
        )
    task = app.tasks.get(sig.task)
    if not isinstance(task, DurableTask):
        raise ConfigurationError(
            f"enqueue_many() item {index} is {sig.task!r}, which is not a durable task; "
            f"plain Celery tasks keep group(...).apply_async()"
        )
    if sig.options.get("unique") is not None:
        raise ValidationError(
            f"enqueue_many() item {index} has unique={sig.options['unique']!r}: jobs with "
            f"a unique key are enqueued one at a time, with enqueue(..., unique=...)"
        )
    if sig.options.get("debounce") is not None:
        raise ValidationError(
            f"enqueue_many() item {index} has debounce={sig.options['debounce']!r}: "
            f"debounced jobs are enqueued one at a time, with enqueue(..., debounce=...)"
        )
    task_id = sig.freeze().id  # kept in the signature: its message carries the same id
    # planning consumes options (delay=, at=): the signature keeps its own for publishing
    options = copy.deepcopy({k: v for k, v in sig.options.items() if k != "task_id"})
    return task.plan_job(tuple(sig.args), dict(sig.kwargs), task_id, options)
