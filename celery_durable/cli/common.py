"""What every `celery durable` command shares: the app's Durable, output, exit codes."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any, NoReturn

import click

from ..app import Durable

# Exit codes scripts can rely on (click's own usage errors are 2 as well).
EXIT_ERROR = 1
EXIT_NOT_FOUND = 2
EXIT_WRONG_STATE = 3

WHEN = click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"])


def utc(value: datetime | None) -> datetime | None:
    """Command-line times without a zone are UTC, like every time the tables hold."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def durable_of(ctx: click.Context) -> Durable:
    return Durable.of(ctx.find_root().obj.app)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=_jsonable, indent=2))


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else repr(value)
