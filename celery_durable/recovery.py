"""The recovery sweeper: republishes jobs whose lease or delivery deadline passed.

It runs as a daemon thread in every `celery worker` main process (no extra process),
because brokers cannot be trusted to redeliver: Redis waits for its visibility timeout
(1 h by default), the SQL transports never redeliver, and a killed pool child's message
is acked by default. Several workers may sweep at once: each republish is a
compare-and-set on the job row, so exactly one of them wins.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from . import serialization
from .enqueue import due_header
from .errors import StorageUnavailable
from .history import discard_from_first_failure
from .retry import job_policy
from .store.base import JobRecord, JobState, WorkerRecord

if TYPE_CHECKING:
    from .app import Durable

logger = logging.getLogger(__name__)
BATCH = 100
WORKER_MEMORY = timedelta(days=1)
"""Workers not seen for this long are forgotten (their rows deleted by retention)."""


class RecoverySweeper:
    def __init__(self, durable: Durable) -> None:
        self.durable = durable
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker: WorkerRecord | None = None

    def sweep_once(self, *, dry_run: bool = False) -> list[str]:
        """Republish (or end) every expired job; returns the ids it acted on.

        With ``dry_run`` nothing is changed: the ids are those a sweep would act on."""
        durable, storage = self.durable, self.durable.storage
        now = durable.now()
        acted = []
        for job in storage.expired_jobs(now, BATCH):
            if dry_run:
                acted.append(job.id)
            elif job.cancel_requested_at is not None:  # its execution died: never resume
                if storage.abandon_job(job, _cancelled_error(job), now, JobState.CANCELLED):
                    logger.info("job %s: cancelled while its worker was lost", job.id)
                    acted.append(job.id)
            elif job.lease_owner is not None and job.recoveries >= durable.settings.max_recoveries:
                # Only a lost worker counts: a due retry or an unclaimed message is not one.
                state = self._exhausted_state(job)
                if storage.abandon_job(job, _abandon_error(job), now, state):
                    logger.error(
                        "job %s lost its worker %d times; marked %s",
                        job.id,
                        job.recoveries,
                        state.value,
                    )
                    acted.append(job.id)
                    self._report_abandoned(job, state)
            elif storage.recover_job(job, durable.deliver_by(None), now):
                if job.lease_owner is not None:
                    logger.warning("job %s (%s): lease expired; republishing it", job.id, job.task)
                publish(durable, job)
                acted.append(job.id)
        return acted

    def _report_abandoned(self, job: JobRecord, state: JobState) -> None:
        """after_job / on_job_fail for a job no execution can report: here, in the
        worker's main process (the worker-lost path)."""
        observers = self.durable.observers
        if not observers.active:
            return
        from celery.exceptions import WorkerLostError

        from .observe import JobInfo, Outcome

        info = JobInfo(
            id=job.id,
            task=job.task,
            args=tuple(serialization.loads(job.args)),
            kwargs=serialization.loads(job.kwargs),
            queue=job.queue,
            execution=job.attempts,
            started_at=self.durable.now(),
        )
        observers.job_ended(
            info,
            Outcome(
                state.value,
                0.0,
                error=WorkerLostError(f"job {job.id} lost its worker {job.recoveries} times"),
                by_sweeper=True,
            ),
        )

    def _exhausted_state(self, job: JobRecord) -> JobState:
        task = self.durable.app.tasks.get(job.task)
        dead = job_policy(task, self.durable.settings).on_exhausted == "dead_letter"
        return JobState.DEAD if dead else JobState.FAILED

    @property
    def started(self) -> bool:
        """True in a worker's main process (where the sweeper runs)."""
        return self._thread is not None

    def start(self, worker_name: str | None = None, queues: Sequence[str] = ()) -> None:
        """Sweep every ``durable_sweep_interval`` in a daemon thread; with a worker name,
        each pass also writes the worker's heartbeat row."""
        if self._thread is not None:
            return
        if worker_name:
            now = self.durable.now()
            self._worker = WorkerRecord(
                name=worker_name,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                queues=serialization.dumps(sorted(queues), what="queue names"),
                started_at=now,
                last_seen_at=now,
                sweeps=0,
            )
        self._thread = threading.Thread(
            target=self._run, name="celery-durable-recovery", daemon=True
        )
        self._thread.start()

    def _heartbeat(self) -> None:
        if self._worker is None:
            return
        self._worker = dataclasses.replace(
            self._worker, last_seen_at=self.durable.now(), sweeps=self._worker.sweeps + 1
        )
        self.durable.storage.record_heartbeat(self._worker)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from .operations import apply_retention

        settings = self.durable.settings
        next_retention = time.monotonic()
        while True:
            try:
                self.sweep_once()
                self._heartbeat()
            except StorageUnavailable as exc:  # an outage: one line, not a traceback
                logger.error(
                    "recovery sweep failed: %s; trying again in %ss", exc, settings.sweep_interval
                )
            except Exception:
                logger.exception(
                    "recovery sweep failed; trying again in %ss", settings.sweep_interval
                )
            if time.monotonic() >= next_retention:
                next_retention = time.monotonic() + settings.retention_interval
                try:
                    deleted = apply_retention(self.durable)
                    if any(deleted.values()):
                        logger.info("retention deleted finished jobs: %s", deleted)
                    self.durable.storage.delete_workers(self.durable.now() - WORKER_MEMORY)
                except Exception:
                    logger.exception(
                        "retention failed; trying again in %ss", settings.retention_interval
                    )
            if self._stop.wait(settings.sweep_interval):
                return


