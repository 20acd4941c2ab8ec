"""`celery -A proj durable schedules list|show|add|pause|resume|remove|trigger`."""

from __future__ import annotations

import dataclasses
import json

import click

from ..errors import ConfigurationError, ScheduleNotFound
from ..scheduling.kinds import Schedule, cron, every
from ..store.records import ScheduleRecord
from .common import EXIT_NOT_FOUND, EXIT_WRONG_STATE, durable_of, echo_json, fail


@click.group(help="The database beat scheduler's schedules (celery beat -S durable).")
def schedules() -> None:
    pass


@schedules.command(name="list", help="Every schedule, with its next tick.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    records = durable_of(ctx).schedules.all()
    if as_json:
        echo_json([dataclasses.asdict(r) for r in records])
        return
    if not records:
        click.echo("no schedules")
        return
    click.echo(f"{'name':<24}{'task':<26}{'when':<42}{'state':<9}next (UTC)")
    for r in records:
        upcoming = f"{r.next_run_at:%Y-%m-%d %H:%M:%S}" if r.next_run_at else "-"
        click.echo(f"{r.name[:23]:<24}{r.task[:25]:<26}{_when(r)[:41]:<42}{_state(r):<9}{upcoming}")


def _when(record: ScheduleRecord) -> str:
    spec = json.loads(record.spec)
    if "every" in spec:
        return f"every {spec['every']:g}s"
    return f"cron {spec['cron']} {record.timezone}"


def _state(record: ScheduleRecord) -> str:
    return "disabled" if not record.enabled else "paused" if record.paused else "active"


@schedules.command(help="A schedule and its latest runs (fired or skipped, lateness).")
@click.argument("name")
@click.option("--runs", "limit", type=click.IntRange(0, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def show(ctx: click.Context, name: str, limit: int, as_json: bool) -> None:
    api = durable_of(ctx).schedules
    try:
        record = api.get(name)
    except ScheduleNotFound:
        fail(f"no schedule named {name!r}", EXIT_NOT_FOUND)
    runs = api.runs(name, limit)
    if as_json:
        echo_json(
            {"schedule": dataclasses.asdict(record), "runs": [dataclasses.asdict(r) for r in runs]}
        )
        return
    click.echo(
        f"{record.name}: {record.task} {_when(record)} ({_state(record)}, "
        f"source {record.source}, missed={record.missed}"
        f"{', unique' if record.unique else ''})"
    )
    click.echo(f"  next: {record.next_run_at.isoformat() if record.next_run_at else '-'}")
    for run in runs:
        click.echo(
            f"  {run.nominal_at:%Y-%m-%d %H:%M:%S}  {run.outcome:<8}"
            f"{run.lateness:>8.3f}s  {run.job_id or run.reason or ''}"
        )


@schedules.command(help="Add a schedule at runtime: --every SECONDS or --cron EXPR.")
@click.argument("name")
@click.argument("task")
@click.option("--every", "seconds", type=float, help="Interval in seconds.")
@click.option("--cron", "expression", help='A cron expression, e.g. "0 9 * * MON-FRI".')
@click.option("--timezone", help="IANA timezone for --cron (default: the app's).")
@click.option("--args", "args_json", default="[]", help="JSON list of arguments.")
@click.option("--kwargs", "kwargs_json", default="{}", help="JSON object of keyword args.")
@click.option("--queue", help="Queue to send each run to.")
@click.option("--unique", is_flag=True, help="Skip a tick while the last run is active.")
@click.option(
    "--missed", type=click.Choice(["once", "skip", "all"]), default="once", show_default=True
)
@click.pass_context
def add(
    ctx: click.Context,
    name: str,
    task: str,
    seconds: float | None,
    expression: str | None,
    timezone: str | None,
    args_json: str,
    kwargs_json: str,
    queue: str | None,
    unique: bool,
    missed: str,
) -> None:
    if (seconds is None) == (expression is None):
        raise click.UsageError("give exactly one of --every and --cron")
    try:
        when: Schedule = (
            every(seconds) if seconds is not None else cron(expression or "", timezone=timezone)
        )
        args, kwargs = json.loads(args_json), json.loads(kwargs_json)
    except (ConfigurationError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    try:
        record = durable_of(ctx).schedules.add(
            name,
            task,
            when,
            args=args,
            kwargs=kwargs,
            unique=unique,
            missed=missed,
            **({"queue": queue} if queue else {}),
        )
    except ConfigurationError as exc:
        fail(str(exc), EXIT_WRONG_STATE)
    click.echo(f"added {record.name}; next tick {record.next_run_at}")


def _by_name(verb: str, help_text: str) -> click.Command:
    @click.command(name=verb, help=help_text)
    @click.argument("name")
    @click.pass_context
    def command(ctx: click.Context, name: str) -> None:
        api = durable_of(ctx).schedules
        try:
            outcome = getattr(api, "delete" if verb == "remove" else verb)(name)
        except ScheduleNotFound:
            fail(f"no schedule named {name!r}", EXIT_NOT_FOUND)
        except ConfigurationError as exc:
            fail(str(exc), EXIT_WRONG_STATE)
        suffix = f" (job {outcome})" if verb == "trigger" else ""
        click.echo(f"{verb.rstrip('e')}ed {name}{suffix}")

    return command


for _verb, _help in (
    ("pause", "Stop a schedule ticking (its history stays)."),
    ("resume", "Tick again from now (ticks missed while paused are not run)."),
    ("remove", "Delete a schedule and its run history."),
    ("trigger", "Run the schedule's task once, now."),
):
    schedules.add_command(_by_name(_verb, _help))
