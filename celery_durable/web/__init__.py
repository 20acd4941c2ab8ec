"""The dashboard: ``celery -A proj durable web``, or ``create_app(durable)`` mounted in a
Starlette, FastAPI or Django ASGI project (needs the ``web`` extra)."""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the celery-durable dashboard needs the web extra: pip install 'celery-durable[web]'"
    ) from exc

from .application import create_app
from .security import Auth, Operator

__all__ = ["Auth", "Operator", "create_app"]
