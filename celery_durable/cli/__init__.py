"""`celery -A proj durable ...`: registered through the `celery.commands` entry point."""

from __future__ import annotations

import dataclasses
import json

import click

from ..errors import DurableError
from ..store.sql.migrations import MIGRATIONS
from .common import EXIT_ERROR, durable_of, echo_json, fail
from .dlq import dlq
from .jobs import jobs
from .jobs import show as show_job
from .queues import queues
from .schedules import schedules
from .web import web
from .worker import worker


class _Group(click.Group):
    """Any DurableError becomes one clear line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except DurableError as exc:
            fail(str(exc), EXIT_ERROR)


@click.group(
    name="durable",
    cls=_Group,
    help=(
        "celery-durable: migrations, jobs, queues, the dead-letter queue, recovery and retention."
    ),
)
@click.pass_context
def durable(ctx: click.Context) -> None:
    ctx.ensure_object(object)


@durable.command(help="Create or upgrade the celery-durable tables (safe to run twice).")
@click.option("--dry-run", is_flag=True, help="Only show the steps that would run.")
@click.pass_context
def migrate(ctx: click.Context, dry_run: bool) -> None:
    d = durable_of(ctx)
    url = d.storage.safe_url
    try:
        pending = d.pending_migrations()
        for version in pending:
            doc = (MIGRATIONS[version - 1].__doc__ or "").strip()
            click.echo(
                f"{url}: {'would apply' if dry_run else 'applying'} schema version {version}: {doc}"
            )
        if dry_run:
            if not pending:
                click.echo(f"{url}: schema is up to date")
            return
        applied = d.migrate()
    except DurableError as exc:
        fail(str(exc), EXIT_ERROR)
    if applied:
        click.echo(f"{url}: applied schema version(s) {', '.join(map(str, applied))}")
    else:
        click.echo(f"{url}: schema is up to date")


@durable.command(help="Run one recovery sweep now: republish jobs whose worker was lost.")
@click.option("--dry-run", is_flag=True, help="Only list the jobs a sweep would act on.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def recover(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    ids = durable_of(ctx).recover(dry_run=dry_run)
    if as_json:
        echo_json({"dry_run": dry_run, "jobs": ids})
        return
    verb = "would act on" if dry_run else "republished or ended"
    click.echo(f"{verb} {len(ids)} job(s)" + "".join(f"\n  {i}" for i in ids))


@durable.command(help="Delete finished jobs older than durable_retention now.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def retention(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    counts = durable_of(ctx).apply_retention(dry_run=dry_run)
    if as_json:
        echo_json({"dry_run": dry_run, "deleted": counts})
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        ", ".join(f"{verb} {n} {state}" for state, n in counts.items())
        or "retention is off for every state"
    )


@durable.command(help="The workers that wrote a heartbeat in the last day.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    found = durable_of(ctx).workers()
    if as_json:
        echo_json([dataclasses.asdict(w) for w in found])
        return
    if not found:
        click.echo("no workers have written a heartbeat")
        return
    click.echo(f"{'name':<40}{'state':<7}{'pid':>8}  {'last seen (UTC)':<20}{'sweeps':>8}  queues")
    for w in found:
        click.echo(
            f"{w.name[:39]:<40}{'alive' if w.alive else 'gone':<7}{w.pid:>8}  "
            f"{w.last_seen_at:%Y-%m-%d %H:%M:%S}{w.sweeps:>9}  {', '.join(w.queues)}"
        )


@durable.command(
    help="Tail what every worker does (jobs started, checkpoints, retries, "
    "outcomes); resumable with --since CURSOR."
)
@click.option("--since", help="An event's cursor (or an ISO time) to start after.")
@click.option(
    "--follow/--no-follow", default=True, show_default=True, help="Keep waiting for new events."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def events(ctx: click.Context, since: str | None, follow: bool, as_json: bool) -> None:
    for event in durable_of(ctx).events(since=since, follow=follow):
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "kind": event.kind,
                        "at": event.at.isoformat(),
                        "job_id": event.job_id,
                        "task": event.task,
                        "detail": event.detail,
                        "cursor": event.cursor,
                    }
                )
            )
        else:
            detail = " ".join(f"{k}={v}" for k, v in (event.detail or {}).items())
            click.echo(
                f"{event.at:%Y-%m-%d %H:%M:%S.%f}  {event.kind:<16}{event.job_id}"
                f"  {event.task or ''} {detail}".rstrip()
            )


durable.add_command(jobs)
durable.add_command(show_job, name="show")  # the short form of `jobs show`
durable.add_command(schedules)
durable.add_command(worker)
durable.add_command(dlq)
durable.add_command(queues)
durable.add_command(web)
