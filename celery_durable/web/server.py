"""Serve the dashboard with uvicorn: what `celery -A proj durable web` runs."""

from __future__ import annotations

import logging

from ..app import Durable
from .application import create_app
from .security import check_bind

logger = logging.getLogger(__name__)
DEFAULT_PORT = 5556
"""Not 5555: Flower has that one."""


def serve(
    durable: Durable,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    read_only: bool | None = None,
) -> None:
    """Run until interrupted; refuses a non-loopback ``host`` without credentials."""
    check_bind(host, durable.settings, None)
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "serving the dashboard needs uvicorn: pip install 'celery-durable[web]'"
        ) from None
    app = create_app(durable, read_only=read_only)
    shown = f"[{host}]" if ":" in host else host
    logger.info("celery-durable dashboard on http://%s:%d/", shown, port)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
