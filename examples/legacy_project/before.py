"""A typical Celery project before celery-durable: one task does three things.

If the worker dies after ``charge`` and before ``ship``, Celery (acks_late or not) either
loses the whole task or runs it again from the top: the card is charged twice. The usual
patches (``.get()`` inside a task, a chain with manual state, idempotency tables) each
have their own failure modes.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("legacy", broker=os.environ.get("LEGACY_BROKER", "redis://localhost:6379/0"))
app.conf.beat_schedule = {
    "nightly-report": {"task": "examples.legacy_project.before.report", "schedule": 24 * 3600},
}


@app.task
def charge(order_id: int, amount: int) -> str:
    return f"receipt-{order_id}-{amount}"


@app.task
def reserve(order_id: int) -> bool:
    return True


@app.task
def ship(order_id: int, receipt: str) -> str:
    return f"shipped {order_id} ({receipt})"


@app.task(bind=True, acks_late=True, max_retries=3)
def fulfil(self, order_id: int, amount: int) -> str:  # type: ignore[no-untyped-def]
    receipt = charge(order_id, amount)  # runs inline: no checkpoint
    reserve(order_id)
    return ship(order_id, receipt)  # a crash here re-charges on redelivery


@app.task
def report() -> str:
    return "report"
