"""`celery -A proj durable dlq list|show|requeue|purge`: the dead-letter queue."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import click

from ..errors import JobNotFound
from ..operations.views import JobSummary
from .common import EXIT_NOT_FOUND, WHEN, durable_of, echo_json, fail, utc


@click.group(help="Jobs whose retries ran out with on_exhausted='dead_letter'.")
def dlq() -> None:
    pass


@dlq.command(name="list", help="List dead letters, newest first.")
@click.option("--task", help="Only this task name.")
@click.option("--since", type=WHEN, help="Died at or after this time (UTC).")
@click.option("--until", type=WHEN, help="Died before this time (UTC).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_(
    ctx: click.Context,
    task: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    letters = durable_of(ctx).dead_letters(
        task=task, since=utc(since), until=utc(until), limit=limit, offset=offset
    )
    if as_json:
        echo_json([dataclasses.asdict(letter) for letter in letters])
        return
    if not letters:
        click.echo("no dead letters")
        return
    click.echo(f"{'id':<38}{'task':<28}{'failures':>9}  {'died (UTC)':<20}error")
    for letter in letters:
        click.echo(_row(letter))


def _row(letter: JobSummary) -> str:
    error = letter.error or {}
    died = f"{letter.finished_at:%Y-%m-%d %H:%M:%S}" if letter.finished_at else "-"
    reason = f"{error.get('type', '?')}: {error.get('message', '')}"
    return f"{letter.id:<38}{letter.task[:27]:<28}{letter.failures:>9}  {died:<20}{reason[:80]}"


@dlq.command(help="Show a dead letter: its arguments, every failed execution, its calls.")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def show(ctx: click.Context, job_id: str, as_json: bool) -> None:
    try:
        letter = durable_of(ctx).dead_letter(job_id)
    except JobNotFound:
        fail(f"no dead letter has id {job_id!r}", EXIT_NOT_FOUND)
    if as_json:
        echo_json(dataclasses.asdict(letter))
        return
    click.echo(letter.timeline())
    click.echo(f"  args: {letter.args!r}  kwargs: {letter.kwargs!r}")
    if letter.errors and letter.errors[-1].error.get("traceback"):
        click.echo("  last traceback:\n" + letter.errors[-1].error["traceback"].rstrip())


@dlq.command(
    help="Run dead letters again under the same id. Calls that succeeded before "
    "the first failure replay from their checkpoints unless --from-scratch."
)
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--from-scratch", is_flag=True, help="Drop every checkpoint first.")
@click.pass_context
def requeue(ctx: click.Context, job_ids: tuple[str, ...], from_scratch: bool) -> None:
    done = durable_of(ctx).requeue(job_ids, from_scratch=from_scratch)
    for job_id in done:
        click.echo(f"requeued {job_id}")
    missing = [job_id for job_id in job_ids if job_id not in done]
    if missing:
        fail(f"not dead letters (nothing done): {', '.join(missing)}", EXIT_NOT_FOUND)


@dlq.command(help="Delete dead letters for good: the given ids, or all that match.")
@click.argument("job_ids", nargs=-1)
@click.option("--task", help="Every dead letter of this task.")
@click.option("--before", type=WHEN, help="Every dead letter that died before this (UTC).")
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(
    ctx: click.Context,
    job_ids: tuple[str, ...],
    task: str | None,
    before: datetime | None,
    everything: bool,
    yes: bool,
) -> None:
    if not (job_ids or task or before or everything):
        raise click.UsageError("give job ids, --task, --before or --all")
    if job_ids and (task or before or everything):
        raise click.UsageError("give either job ids or filters, not both")
    what = (
        ", ".join(job_ids)
        if job_ids
        else "every dead letter"
        + (f" of {task}" if task else "")
        + (f" that died before {before}" if before else "")
    )
    if not yes:
        click.confirm(f"Delete {what}?", abort=True)
    deleted = durable_of(ctx).purge_dead_letters(job_ids or None, task=task, before=utc(before))
    click.echo(f"deleted {deleted} dead letter(s)")
