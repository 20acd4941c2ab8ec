"""`celery -A proj durable jobs list|show|retry|cancel`."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

import click

from ..errors import JobNotFound, JobStateError
from ..operations.views import JobSummary
from ..store.records import CancelOutcome, JobState
from .common import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_WRONG_STATE,
    WHEN,
    durable_of,
    echo_json,
    fail,
    utc,
)


@click.group(help="List, inspect, retry and cancel durable jobs.")
def jobs() -> None:
    pass


@jobs.command(name="list", help="List jobs, newest first.")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in JobState]),
    help="Repeatable.",
)
@click.option("--task", help="Only this task name.")
@click.option("--queue", help="Only this queue.")
@click.option("--since", type=WHEN, help="Enqueued at or after this time (UTC).")
@click.option("--until", type=WHEN, help="Enqueued before this time (UTC).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_(
    ctx: click.Context,
    states: tuple[str, ...],
    task: str | None,
    queue: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    found = durable_of(ctx).jobs(
        states=states,
        task=task,
        queue=queue,
        since=utc(since),
        until=utc(until),
        limit=limit,
        offset=offset,
    )
    if as_json:
        echo_json([dataclasses.asdict(job) for job in found])
        return
    if not found:
        click.echo("no jobs")
        return
    click.echo(
        f"{'id':<38}{'task':<30}{'state':<11}{'runs':>5}{'fails':>6}  {'enqueued (UTC)':<20}queue"
    )
    for job in found:
        click.echo(_row(job))


def _row(job: JobSummary) -> str:
    return (
        f"{job.id:<38}{job.task[:29]:<30}{job.state:<11}{job.attempts:>5}"
        f"{job.failures:>6}  {job.created_at:%Y-%m-%d %H:%M:%S}  {job.queue or '-'}"
    )


@jobs.command(
    help="Show a job and its call timeline (seq, name, state, attempts, duration, error)."
)
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def show(ctx: click.Context, job_id: str, as_json: bool) -> None:
    try:
        view = durable_of(ctx).get_job(job_id)
    except JobNotFound as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    if as_json:
        echo_json(dataclasses.asdict(view))
        return
    click.echo(view.timeline())
    for c in view.calls:
        if c.error and c.state != "succeeded":
            click.echo(
                f"  call {c.position} {c.name}: {c.error.get('type')}: {c.error.get('message')}"
            )


@jobs.command(
    help="Print a job's recorded history as JSON, for "
    "celery_durable.testing.replay() (check a deploy against it in CI)."
)
@click.argument("job_id")
@click.pass_context
def export(ctx: click.Context, job_id: str) -> None:
    try:
        echo_json(durable_of(ctx).export_history(job_id))
    except JobNotFound as exc:
        fail(str(exc), EXIT_NOT_FOUND)


@jobs.command(help="Run a failed, dead or cancelled job again under the same id.")
@click.argument("job_id")
@click.option("--from-scratch", is_flag=True, help="Drop every checkpoint first.")
@click.pass_context
def retry(ctx: click.Context, job_id: str, from_scratch: bool) -> None:
    try:
        durable_of(ctx).retry(job_id, from_scratch=from_scratch)
    except JobNotFound as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except JobStateError as exc:
        fail(str(exc), EXIT_WRONG_STATE)
    click.echo(f"requeued {job_id}")


@jobs.command(
    help="Cancel jobs: pending ones never start, running ones stop at their next "
    "call; none is resumed by recovery."
)
@click.argument("job_ids", nargs=-1, required=True)
@click.option(
    "--revoke",
    is_flag=True,
    help="Also broadcast Celery's revoke (workers then drop that id for 3 h).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def cancel(ctx: click.Context, job_ids: tuple[str, ...], revoke: bool, as_json: bool) -> None:
    durable, outcomes = durable_of(ctx), {}
    for job_id in job_ids:
        try:
            outcomes[job_id] = durable.cancel(job_id, revoke=revoke).value
        except JobNotFound:
            outcomes[job_id] = CancelOutcome.MISSING.value
    if as_json:
        echo_json(outcomes)
    else:
        for job_id, outcome in outcomes.items():
            click.echo(f"{job_id}: {_SAID[outcome]}")
    if CancelOutcome.MISSING.value in outcomes.values():
        raise SystemExit(EXIT_NOT_FOUND)
    if CancelOutcome.FINISHED.value in outcomes.values():
        raise SystemExit(EXIT_WRONG_STATE)


@jobs.command(
    help="Send a message to a job; its body takes it with receive(TOPIC). PAYLOAD is JSON."
)
@click.argument("job_id")
@click.argument("topic")
@click.argument("payload")
@click.option("--key", help="Idempotency key: a message with the same key is sent once.")
@click.pass_context
def send(ctx: click.Context, job_id: str, topic: str, payload: str, key: str | None) -> None:
    try:
        value = json.loads(payload)
    except ValueError as exc:
        fail(f"PAYLOAD is not JSON: {exc}", EXIT_ERROR)
    try:
        sent = durable_of(ctx).send(job_id, topic, value, key=key)
    except JobNotFound as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except JobStateError as exc:
        fail(str(exc), EXIT_WRONG_STATE)
    click.echo(
        f"{job_id}: sent on {topic!r}"
        if sent
        else f"{job_id}: a message with key {key!r} was sent before; not sent again"
    )


_SAID = {
    "cancelled": "cancelled (it will not start)",
    "requested": "cancel requested (it stops at its next call)",
    "finished": "already finished, nothing done",
    "missing": "not found",
}
