"""The dashboard mounted inside an existing ASGI app (Starlette here; FastAPI's
``app.mount`` is the same call), under ``/ops``, behind the host app's own login.

Run it on the embedded default (SQLite, no services)::

    pip install 'celery-durable[web]'
    uvicorn examples.dashboard.host:app --port 8000
    # http://127.0.0.1:8000/ops/jobs with the header X-User: alice (or viewer: read-only)

A real app would read the user from its session; the header keeps the example short.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from celery_durable import Durable
from celery_durable.web import Operator, create_app

HERE = Path(os.environ.get("DASHBOARD_DIR", "dashboard-run"))
HERE.mkdir(exist_ok=True)

celery_app = Celery("host", broker=f"sqla+sqlite:///{HERE}/broker.sqlite3")
celery_app.conf.durable_database_url = f"sqlite:///{HERE}/store.sqlite3"
durable = Durable(celery_app)
durable.migrate()

OPERATORS = {"alice": True, "viewer": False}  # who may act


def who(conn: HTTPConnection) -> Operator | None:
    """The host app decides: None refuses (401), can_act=False sees but cannot change."""
    name = conn.headers.get("x-user", "")
    return Operator(name, can_act=OPERATORS[name]) if name in OPERATORS else None


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("the host app; its operators use /ops/")


app = Starlette(
    routes=[
        Route("/", home),
        Mount("/ops", app=create_app(durable, auth=who, secret=os.urandom(32))),
    ]
)
