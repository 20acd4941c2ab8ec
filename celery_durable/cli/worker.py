"""`celery -A proj durable worker --queue critical:20 --queue emails:10 [worker options]`."""

from __future__ import annotations

import sys

import click

from ..errors import ConfigurationError
from ..worker.supervisor import Supervisor, parse_queues, worker_command

# The `celery` options a worker per queue must get again (`-A`, `-b`, ...).
_ROOT_OPTIONS = {
    "app": "-A",
    "broker": "-b",
    "result_backend": "--result-backend",
    "loader": "--loader",
    "config": "--config",
    "workdir": "--workdir",
}


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    help="Start and supervise one `celery worker` per queue, each with its own "
    "concurrency. Options after the queues (e.g. -P threads, "
    "--loglevel=INFO) go to every worker.",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    required=True,
    metavar="NAME:N",
    help="A queue and its concurrency; repeatable.",
)
@click.argument("worker_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def worker(ctx: click.Context, queues: tuple[str, ...], worker_args: tuple[str, ...]) -> None:
    try:
        specs = parse_queues(queues)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--queue") from None
    root = ctx.find_root().params
    celery_args = [
        part
        for name, flag in _ROOT_OPTIONS.items()
        if root.get(name)
        for part in (flag, str(root[name]))
    ]
    commands = {spec.name: worker_command(celery_args, spec, worker_args) for spec in specs}
    sys.exit(Supervisor(commands, say=lambda line: click.echo(line, err=True)).run())
