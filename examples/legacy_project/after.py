"""The same project after moving ONE task to celery-durable.

What changed, and nothing else did:
1. ``Durable(app)`` next to the app, with ``durable_database_url`` (here from the
   environment; the default is a SQLite file) and ``celery -A ... durable migrate`` once.
2. ``fulfil`` became ``@durable.task`` and calls the legacy tasks through ``call()``:
   each call is a checkpoint, so a crash after ``charge`` never charges again.
3. The legacy tasks, ``report`` and ``beat_schedule`` are untouched and still run as
   plain Celery tasks, side by side with the durable one, on the same workers.
"""

from __future__ import annotations

import os

from celery import Celery

from celery_durable import Durable, call

app = Celery(
    "legacy",
    broker=os.environ.get("LEGACY_BROKER", "redis://localhost:6379/0"),
    backend=os.environ.get("LEGACY_RESULTS"),
)  # your result backend, if any
app.conf.durable_database_url = os.environ.get("LEGACY_STORE", "sqlite:///celery-durable.sqlite3")
app.conf.beat_schedule = {  # stays in beat_schedule until you move it (see the README)
    "nightly-report": {"task": "examples.legacy_project.after.report", "schedule": 24 * 3600},
}
durable = Durable(app)


@app.task
def charge(order_id: int, amount: int) -> str:
    return f"receipt-{order_id}-{amount}"


@app.task
def reserve(order_id: int) -> bool:
    return True


@app.task
def ship(order_id: int, receipt: str) -> str:
    return f"shipped {order_id} ({receipt})"


@durable.task(retries=3)  # was: @app.task(bind=True, acks_late=True, ...)
def fulfil(order_id: int, amount: int) -> str:
    receipt = call(charge, order_id, amount)  # checkpointed; retried on its own
    call(reserve, order_id)
    return str(call(ship, order_id, receipt))


@app.task
def report() -> str:
    return "report"
