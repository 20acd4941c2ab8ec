"""Sending a message to a job from anywhere: ``durable.send`` / ``celery durable jobs
send``. The body takes it with ``receive()`` (``celery_durable.engine.receive``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .. import serialization
from ..engine.publish import publish_woken
from ..engine.runtime import Runtime
from ..errors import JobNotFound, JobStateError
from ..identifiers import check_key, check_name
from ..store.records import SendOutcome


def send(
    runtime: Runtime, job_id: str, topic: str, payload: Any, *, key: str | None = None
) -> bool:
    """Store a message for the job and wake it if it waits on ``topic``. False if a
    message with this ``key`` was sent to the job before (nothing sent again)."""
    check_name(topic, "a message topic")
    if key is not None:
        check_key(key, "a message key")
    encoded = serialization.dumps(payload, what=f"the message on {topic!r}")
    now = runtime.now()
    outcome = runtime.storage.send_message(
        job_id, topic, encoded, key, now, now + timedelta(seconds=runtime.settings.lease_seconds)
    )
    if outcome is SendOutcome.MISSING:
        raise JobNotFound(job_id)
    if outcome is SendOutcome.FINISHED:
        job = runtime.storage.get_job(job_id)
        raise JobStateError(
            job_id,
            job.state.value if job else "finished",
            "messages can only be sent to a job that has not finished",
        )
    if outcome is SendOutcome.WOKE:
        publish_woken(runtime, job_id)
    return outcome is not SendOutcome.DUPLICATE
