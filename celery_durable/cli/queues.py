"""`celery -A proj durable queues list|pause|resume`: paused queues and tasks."""

from __future__ import annotations

import dataclasses

import click

from .common import EXIT_WRONG_STATE, durable_of, echo_json, fail


@click.group(help="Queues as SQL sees them; pause and resume a queue or a task.")
def queues() -> None:
    pass


@queues.command(name="list", help="Queues with unfinished jobs or a pause, and paused tasks.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    d = durable_of(ctx)
    found, paused_tasks = d.queues(), [p for p in d.paused() if p.kind == "task"]
    if as_json:
        echo_json(
            {
                "queues": [dataclasses.asdict(q) for q in found],
                "paused_tasks": [dataclasses.asdict(p) for p in paused_tasks],
            }
        )
        return
    if not found:
        click.echo("no queue has unfinished jobs or a pause")
    else:
        click.echo(
            f"{'queue':<32}{'state':<8}{'pending':>9}{'running':>9}{'retrying':>10}"
            f"{'suspended':>11}"
        )
    for q in found:
        click.echo(
            f"{q.name[:31]:<32}{'paused' if q.paused else 'active':<8}{q.pending:>9}"
            f"{q.running:>9}{q.retrying:>10}{q.suspended:>11}"
        )
    for p in paused_tasks:
        click.echo(f"task {p.name} paused since {p.paused_at:%Y-%m-%d %H:%M:%S} UTC")


def _which(name: str, task: bool) -> dict[str, str]:
    return {"task": name} if task else {"queue": name}


@queues.command(help="Pause a queue (or with --task, a task): its jobs wait in SQL.")
@click.argument("name")
@click.option("--task", "is_task", is_flag=True, help="NAME is a task, not a queue.")
@click.pass_context
def pause(ctx: click.Context, name: str, is_task: bool) -> None:
    what = f"{'task' if is_task else 'queue'} {name}"
    if not durable_of(ctx).pause(**_which(name, is_task)):
        fail(f"{what} is paused already", EXIT_WRONG_STATE)
    click.echo(f"{what} paused: its jobs are not started until it is resumed")


@queues.command(help="Resume a paused queue (or --task): its held jobs are published.")
@click.argument("name")
@click.option("--task", "is_task", is_flag=True, help="NAME is a task, not a queue.")
@click.pass_context
def resume(ctx: click.Context, name: str, is_task: bool) -> None:
    what = f"{'task' if is_task else 'queue'} {name}"
    published = durable_of(ctx).resume(**_which(name, is_task))
    if published is None:
        fail(f"{what} is not paused", EXIT_WRONG_STATE)
    click.echo(f"{what} resumed; {published} held job(s) published, oldest first")
