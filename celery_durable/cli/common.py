"""What every `celery durable` command shares: the app's Durable, output, exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from ..app import Durable

EXIT_ERROR = 1
EXIT_NOT_FOUND = 2


def durable_of(ctx: click.Context) -> Durable:
    return Durable.of(ctx.find_root().obj.app)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=_jsonable, indent=2))


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else repr(value)
