"""`celery -A proj durable ...`: registered through the `celery.commands` entry point."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import click

from .app import Durable
from .errors import DurableError, JobNotFound

EXIT_NOT_FOUND = 2
EXIT_ERROR = 1


@click.group(name="durable", help="celery-durable: migrations and job inspection.")
@click.pass_context
def durable(ctx: click.Context) -> None:
    ctx.ensure_object(object)


def _durable(ctx: click.Context) -> Durable:
    return Durable.of(ctx.find_root().obj.app)


@durable.command(help="Create or upgrade the celery-durable tables (safe to run twice).")
@click.pass_context
def migrate(ctx: click.Context) -> None:
    d = _durable(ctx)
    url = getattr(d.storage, "safe_url", type(d.storage).__name__)
    try:
        applied = d.migrate()
    except DurableError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
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
        view = _durable(ctx).get_job(job_id)
    except JobNotFound as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_NOT_FOUND)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(view), default=_jsonable, indent=2))
    else:
        click.echo(view.timeline())


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else repr(value)
