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
from collections.abc import Callable, Sequence
from datetime import timedelta

from .. import serialization
from ..engine.publish import publish, publish_or_leave
from ..engine.runtime import Runtime
from ..errors import StorageUnavailable
from ..observability.hooks import JobInfo, Outcome
from ..retry import job_policy
from ..store.records import JobRecord, JobState, WorkerRecord

logger = logging.getLogger(__name__)
BATCH = 100
RESUME_RACE_WINDOW = timedelta(minutes=5)
"""A hold that raced a resume committed within milliseconds of it: each sweep looks at
the pauses lifted this recently."""
WORKER_MEMORY = timedelta(days=1)
"""Workers not seen for this long are forgotten (their rows deleted by retention)."""


class RecoverySweeper:
    def __init__(self, runtime: Runtime, chores: Sequence[Callable[[], object]] = ()) -> None:
        """``chores``: what else each worker does every ``durable_retention_interval``
        (the facade gives it retention)."""
        self.runtime = runtime
        self.chores = list(chores)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker: WorkerRecord | None = None

    def sweep_once(self, *, dry_run: bool = False) -> list[str]:
        """Republish (or end) every expired job; returns the ids it acted on.

        With ``dry_run`` nothing is changed: the ids are those a sweep would act on."""
        runtime, storage = self.runtime, self.runtime.storage
        now = runtime.now()
        acted = []
        for job in storage.expired_jobs(now, BATCH):
            if dry_run:
                acted.append(job.id)
            elif job.cancel_requested_at is not None:  # its execution died: never resume
                if storage.abandon_job(job, _cancelled_error(job), now, JobState.CANCELLED):
                    logger.info("job %s: cancelled while its worker was lost", job.id)
                    acted.append(job.id)
            elif job.lease_owner is not None and job.recoveries >= runtime.settings.max_recoveries:
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
            elif storage.recover_job(job, runtime.deliver_by(None), now):
                if job.lease_owner is not None:
                    logger.warning("job %s (%s): lease expired; republishing it", job.id, job.task)
                publish(runtime, job)
                acted.append(job.id)
        if not dry_run:  # holds that raced a resume in the last few minutes
            since = now - RESUME_RACE_WINDOW
            for job in storage.resumed_holds(since, BATCH, runtime.deliver_by(None)):
                publish_or_leave(runtime, job, "resumed")
                acted.append(job.id)
        return acted

    def _report_abandoned(self, job: JobRecord, state: JobState) -> None:
        """after_job / on_job_fail for a job no execution can report: here, in the
        worker's main process (the worker-lost path)."""
        observers = self.runtime.observers
        if not observers.active:
            return
        from celery.exceptions import WorkerLostError

        info = JobInfo(
            id=job.id,
            task=job.task,
            args=tuple(serialization.loads(job.args)),
            kwargs=serialization.loads(job.kwargs),
            queue=job.queue,
            execution=job.attempts,
            started_at=self.runtime.now(),
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
        task = self.runtime.app.tasks.get(job.task)
        dead = job_policy(task, self.runtime.settings).on_exhausted == "dead_letter"
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
            now = self.runtime.now()
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
            self._worker, last_seen_at=self.runtime.now(), sweeps=self._worker.sweeps + 1
        )
        self.runtime.storage.record_heartbeat(self._worker)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        settings = self.runtime.settings
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
                self._do_chores()
            if self._stop.wait(settings.sweep_interval):
                return

    def _do_chores(self) -> None:
        for chore in [self._forget_old_workers, *self.chores]:
            try:
                chore()
            except Exception:
                logger.exception(
                    "%s failed; trying again in %ss",
                    getattr(chore, "__name__", chore),
                    self.runtime.settings.retention_interval,
                )

    def _forget_old_workers(self) -> None:
        self.runtime.storage.delete_workers(self.runtime.now() - WORKER_MEMORY)


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