def requeue(
    durable: Durable, job_id: str, from_states: Sequence[JobState], *, from_scratch: bool
) -> bool:
    """Put a finished job back to pending (same id) and publish it; False, and nothing
    changed, if it was not in one of ``from_states``. Calls that succeeded before the
    first failure replay unless ``from_scratch``."""
    storage = durable.storage
    discard = (
        None if from_scratch else discard_from_first_failure(job_id, storage.load_history(job_id))
    )
    if not storage.requeue_job(
        job_id, from_states, discard, durable.deliver_by(None), durable.now()
    ):
        return False
    job = storage.get_job(job_id)
    if job is not None:
        publish_or_leave(durable, job, "requeued")
    return True


def publish_or_leave(durable: Durable, job: JobRecord, what: str) -> None:
    """Publish a job whose row was just written; on a broker error leave it to the
    sweeper (the row has a deadline)."""
    try:
        publish(durable, job)
    except Exception:
        logger.exception(
            "job %s %s but not published; the recovery sweeper will publish it", job.id, what
        )


def publish(durable: Durable, job: JobRecord) -> None:
    """Send a job's message from its row: same id, arguments, routing and canvas."""
    options = serialization.loads(job.options)
    # None would override the task's own routing (send_task merges options over it).
    options.update(
        {k: v for k, v in (("queue", job.queue), ("priority", job.priority)) if v is not None}
    )
    now = durable.now()
    due = job.not_before if job.not_before is not None and job.not_before > now else now
    options["headers"] = {**(options.get("headers") or {}), **due_header(due)}
    durable.app.send_task(
        job.task,
        args=serialization.loads(job.args),
        kwargs=serialization.loads(job.kwargs),
        task_id=job.id,
        **options,
    )


def _cancelled_error(job: JobRecord) -> str:
    return serialization.dumps(
        {"type": "Cancelled", "message": f"job {job.id} cancelled", "traceback": ""},
        what="an error description",
    )


def _abandon_error(job: JobRecord) -> str:
    return serialization.dumps(
        {
            "type": "WorkerLostError",
            "message": (
                f"job {job.id} lost its worker {job.recoveries} times "
                f"(durable_max_recoveries); it may be crashing the process"
            ),
            "traceback": "",
        },
        what="an error description",
    )
