"""`celery -A proj durable web`: the dashboard (the ``web`` extra)."""

from __future__ import annotations

import click

from .common import EXIT_ERROR, durable_of, fail


@click.command(help="Serve the dashboard (default http://127.0.0.1:5556/).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=5556, show_default=True)
@click.option(
    "--read-only",
    is_flag=True,
    default=None,
    help="Show everything, change nothing (default: durable_web_read_only).",
)
@click.pass_context
def web(ctx: click.Context, host: str, port: int, read_only: bool | None) -> None:
    try:
        from ..web.server import serve
    except ImportError as exc:
        fail(str(exc), EXIT_ERROR)
    serve(durable_of(ctx), host, port, read_only=read_only or None)
