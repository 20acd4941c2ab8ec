"""``LoggingMiddleware(logger)``: one structured log record per job event and per call.

Every record carries ``extra`` fields a JSON formatter can pick up: ``durable_event``,
``job_id``, ``task``, ``execution``, and for calls ``seq`` (the position, "3.1" inside a
child), ``call``, ``attempt``, ``duration``.
"""

from __future__ import annotations

import logging
from typing import Any

from .hooks import CallInfo, JobInfo, Middleware, Outcome

_LEVELS = {
    "succeeded": logging.INFO,
    "retrying": logging.WARNING,
    "failed": logging.ERROR,
    "dead": logging.ERROR,
    "cancelled": logging.WARNING,
    "pending": logging.INFO,
    "interrupted": logging.WARNING,
}


class LoggingMiddleware(Middleware):
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("celery_durable.jobs")

    def before_job(self, job: JobInfo) -> None:
        self.logger.info(
            "job %s (%s) started, execution %s",
            job.id,
            job.task,
            job.execution,
            extra=_job(job, "job_started"),
        )

    def after_job(self, job: JobInfo, outcome: Outcome) -> None:
        extra = {**_job(job, f"job_{outcome.state}"), "duration": outcome.duration}
        if outcome.state == "retrying":
            extra.update(attempt=outcome.attempt, delay=outcome.delay, retry_of=outcome.retry_of)
        reason = f": {type(outcome.error).__name__}: {outcome.error}" if outcome.error else ""
        self.logger.log(
            _LEVELS.get(outcome.state, logging.INFO),
            "job %s (%s) %s in %.3fs%s",
            job.id,
            job.task,
            outcome.state,
            outcome.duration,
            reason,
            extra=extra,
        )

    def after_call(self, job: JobInfo, call: CallInfo) -> None:
        self.logger.info(
            "job %s call %s %s done in %.3fs (attempt %d)",
            job.id,
            call.position,
            call.name,
            call.duration or 0.0,
            call.attempt,
            extra=_call(job, call, "call_succeeded"),
        )

    def on_call_error(self, job: JobInfo, call: CallInfo, error: BaseException) -> None:
        self.logger.warning(
            "job %s call %s %s failed (attempt %d%s): %s: %s",
            job.id,
            call.position,
            call.name,
            call.attempt,
            ", will retry" if call.retrying else "",
            type(error).__name__,
            error,
            extra=_call(job, call, "call_failed"),
        )


def _job(job: JobInfo, event: str) -> dict[str, Any]:
    return {"durable_event": event, "job_id": job.id, "task": job.task, "execution": job.execution}


def _call(job: JobInfo, call: CallInfo, event: str) -> dict[str, Any]:
    return {
        **_job(job, event),
        "seq": call.position,
        "call": call.name,
        "attempt": call.attempt,
        "duration": call.duration,
    }
