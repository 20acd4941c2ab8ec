"""`celery -A proj durable ...`: registered through the `celery.commands` entry point."""

from __future__ import annotations

import dataclasses

import click

from ..errors import DurableError, JobNotFound
from .common import EXIT_ERROR, EXIT_NOT_FOUND, durable_of, echo_json, fail
from .dlq import dlq


@click.group(name="durable",
             help="celery-durable: migrations, job inspection and the dead-letter queue.")
@click.pass_context
def durable(ctx: click.Context) -> None:
    ctx.ensure_object(object)


@durable.command(help="Create or upgrade the celery-durable tables (safe to run twice).")
@click.pass_context
def migrate(ctx: click.Context) -> None:
    d = durable_of(ctx)
    url = getattr(d.storage, "safe_url", type(d.storage).__name__)
    try:
        applied = d.migrate()
    except DurableError as exc:
        fail(str(exc), EXIT_ERROR)
    if applied:
        click.echo(f"{url}: applied schema version(s) {', '.join(map(str, applied))}")
    else:
        click.echo(f"{url}: schema is up to date")


@durable.command(help="Show a job and its call timeline.")
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
    else:
        click.echo(view.timeline())


durable.add_command(dlq)
